"""Expensive fixtures built once per test session and shared by every pytest-xdist worker.

Each is a folder named by its fixture and a hash of its settings, under the session's shared temporary folder (the
parent of the workers' own), built by whichever worker asks first while the others wait on a file lock. The folder
is built in place (a trained run records its own paths) and marked complete by a file beside it afterwards: a
worker never uses a folder without its mark, and a half-built one (its builder failed) is removed and built again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from filelock import FileLock


def session_root(tmp_path_factory) -> Path:
    """The folder every worker of this test session shares (a lone process: its own temporary folder)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_folder(tmp_path_factory, name: str, settings: dict, build: Callable[[Path], None]) -> Path:
    """The folder ``build(folder)`` writes for ``name`` with these settings (``folder`` does not exist yet), built
    once per session."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    root = session_root(tmp_path_factory) / "shared"
    root.mkdir(exist_ok=True)
    folder = root / f"{name}-{key}"
    done = root / f"{folder.name}.complete"
    with FileLock(str(folder) + ".lock"):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed in another worker
            build(folder)
            done.write_text(json.dumps(settings, sort_keys=True, default=str))
    return folder
