"""report.py: the subject chart draws the user's Chinese subject names, or numbers them, never empty boxes."""

import io
import logging
import warnings

import pandas as pd
import pytest

from mcqtune.cli import compare as compare_cli
from mcqtune.reporting import report
PER_SUBJECT = {"历史": 0.5, "高中物理": 0.75, "计算机科学": 0.25}


def save_and_collect_glyph_warnings(fig) -> list[str]:
    """Render the figure; matplotlib warns once per character its font has no glyph for (an empty box)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(io.BytesIO(), format="png")
    report._pyplot().close(fig)
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def tick_texts(fig) -> list[str]:
    return [tick.get_text() for tick in fig.axes[0].get_yticklabels()]


def labelled_frame(subject_header: str = "subject"):
    frame = pd.DataFrame({
        "ID": ["1", "2", "3", "4"], "question": ["q1", "q2", "q3", "q4"],
        "option_A": ["a"] * 4, "option_B": ["b"] * 4, "option_C": ["c"] * 4, "option_D": ["d"] * 4,
        "answer": ["A", "B", "C", "D"], subject_header: ["历史", "历史", "高中物理", "计算机科学"]})
    predictions = pd.DataFrame({"ID": frame["ID"], "answer": ["A", "C", "C", "A"]})
    return frame, predictions


RUN = {"mode": "score", "test_file": "test.csv", "model_path": "m", "base_model": "b", "precision": "float32",
       "startup_seconds": 1.0, "batch_size": 4, "processes": 1}


def test_ascii_names_keep_the_default_font():
    labels = report.label_subjects(["history", "physics"])
    assert labels.font is None and not labels.numbered and labels.labels["history"] == "history"


def test_without_a_cjk_font_the_bars_are_numbered_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(report, "candidate_fonts", lambda: [])
    with caplog.at_level(logging.WARNING, logger="report"):
        labels = report.label_subjects(list(PER_SUBJECT))
    assert labels.numbered and labels.font is None
    assert labels.labels == {"历史": "subject 1", "计算机科学": "subject 2", "高中物理": "subject 3"}  # name order
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1 and "pip install" in logged[0].getMessage()

    fig = report.draw_subject_accuracy(PER_SUBJECT, labels)
    assert sorted(tick_texts(fig)) == ["subject 1", "subject 2", "subject 3"]
    assert save_and_collect_glyph_warnings(fig) == []


def test_report_md_maps_the_numbers_to_the_names_when_no_font_draws_them(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(report, "candidate_fonts", lambda: [])
    frame, predictions = labelled_frame()
    result = report.inference_report(frame, predictions, RUN, seconds=1.0, answered_now=4)
    with caplog.at_level(logging.WARNING, logger="report"):
        report.write_inference_report(result, predictions, frame, tmp_path)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| subject 1 | 历史 | 50.00% |" in markdown and "| subject 3 | 高中物理 | 100.00% |" in markdown
    assert (tmp_path / "accuracy_by_subject.png").is_file()


def test_a_cjk_font_when_installed_draws_the_names_themselves():
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    font = report.find_font("历史")
    if font is None:
        pytest.skip(f"no CJK font on this machine ({report.FONT_HINT})")
    charmap = FT2Font(font.path).get_charmap()
    assert ord("历") in charmap and ord("史") in charmap
    by_family = font_manager.findfont(font_manager.FontProperties(family=font.family), fallback_to_default=False)
    assert report.font_covers(by_family, "历史")  # the family name matplotlib resolves has the glyphs too

    labels = report.label_subjects(list(PER_SUBJECT))
    assert not labels.numbered and labels.font is not None
    fig = report.draw_subject_accuracy(PER_SUBJECT, labels)
    assert sorted(tick_texts(fig)) == sorted(PER_SUBJECT)
    assert {tick.get_fontproperties().get_file() for tick in fig.axes[0].get_yticklabels()} == {labels.font.path}
    assert save_and_collect_glyph_warnings(fig) == []


def test_the_default_chart_never_draws_empty_boxes(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report.plot_subject_accuracy(PER_SUBJECT, tmp_path / "subjects.png")
    assert not [w for w in caught if "missing from font" in str(w.message)]


@pytest.mark.parametrize("header", ["subject", "Subject", "SUBJECT", " Subject "])
def test_accuracy_by_subject_reads_any_spelling_of_the_subject_header(header):
    frame, predictions = labelled_frame(header)
    result = report.inference_report(frame, predictions, RUN, seconds=1.0, answered_now=4)
    assert result["accuracy_by_subject"] == {"历史": 0.5, "计算机科学": 0.0, "高中物理": 1.0}


def test_compare_puts_runs_of_one_labelled_file_side_by_side(tmp_path, capsys):
    import json

    import pandas as pd

    from mcqtune import errors
    from tests.helpers import random_probs, write_member

    truth = "ABCDAB"
    direct = write_member(tmp_path / "direct_run", random_probs(1), truth=truth, subject=["s1"] * 3 + ["s2"] * 3)
    reason = write_member(tmp_path / "reason_run", random_probs(2), truth=truth)
    for folder, accuracy, extra in ((direct, 0.5, {}), (reason, 0.6667, {"mode": "reason", "seconds": 12.0,
                                                                           "reasoning": {"generated_tokens": 600}})):
        report = json.loads((folder / "report.json").read_text())
        (folder / "report.json").write_text(json.dumps({**report, "mode": "score", "accuracy": accuracy,
                                                        "seconds": 3.0, "accuracy_by_subject": {"s1": 1.0}, **extra}))
    predictions = (reason / "predictions.csv")
    frame = pd.read_csv(predictions, dtype=str)
    frame["source"] = ["reason"] * 4 + ["reason_closed"] * 2
    frame.to_csv(predictions, index=False)
    out = tmp_path / "cmp.md"
    assert errors.run_cli(compare_cli.main, [str(direct), str(reason), "--output_file", str(out)]) == 0
    rows = json.loads((tmp_path / "cmp.json").read_text())["runs"]
    assert [r["mode"] for r in rows] == ["score", "reason"] and rows[1]["generated_tokens_per_question"] == 100.0
    assert rows[1]["seconds_per_question"] == 2.0 and rows[1]["fallback_share"] == round(2 / 6, 4)
    assert rows[0]["fallback_share"] == 0 and "| s1 | 100.00% | 100.00% |" in out.read_text()
    other = write_member(tmp_path / "other_run", random_probs(3), truth=truth, test_file="other.csv")
    assert errors.run_cli(compare_cli.main, [str(direct), str(other)]) == 1  # another labelled file: refused
    assert "answered different test files" in capsys.readouterr().err
    (other / "report.json").unlink()  # a bare predictions.csv: refused, naming no option compare does not have
    assert errors.run_cli(compare_cli.main, [str(direct), str(other)]) == 1
    err = capsys.readouterr().err
    assert "has no report.json beside it" in err and "--allow_bare_predictions" not in err


def test_compare_writes_over_its_own_comparison_only(tmp_path, capsys):
    """A comparison replaces the comparison of that name; never another run's report (its provenance record) nor a
    file of the user's."""
    import json

    from mcqtune import errors
    from tests.helpers import random_probs, write_member

    truth = "ABCDAB"
    runs = []
    for k in range(3):
        folder = write_member(tmp_path / f"run{k}", random_probs(k), truth=truth)
        report = json.loads((folder / "report.json").read_text())
        (folder / "report.json").write_text(json.dumps({**report, "mode": "score", "accuracy": 0.5}))
        runs.append(folder)
    out = tmp_path / "cmp.md"
    assert errors.run_cli(compare_cli.main, [str(runs[0]), str(runs[1]), "--output_file", str(out)]) == 0
    assert errors.run_cli(compare_cli.main, [str(runs[0]), str(runs[1]), "--output_file", str(out)]) == 0  # again
    third_report = (runs[2] / "report.json").read_bytes()
    (runs[2] / "report.md").write_text("run 2's report")
    assert errors.run_cli(compare_cli.main, [str(runs[0]), str(runs[1]), "--output_file",
                                         str(runs[2] / "report.md")]) == 1
    assert "already exists and was not written by" in capsys.readouterr().err
    assert (runs[2] / "report.json").read_bytes() == third_report and (runs[2] / "report.md").read_text() == \
        "run 2's report"
    (runs[2] / "report.md").unlink()  # the .md free, but the .json beside it is the run's record
    assert errors.run_cli(compare_cli.main, [str(runs[0]), str(runs[1]), "--output_file",
                                         str(runs[2] / "report.md")]) == 1
    assert f"{runs[2] / 'report.json'} already exists" in capsys.readouterr().err
    assert (runs[2] / "report.json").read_bytes() == third_report and not (runs[2] / "report.md").exists()
    mine = tmp_path / "README.md"
    mine.write_text("my notes")
    assert errors.run_cli(compare_cli.main, [str(runs[0]), str(runs[1]), "--output_file", str(mine)]) == 1
    assert mine.read_text() == "my notes" and not (tmp_path / "README.json").exists()


