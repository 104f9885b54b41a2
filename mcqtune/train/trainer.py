"""TRL's SFTTrainer, specialised for single-choice answers: answer-only logits and validation accuracy.

Import this module only after ``modeling.select_backend`` (Unsloth must be imported before trl).

* ``compute_loss`` runs the transformer body once and sends only the hidden states of positions that carry
  a label (the answer letter and ``<|im_end|>``) through the output layer. The loss is the same
  cross-entropy TRL computes, but the (batch x length x 152k) logits tensor is never built: on a 4090 that is
  gigabytes of memory, on a CPU most of the step time.
* ``--loss letters`` (``letters_only_loss``) instead trains on the cross-entropy of the right letter among the
  four letters at the answer position only: the rest of the vocabulary and ``<|im_end|>`` take no part, so
  every gradient goes to telling A-D apart (the quantity the scorer and ``eval_loss`` measure), and the output
  layer computes four rows instead of the whole vocabulary.
* ``evaluate`` is one pass of infer.py's scorer over the validation questions (length-sorted batches, the
  shared prompt prefix): ``eval_accuracy`` keeps the best checkpoint and drives early stopping, and
  ``eval_loss`` is the cross-entropy of the right letter among the four letters, from the same pass. No
  second, full-vocabulary forward over the validation set is run.
* ``PhaseTimer`` splits the run's wall time into warm-up steps, steady steps, evaluation and checkpoint
  writes, so training_summary.json reports the speed a long run actually trains at, and records each
  phase's GPU memory peak.
"""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from trl import SFTTrainer

from mcqtune.data.questions import LETTERS, PromptStyle
from mcqtune.model.chat_template import closing_letter_ids
from mcqtune.train.distill import TEACHER_COLUMN
from mcqtune.reporting.meters import gpu_peak_gb
from mcqtune.answering.scoring import accuracy, decoder_and_head, letters_from_probs, score_frame, finish_logits
# A-D's rows of the output layer, as the scorer reads them
from mcqtune.answering.scoring import _head_rows as letter_rows
from mcqtune.answering.scoring import letter_token_ids

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value of positions excluded from the loss (prompt and padding)
WARMUP_STEPS = 2  # the first optimiser steps compile kernels and fill caches: reported apart
LOSSES = ("answer", "letters")  # train_sft.py --loss: answer_only_loss, letters_only_loss


def answer_only_loss(model, inputs: dict, num_items_in_batch=None, answer_weight: float = 1.0,
                     letter_ids=None) -> torch.Tensor:
    """Mean (or, under gradient accumulation, the share of the summed) cross-entropy on labelled positions; with
    ``answer_weight`` W, each row's answer letter (its last labelled token among ``letter_ids``) counts W times."""
    labels = inputs["labels"]
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                     use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = finish_logits(model, head(hidden[:, :-1][keep]).float())  # as the model's own forward
    if answer_weight != 1.0:
        weights = torch.where(last_letters(targets, letter_ids)[keep], answer_weight, 1.0)
        loss = (F.cross_entropy(logits, targets[keep], reduction="none") * weights).sum()
    else:
        loss = F.cross_entropy(logits, targets[keep], reduction="sum")
    if num_items_in_batch is not None:
        return loss / num_items_in_batch
    return loss / keep.sum().clamp(min=1)


def letters_only_loss(model, inputs: dict, letter_ids, num_items_in_batch=None) -> torch.Tensor:
    """Cross-entropy of the right letter among ``letter_ids`` (A-D) at each row's answer position; the mean over
    rows, or under gradient accumulation the share of the sum (``num_items_in_batch`` then counts answer positions,
    see ``MCQTrainer._get_num_items_in_batch``)."""
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                     use_cache=False).last_hidden_state
    at = answer_only_labels(inputs["labels"])[:, 1:] != IGNORE_INDEX
    logits = finish_logits(model, letter_rows(hidden[:, :-1][at], head, letter_ids))  # as the scorer reads them
    loss = F.cross_entropy(logits, letter_classes(inputs["labels"][:, 1:][at], letter_ids), reduction="sum")
    if num_items_in_batch is not None:
        return loss / num_items_in_batch
    return loss / at.sum().clamp(min=1)


def distilled_answer_loss(model, inputs: dict, letter_ids, weight: float, temperature: float,
                          num_items_in_batch=None) -> torch.Tensor:
    """``answer_only_loss`` plus ``weight`` x KL(teacher || student) over A-D at each row's answer position, from
    the same decoder pass. Both are softened by ``temperature`` and the term is scaled by its square. The KL is
    a mean over the step's rows in which a row without teacher probabilities (NaN) counts 0, so each row's
    objective is its label's cross-entropy plus, where it has a teacher, weight x its KL. Under gradient
    accumulation ``num_items_in_batch`` counts the step's labelled tokens; every row has the same number (the
    letter and the template's end of turn), which gives the step's rows."""
    labels = inputs["labels"]
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                     use_cache=False).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    cross_entropy = F.cross_entropy(finish_logits(model, head(hidden[keep]).float()), targets[keep], reduction="sum")
    at = answer_only_labels(labels)[:, 1:] != IGNORE_INDEX  # one position per row, in row order
    student = torch.log_softmax(finish_logits(model, letter_rows(hidden[at], head, letter_ids)) / temperature, dim=-1)
    teacher = inputs[TEACHER_COLUMN].to(student.device, torch.float32)
    known = ~torch.isnan(teacher).any(dim=1)
    soft = torch.softmax(teacher[known].clamp_min(1e-12).log() / temperature, dim=-1)
    kl = (soft * (soft.clamp_min(1e-12).log() - student[known])).sum() * temperature ** 2
    rows = labels.shape[0]
    if num_items_in_batch is not None:
        step_rows = num_items_in_batch * rows / keep.sum().clamp(min=1)  # labelled tokens -> rows of the step
        return cross_entropy / num_items_in_batch + weight * kl / step_rows
    return cross_entropy / keep.sum().clamp(min=1) + weight * kl / rows


