"""Trainer pieces that SFT and GRPO share: validation by infer.py's letter scorer, the phase timer and the
run's memory peaks, the adapter's dtype kept on resume."""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import pandas as pd
import torch
from transformers import TrainerCallback

from mcqtune.core.scoring import accuracy, letters_from_probs, score_frame
from mcqtune.data.questions import LETTERS, PromptStyle
from mcqtune.reporting.meters import gpu_peak_gb

logger = logging.getLogger(__name__)


WARMUP_STEPS = 2  # the first optimiser steps compile kernels and fill caches: reported apart


def combine_shards(probs: np.ndarray) -> np.ndarray:
    """Data-parallel validation: every rank scored its share of the batches (other rows NaN); every rank
    gets the whole table, so all ranks log the same metrics and take the same early-stopping decision."""
    from mcqtune.runs.distributed import distributed_info, gather_to_all

    rank, world, _ = distributed_info()
    mine = np.flatnonzero(~np.isnan(probs[:, 0]))
    logger.info("validation: rank %d scored %d of %d questions", rank, len(mine), len(probs))
    parts = gather_to_all((mine, probs[mine]), world)
    full = np.full_like(probs, np.nan)
    for rows, values in parts:
        full[rows] = values
    if np.isnan(full).any():
        raise RuntimeError("validation: some questions have no probabilities (scored by no rank, or the model "
                           "returned NaN)")
    return full


def eager_forward():
    """Run the validation pass without torch.compile. Unsloth compiles each decoder layer for training;
    compiling it again for the scorer's shapes (no gradients, other batch sizes, the shared prefix) costs time
    in the first evaluation and makes the first training step after it slower than after an eager pass; after
    its first pass the eager validation is also the faster one (both measured at the 14B shape:
    bench/RESULTS.md)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else contextlib.nullcontext()


class KeepAdapterDtype:
    """Trainer mixin: resume with the adapter weights in the dtype the run trains them in."""

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume with the adapter weights in the dtype the run trains them in. A fresh run trains them in the
        dtype TRL's SFTTrainer gave them (bfloat16 on a quantised base, QLoRA's recipe), but loading a
        checkpoint's adapter (peft's load_adapter) brings them back in float32: the resumed run would continue
        in another precision than the uninterrupted one and end elsewhere. The values are the same (the
        checkpoint holds the trained dtype's values), so casting back is exact."""
        target = model if model is not None else self.model
        trained = {name: p.dtype for name, p in target.named_parameters() if p.requires_grad}
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        for name, param in target.named_parameters():
            if name in trained and param.dtype != trained[name]:
                param.data = param.data.to(trained[name])


def scoring_metrics(trainer, frame: pd.DataFrame, style: PromptStyle, max_prompt_tokens: int | None,
                    prefix: str = "eval") -> dict:
    """One pass of infer.py's scorer over the validation questions: ``<prefix>_accuracy`` and ``<prefix>_loss``
    (the cross-entropy of the right letter among the four), split over data-parallel ranks."""
    started = time.time()
    world = max(trainer.args.world_size, 1)
    with eager_forward():
        probs = score_frame(trainer.model, trainer.processing_class, frame, style,
                            batch_size=trainer.args.per_device_eval_batch_size,
                            max_prompt_tokens=max_prompt_tokens, shard=(trainer.args.process_index, world))
    if world > 1:
        probs = combine_shards(probs)
    expected = list(frame["answer"])
    right = probs[np.arange(len(expected)), [LETTERS.index(letter) for letter in expected]]
    seconds = time.time() - started
    return {f"{prefix}_loss": float(-np.log(np.clip(right, 1e-12, 1)).mean()),
            f"{prefix}_accuracy": accuracy(letters_from_probs(probs), expected),
            f"{prefix}_runtime": round(seconds, 3),
            f"{prefix}_samples_per_second": round(len(expected) / seconds, 2)}


def log_evaluation(trainer, metrics: dict) -> dict:
    """Log an evaluation's metrics and let the callbacks (best checkpoint, early stopping) see them."""
    trainer.log(metrics)
    trainer.control = trainer.callback_handler.on_evaluate(trainer.args, trainer.state, trainer.control, metrics)
    return metrics


