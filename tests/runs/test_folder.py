"""runs/folder.py: one run per folder (the lock), earlier outputs set aside, files written whole."""

import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from mcqtune.runs.folder import FolderInUse, RunLock, lock_run_folder, set_aside

HOLD_LOCK = """
import time
from mcqtune.runs.folder import RunLock
lock = RunLock({folder!r}).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_run_on_the_same_folder_stops_and_names_the_holder(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(FolderInUse, match=rf"in use by another run \(pid {os.getpid()} on .*another --output_dir"):
            lock_run_folder(tmp_path)
    with lock_run_folder(tmp_path):  # released at the end of the first run
        pass


def test_the_lock_of_a_killed_run_is_free_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK.format(folder=str(tmp_path))], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(FolderInUse, match=f"pid {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    RunLock(tmp_path).acquire().release()  # no stale lock after kill -9


def test_set_aside_moves_earlier_outputs_into_one_new_folder_and_never_overwrites(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "w.safetensors").write_text("old")
    (tmp_path / "summary.json").write_text("{}")
    first = set_aside(tmp_path, ["adapter", "summary.json", "absent.png"], "test")
    assert sorted(p.name for p in first.iterdir()) == ["adapter", "summary.json"]
    assert not (tmp_path / "adapter").exists()
    (tmp_path / "summary.json").write_text("{2}")
    second = set_aside(tmp_path, ["summary.json"], "test")
    assert second != first and (second / "summary.json").read_text() == "{2}"
    assert (first / "summary.json").read_text() == "{}"
    assert set_aside(tmp_path, ["nothing"], "test") is None


