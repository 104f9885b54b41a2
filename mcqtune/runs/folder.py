"""One run per folder: an exclusive lock held for the whole run, earlier outputs set aside, files written whole.

* ``RunLock`` — ``fcntl.flock`` on ``<folder>/.mcq-run.lock``. The kernel releases it when the process ends,
  however it ends (``kill -9`` too), so a lock is never stale; a second run on the same folder stops at once
  with one line naming the holder.
* ``set_aside`` — a fresh run moves what an earlier run left under the names it will write (adapter, summary,
  submission, report ...) into ``<folder>/previous-<time>/`` first: a run that fails never leaves another
  run's model or answers under its own name, and nothing is deleted.
Files are written whole through mcqtune/files.py.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

from mcqtune.errors import UserError

logger = logging.getLogger(__name__)

LOCK_NAME = ".mcq-run.lock"


class FolderInUse(UserError):
    """Another run holds the folder's lock."""


class RunLock:
    """Exclusive lock on a run folder for the lifetime of the ``with`` block (or until ``release``)."""

    def __init__(self, folder: str | Path, name: str = LOCK_NAME, what: str | Path | None = None):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = str(what or folder)  # what the message says is in use
        self._handle = None

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FolderInUse(f"{self.what} is in use by another run ({holder}); wait for it to finish, or give "
                              "this run another --output_dir / --output_file") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                     f"{' '.join(sys.argv)[:300]}")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self if self._handle is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run_folder(folder: str | Path, rank: int = 0, world: int = 1) -> RunLock:
    """Every process of a run locks its part of the folder (rank 0 the folder itself); if any cannot, all stop
    with the holder's name, so a launch of several processes never half-starts."""
    from mcqtune.runs.distributed import gather_to_all

    lock = RunLock(folder, LOCK_NAME if rank == 0 else f".mcq-run.rank{rank}.lock")
    try:
        lock.acquire()
        problem = None
    except FolderInUse as err:
        problem = str(err)
    problems = [p for p in gather_to_all(problem, world) if p]
    if problems:
        lock.release()
        raise FolderInUse(problems[0])
    return lock


def unique_path(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3`` ... whichever does not exist yet (set-aside names never collide)."""
    if not path.exists():
        return path
    number = 2
    while path.with_name(f"{path.name}-{number}").exists():
        number += 1
    return path.with_name(f"{path.name}-{number}")


def set_aside(folder: str | Path, names: Iterable[str | Path], reason: str) -> Path | None:
    """Move each of ``names`` that exists (relative to ``folder``, or absolute) into one new
    ``<folder>/previous-<time>/``; returns that folder, or None when there was nothing to move."""
    folder = Path(folder)
    present = [Path(n) if Path(n).is_absolute() else folder / n for n in names]
    present = [p for p in present if p.exists() or p.is_symlink()]
    if not present:
        return None
    aside = unique_path(folder / time.strftime("previous-%Y%m%d-%H%M%S"))
    aside.mkdir(parents=True)
    for path in present:
        os.replace(path, unique_path(aside / path.name))
    logger.warning("%s: %s; moved %s to %s", folder, reason, ", ".join(p.name for p in present), aside)
    return aside


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (the same path, a link, or a hard link to it)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def lies_within(target: str | Path, source: str | Path) -> bool:
    """Whether writing ``target`` would write into ``source``: the same file, or a path inside the folder."""
    if same_file(target, source):
        return True
    source_path = Path(source).resolve()
    return source_path.is_dir() and source_path in Path(target).resolve().parents


WRITTEN_FILES = "written_files"  # a record's list of the files its run wrote (absolute paths), besides output_file


def written_by(path: str | Path, record: str | Path) -> bool:
    """Whether the JSON ``record`` (a run's report) names ``path`` as a file it wrote: its ``output_file`` or one of
    its ``written_files``."""
    try:
        found = json.loads(Path(record).read_text(encoding="utf-8"))
        named = [found.get("output_file"), *(found.get(WRITTEN_FILES) or [])]
    except (OSError, ValueError, AttributeError, TypeError):
        return False
    target = Path(path).resolve()
    return any(isinstance(n, str) and n and Path(n).resolve() == target for n in named)


def ownership_problem(paths: str | Path | Sequence[str | Path], record: str | Path, option: str) -> str | None:
    """The one writer rule for a command's outputs: a file that exists may only be replaced by the kind of run
    whose ``record`` says it wrote it (infer.py's report.json, a traces or comparison record, a benchmark
    report); another run's record, an input or a hand-made file is never replaced. ``paths`` are the files about
    to be written; the record itself, when among them, is its own if it names itself or any of them. None when
    every path may be written; else the line that says which is in the way."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    for path in paths:
        owned = written_by(path, record) or (same_file(path, record) and any(written_by(p, record) for p in paths))
        if path.exists() and not owned:
            return (f"{option} {path} already exists and was not written by {Path(record)} (it may be another "
                    "run's output or a file of yours, and its record would then describe a file that is gone); "
                    "name another file or folder, or move it away first")
    return None