class PhaseTimes:
    """Trainer mixin: the PhaseTimer callback's summary and the run's GPU memory peak."""

    def _phase_timer(self) -> "PhaseTimer | None":
        return next((c for c in self.callback_handler.callbacks if isinstance(c, PhaseTimer)), None)

    def phase_times(self) -> dict:
        timer = self._phase_timer()
        if timer is None:
            return {}
        world = max(self.args.world_size, 1)
        return timer.summary(self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * world)

    def peak_gpu_gb(self) -> float | None:
        """GPU memory peak (reserved) of the whole run: load, training, evaluation, checkpoints."""
        timer = self._phase_timer()
        if timer is not None:
            return timer.run_peak_gb()
        gpu = gpu_peak_gb()
        return None if gpu is None else gpu["reserved"]


class PhaseTimer(TrainerCallback):
    """Wall time of each optimiser step, of the time between steps (batch preparation, logging), of
    evaluations and of checkpoint writes, kept apart; and the GPU memory peak of each phase (load, warm-up,
    steady steps, evaluation, checkpoint writes), so a run's peak can be traced to what caused it.

    The first step after an evaluation or a checkpoint write is reported apart too ("resume" steps): the first
    one of a run is many times slower than a steady step (Unsloth's compiled training step is set up again after
    the model was in evaluation mode; the 14B figures are in bench/RESULTS.md)."""

    def __init__(self):
        self.steps: list[float] = []
        self.eval_seconds = self.save_seconds = self.between_seconds = 0.0
        self.evaluations = self.saves = 0
        self.peaks: dict[str, float] = {}  # reserved by the caching allocator
        self.allocated: dict[str, float] = {}  # held by tensors
        self.resume_steps: list[int] = []  # indices into steps: the first step after an evaluation / save
        self._step_start = self._mark = None
        self._after_phase = False

    def _close_phase(self, phase: str) -> None:
        """Record the GPU memory peak since the last phase ended under ``phase`` and start a new count."""
        if not torch.cuda.is_available():
            return
        torch.cuda.synchronize()  # the phase's GPU work belongs to it, not to the next one
        gpu = gpu_peak_gb()
        self.peaks[phase] = max(self.peaks.get(phase, 0.0), gpu["reserved"])
        self.allocated[phase] = max(self.allocated.get(phase, 0.0), gpu["allocated"])
        torch.cuda.reset_peak_memory_stats()

    def on_train_begin(self, args, state, control, **kwargs):
        self._close_phase("load")
        self._mark = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()
        if self._mark is not None:
            self.between_seconds += self._step_start - self._mark

    def on_step_end(self, args, state, control, **kwargs):
        self._close_phase("warmup" if len(self.steps) < WARMUP_STEPS else "steps")
        self._mark = time.perf_counter()
        if self._step_start is not None:
            if self._after_phase and len(self.steps) >= WARMUP_STEPS:
                self.resume_steps.append(len(self.steps))
            self.steps.append(self._mark - self._step_start)
        self._after_phase = False

    def _lap(self, phase: str) -> None:
        """Time since the last step ended (or the last phase) goes to ``phase``: evaluation or saving."""
        self._close_phase(phase)
        self._after_phase = True
        if self._mark is None:
            return
        now = time.perf_counter()
        setattr(self, f"{phase}_seconds", getattr(self, f"{phase}_seconds") + now - self._mark)
        self._mark = now

    def on_evaluate(self, args, state, control, **kwargs):
        self.evaluations += 1
        self._lap("eval")

    def on_save(self, args, state, control, **kwargs):
        self.saves += 1
        self._lap("save")

    def summary(self, samples_per_step: int) -> dict:
        resume = [self.steps[i] for i in self.resume_steps]
        steady = [t for i, t in enumerate(self.steps) if i >= WARMUP_STEPS and i not in self.resume_steps]
        return {"warmup_steps": min(WARMUP_STEPS, len(self.steps)),
                "warmup_seconds": round(sum(self.steps[:WARMUP_STEPS]), 2),
                "resume_steps": len(resume), "resume_seconds": round(sum(resume), 2),
                "steady_steps": len(steady), "steady_seconds": round(sum(steady), 2),
                "steady_train_samples_per_second": round(samples_per_step * len(steady) / sum(steady), 3)
                if steady else None,
                "between_steps_seconds": round(self.between_seconds, 2),
                "evaluations": self.evaluations, "eval_seconds": round(self.eval_seconds, 2),
                "saves": self.saves, "save_seconds": round(self.save_seconds, 2),
                "peak_reserved_gb_by_phase": dict(self.peaks),
                "peak_allocated_gb_by_phase": dict(self.allocated),
                "step_seconds": [round(x, 3) for x in self.steps]}

    def run_peak_gb(self) -> float | None:
        """The run's GPU memory peak (reserved), over every phase so far."""
        gpu = gpu_peak_gb()
        return None if gpu is None else max([gpu["reserved"], *self.peaks.values()])
