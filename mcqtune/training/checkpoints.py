"""Training checkpoints that are safe to resume from: sealed when complete, checked against the run's settings.

The Trainer writes a checkpoint file by file; a process killed half-way (``kill -9``, a power cut, the
out-of-memory killer) leaves a ``checkpoint-N`` folder that looks like any other. So after the Trainer has
written everything, ``SealCheckpoints`` adds ``mcq_checkpoint.json``: the run's fingerprint and every file's
size. ``--resume true`` continues from the newest *sealed* checkpoint whose files still have those sizes;
newer unsealed ones are moved aside (``incomplete-checkpoint-N``) with a warning, never loaded, and a
checkpoint made with another train file, model or settings is refused with the names of what changed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

from transformers import TrainerCallback

from mcqtune.errors import UserError
from mcqtune.files import write_json_atomic
from mcqtune.model.loading import verify_safetensors
from mcqtune.runs.folder import set_aside, unique_path
from mcqtune.runs.identity import changed_keys

logger = logging.getLogger(__name__)

SEAL_NAME = "mcq_checkpoint.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# What a training run writes into its folder: a fresh run sets the earlier run's aside first, so a run that
# fails never leaves another run's model under its name.
# README.md: TRL writes its model card there; an earlier one (a user's own too) is set aside, never overwritten
RUN_OUTPUTS = ("adapter", "merged", "training_summary.json", "training_curves.png", "validation_predictions.csv",
               "README.md")


class ResumeError(UserError):
    """The checkpoints in output_dir cannot be continued with these settings."""


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def seal(checkpoint: Path, fingerprint: dict) -> None:
    """Record that ``checkpoint`` is complete: its files' sizes and the run's fingerprint, written atomically."""
    files = {}
    for path in sorted(checkpoint.rglob("*")):
        if path.is_file() and path.name != SEAL_NAME:
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
            files[str(path.relative_to(checkpoint))] = path.stat().st_size
    write_json_atomic({"fingerprint": fingerprint, "files": files, "sealed_at": time.time()}, checkpoint / SEAL_NAME)


SAFETENSORS_CHECK_LIMIT = 2**31  # adapter-sized files are read through once more before a resume


def seal_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` is not a complete one (None when it is)."""
    seal_file = checkpoint / SEAL_NAME
    if not seal_file.is_file():
        return "it was never sealed (the run stopped while writing it)"
    try:
        files = json.loads(seal_file.read_text())["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return f"{SEAL_NAME} is unreadable"
    for name, size in files.items():
        path = checkpoint / name
        if not path.is_file() or path.stat().st_size != size:
            return f"{name} is missing or has another size than when it was written"
        if path.suffix == ".safetensors" and size < SAFETENSORS_CHECK_LIMIT:
            try:
                verify_safetensors(path)
            except UserError as err:
                return str(err)
    return None


def checkpoint_to_resume(output_dir: str | Path, fingerprint: dict, move_aside: bool = True) -> str | None:
    """The newest complete checkpoint, after moving incomplete newer ones aside; ResumeError if it was made
    with other settings. None when there is none."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    for _, checkpoint in _checkpoints(output_dir):
        problem = seal_problem(checkpoint)
        if problem:
            aside = unique_path(checkpoint.with_name(f"incomplete-{checkpoint.name}"))
            logger.warning("skipping %s: %s; %s", checkpoint, problem, f"moved to {aside.name}" if move_aside else "")
            if move_aside:
                os.replace(checkpoint, aside)
            continue
        recorded = json.loads((checkpoint / SEAL_NAME).read_text())["fingerprint"]
        changed = changed_keys(recorded, fingerprint)
        if changed:
            raise ResumeError(f"{checkpoint} was made with another {', '.join(changed)}; resuming it would mix two "
                              "runs. Use another --output_dir, or --resume false to start over")
        return str(checkpoint)
    return None


def set_aside_previous_run(output_dir: str | Path) -> Path | None:
    """A fresh run into a folder that holds an earlier run's checkpoints or outputs moves them to
    ``previous-<time>/`` first: a later --resume can never pick up the old checkpoints, and a run that fails
    never leaves the old adapter under its name."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    names = [p.name for _, p in _checkpoints(output_dir)] + list(RUN_OUTPUTS)
    return set_aside(output_dir, names, "outputs of an earlier run (pass --resume true to continue a run)")


class SealCheckpoints(TrainerCallback):
    """Seal each checkpoint once the Trainer has finished writing it (on_save comes after the last file)."""

    def __init__(self, fingerprint: dict):
        self.fingerprint = fingerprint

    def on_save(self, args, state, control, **kwargs):
        # the process that wrote the checkpoint seals it: rank 0, or each node's first process with
        # --save_on_each_node true (several machines without a shared filesystem)
        if state.is_local_process_zero if args.save_on_each_node else state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                seal(checkpoint, self.fingerprint)
        return control