def test_a_votes_fallback_share_is_its_share_of_closed_replies():
    import pandas as pd

    from mcqtune.reporting.compare import fallback_share

    voted = pd.DataFrame({"source": ["vote", "vote"]})
    assert fallback_share(voted, {"replies": 8, "closed_and_scored_replies": 2}) == 0.25
    assert fallback_share(pd.DataFrame({"source": ["reason", "reason_closed"]}), None) == 0.5


def test_a_partly_labelled_file_reports_accuracy_on_its_labelled_rows_only():
    frame, predictions = labelled_frame()
    frame.loc[[1, 2], "answer"] = ""  # labelled: row 0 (answered right) and row 3 (answered wrong)
    result = report.inference_report(frame, predictions, RUN, seconds=1.0, answered_now=4)
    assert "accuracy" not in result and result["accuracy_on_labelled_rows"] == {"rows": 2, "accuracy": 0.5}
    assert "- **accuracy on the 2 labelled rows: 50.00%** (the others have no answer)" in report.render_markdown(result)
    frame["answer"] = ""
    assert "accuracy_on_labelled_rows" not in report.inference_report(frame, predictions, RUN, 1.0, 4)


def test_compare_refuses_a_run_of_a_partly_labelled_file_naming_how_much_was_labelled(tmp_path):
    import json

    from mcqtune.errors import UserError
    from mcqtune.reporting.compare import describe_run

    (tmp_path / "predictions.csv").write_text("ID,answer\n1,A\n2,B\n")
    (tmp_path / "report.json").write_text(json.dumps({"rows": 2, "accuracy_on_labelled_rows": {"rows": 1,
                                                                                               "accuracy": 1.0}}))
    with pytest.raises(UserError, match="labelled on 1 of 2 rows; compare runs of a file with an answer on every row"):
        describe_run(tmp_path)
