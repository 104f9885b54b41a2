"""Every file a command writes goes through here, whole or not at all: written beside its target, flushed to disk,
then renamed over it, so an interrupted write never leaves half a file under a good file's name
(tests/test_layout.py refuses a write anywhere else in the library)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all (its folder is made if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a failed write or flush (a full disk) names no file, a failed rename the temporary
        # one, which is gone next: name the file being written
        if err.filename is None or err.filename == str(tmp):
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` whole or not at all."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_csv_atomic(frame, path: str | Path) -> Path:
    return write_atomic(path, frame.to_csv(index=False))


def write_json_atomic(data: dict, path: str | Path) -> Path:
    return write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=float) + "\n")


def save_figure_atomic(fig, path: str | Path, dpi: int = 110) -> Path:
    """A matplotlib figure as PNG (the format follows the name's suffix)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    return write_bytes_atomic(path, buffer.getvalue())