def answer_only_labels(labels: torch.Tensor) -> torch.Tensor:
    """``labels`` with only each row's first labelled position (the answer letter) kept."""
    keep = labels != IGNORE_INDEX
    first = keep & (keep.cumsum(dim=1) == 1)
    return torch.where(first, labels, torch.full_like(labels, IGNORE_INDEX))


def last_letters(targets: torch.Tensor, letter_ids) -> torch.Tensor:
    """Each row's answer letter: its last labelled token among ``letter_ids`` (a reasoning reply ends on
    ``答案：X`` and the end of the turn; letters the reasoning names come before it)."""
    is_letter = (targets[..., None] == torch.tensor(list(letter_ids), device=targets.device)).any(-1)
    last = is_letter & (is_letter.flip(1).cumsum(1).flip(1) == 1)
    if not bool(last.any(dim=1).all()):
        raise ValueError("answer_weight: a training reply has no answer letter among its target tokens as the "
                         "answer parser reads them after 答案：; check the reasoning column's rows")
    return last


def letter_classes(tokens: torch.Tensor, letter_ids) -> torch.Tensor:
    """Token ids of answer letters -> 0..3 (their place in ``letter_ids``)."""
    match = tokens[:, None] == torch.tensor(list(letter_ids), device=tokens.device)[None, :]
    if not bool(match.any(dim=1).all()):
        raise ValueError("the four-letter loss needs every training answer to start with one of the letter tokens "
                         "A-D as the scorer reads them; a chat template or answer text changed that: use --loss answer")
    return match.int().argmax(dim=1)


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


def check_loss(loss: str, world_size: int) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if loss == "letters" and world_size > 1:
        # The letters loss runs the decoder beside the DDP wrapper, whose forward synchronises the gradients.
        raise ValueError("--loss letters trains in one process; with several processes use --loss answer")
    return loss


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


class TeacherCollator:
    """The trainer's collator, with each row's teacher probabilities (--distill_from) stacked beside the batch."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, examples: list[dict]) -> dict:
        teacher = [example.pop(TEACHER_COLUMN) for example in examples]
        batch = self.collate(examples)
        batch[TEACHER_COLUMN] = torch.tensor(teacher, dtype=torch.float32)
        return batch


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


class MCQTrainer(KeepAdapterDtype, PhaseTimes, SFTTrainer):
    def __init__(self, *args, val_frame: pd.DataFrame | None = None, prompt_style: PromptStyle = PromptStyle(),
                 max_prompt_tokens: int | None = 512, loss: str = "answer",
                 distill: tuple[float, float] | None = None, answer_weight: float = 1.0, **kwargs):
        self.distill = distill  # (weight, temperature): --distill_from's teacher probabilities are in the batches
        super().__init__(*args, **kwargs)
        self.loss_name = check_loss(loss, self.args.world_size)
        self.letter_ids = letter_token_ids(self.processing_class, prompt_style) \
            if loss == "letters" or distill else None
        self.answer_weight = answer_weight
        # the reasoning form's answer letter, as read after 答案： (the answer-slot check guarantees one token)
        self.closing_ids = closing_letter_ids(self.processing_class) if answer_weight != 1.0 else None
        if distill:
            self.data_collator = TeacherCollator(self.data_collator)
        self.val_frame = val_frame
        self.prompt_style = prompt_style
        self.max_prompt_tokens = max_prompt_tokens
        # compute_loss below honours num_items_in_batch, so the Trainer must not divide by accumulation again.
        self.model_accepts_loss_kwargs = True
        if getattr(self.data_collator, "padding_free", False) or getattr(self.args, "padding_free", False):
            # answer_only_loss runs the decoder on padded rows with their attention mask; flattened rows
            # would attend to each other and take the wrong positions without a word: refuse instead.
            raise RuntimeError("padding-free batches were switched on (by the config or by Unsloth); this trainer "
                               "needs padded batches: set padding_free false")

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.distill and TEACHER_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, TEACHER_COLUMN]

    def _get_num_items_in_batch(self, batch_samples: list, device):
        # The letters loss has one item per row (its answer position), not one per labelled token.
        if self.loss_name == "letters":
            batch_samples = [{**batch, "labels": answer_only_labels(batch["labels"])} for batch in batch_samples]
        return super()._get_num_items_in_batch(batch_samples, device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.loss_name == "letters":
            loss = letters_only_loss(model, inputs, self.letter_ids, num_items_in_batch)
            return (loss, {"loss": loss}) if return_outputs else loss
        if self.distill and TEACHER_COLUMN in inputs:
            loss = distilled_answer_loss(model, inputs, self.letter_ids, *self.distill, num_items_in_batch)
            return (loss, {"loss": loss}) if return_outputs else loss
        if self.distill and model.training:
            raise RuntimeError("--distill_from: a training batch came without its teacher probabilities")
        if self.args.world_size > 1:
            # Under DDP the forward must go through the wrapper so that gradients are synchronised: use
            # TRL's own loss (same labels, full logits; Unsloth fuses it on the GPU).
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = answer_only_loss(model, inputs, num_items_in_batch, self.answer_weight, self.closing_ids)
        return (loss, {"loss": loss}) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        if self.val_frame is None or "answer" not in self.val_frame or self.prompt_style.reasoning:
            # reasoning replies: eval_loss over the reasoning and answer tokens (accuracy: infer.py --mode reason)
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        return log_evaluation(self, scoring_metrics(self, self.val_frame, self.prompt_style, self.max_prompt_tokens,
                                                    metric_key_prefix))

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
