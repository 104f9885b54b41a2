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
from dataclasses import asdict
from pathlib import Path

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

SEAL_NAME = "mcq_checkpoint.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Settings that change the trained weights; logging, evaluation and saving cadence do not.
TRAINING_KEYS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "lr_scheduler_type",
                 "warmup_steps", "weight_decay", "seed", "optim", "bf16", "fp16", "gradient_checkpointing",
                 "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon", "train_sampling_strategy")
# ... nor where the embedding table is kept (the looked-up rows are the same).
SCRIPT_KEYS_IGNORED = ("resume", "export", "merged_dtype", "encoding", "keep_effective_batch", "early_stopping_patience",
                       "offload_embedding")


class ResumeError(ValueError):
    """The checkpoints in output_dir cannot be continued with these settings."""


def _plain(value):
    return value if isinstance(value, (int, float, bool, str, type(None), list)) else str(value)


def training_fingerprint(script_args, training_args, world_size: int = 1) -> dict:
    """What must be equal for a checkpoint to be continued: data and model by content, every setting that
    changes the weights, and the effective batch (micro-batch x accumulation x processes)."""
    from modeling import _sha256, model_identity

    script = {k: _plain(v) for k, v in asdict(script_args).items() if k not in SCRIPT_KEYS_IGNORED}
    for key in ("train_file", "val_file"):
        path = script.pop(key)
        script[f"{key}_sha256"] = _sha256(Path(path)) if path else None
    script["model"] = model_identity(script.pop("model_name_or_path"))
    training = {k: _plain(getattr(training_args, k, None)) for k in TRAINING_KEYS}
    training["effective_batch"] = (training_args.per_device_train_batch_size
                                   * training_args.gradient_accumulation_steps * world_size)
    return {**script, **training}


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
    tmp = checkpoint / (SEAL_NAME + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "files": files, "sealed_at": time.time()},
                              ensure_ascii=False, indent=1))
    os.replace(tmp, checkpoint / SEAL_NAME)


def seal_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` is not a complete one (None when it is)."""
    seal_file = checkpoint / SEAL_NAME
    if not seal_file.is_file():
        return "it was never sealed (the run stopped while writing it)"
    try:
        files = json.loads(seal_file.read_text())["files"]
    except (json.JSONDecodeError, KeyError):
        return f"{SEAL_NAME} is unreadable"
    for name, size in files.items():
        path = checkpoint / name
        if not path.is_file() or path.stat().st_size != size:
            return f"{name} is missing or has another size than when it was written"
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
            aside = checkpoint.with_name(f"incomplete-{checkpoint.name}")
            logger.warning("skipping %s: %s; %s", checkpoint, problem, f"moved to {aside.name}" if move_aside else "")
            if move_aside:
                os.replace(checkpoint, aside)
            continue
        recorded = json.loads((checkpoint / SEAL_NAME).read_text())["fingerprint"]
        changed = sorted(k for k in set(recorded) | set(fingerprint) if recorded.get(k) != fingerprint.get(k))
        if changed:
            raise ResumeError(f"{checkpoint} was made with another {', '.join(changed)}; resuming it would mix two "
                              "runs. Use another --output_dir, or --resume false to start over")
        return str(checkpoint)
    return None


def set_aside_previous_run(output_dir: str | Path) -> Path | None:
    """A fresh run into a folder that holds checkpoints moves them to ``previous-<time>/`` first, so that a
    later --resume can never pick up the old run's checkpoints."""
    output_dir = Path(output_dir)
    old = _checkpoints(output_dir) if output_dir.is_dir() else []
    if not old:
        return None
    aside = output_dir / time.strftime("previous-%Y%m%d-%H%M%S")
    aside.mkdir()
    for _, checkpoint in old:
        os.replace(checkpoint, aside / checkpoint.name)
    logger.warning("%s held checkpoints of an earlier run; moved them to %s (pass --resume true to continue a run)",
                   output_dir, aside)
    return aside


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
