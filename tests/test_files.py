"""files.py: every output is written whole or not at all."""

import json
import os

import pytest

from mcqtune.files import save_figure_atomic, write_atomic


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "submission.csv"
    target.write_text("ID,answer\n1,A\n")

    def fail(source, target):  # as os.replace fails: naming the temporary file and the target
        raise OSError(28, "No space left on device", str(source), None, str(target))

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError) as caught:
        write_atomic(target, "ID,answer\n1,B\n")
    assert target.read_text() == "ID,answer\n1,A\n"
    assert caught.value.errno == 28 and caught.value.filename == str(target)  # the one-line error names the file
    monkeypatch.undo()

    def full(descriptor):  # as a full disk fails a flush: naming no file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        write_atomic(target, "ID,answer\n1,B\n")
    assert caught.value.filename == str(target) and target.read_text() == "ID,answer\n1,A\n"
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]  # no temporary file left behind


def test_text_keeps_its_newlines_and_a_missing_folder_is_made(tmp_path):
    target = tmp_path / "deep" / "report.md"
    write_atomic(target, "a\r\nb\n")
    assert target.read_bytes() == b"a\r\nb\n"
    write_atomic(tmp_path / "rows.jsonl", '{"q": "问"}\n')
    assert json.loads((tmp_path / "rows.jsonl").read_text(encoding="utf-8")) == {"q": "问"}


def test_a_figure_is_saved_in_the_format_its_name_gives(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib import pyplot

    fig = pyplot.figure()
    save_figure_atomic(fig, tmp_path / "curves.png")
    save_figure_atomic(fig, tmp_path / "curves.svg")
    pyplot.close(fig)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "curves.svg").read_bytes()[:400]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "curves.svg"]
