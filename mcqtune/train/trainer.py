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

import logging

import pandas as pd
import torch
import torch.nn.functional as F
from trl import SFTTrainer

from mcqtune.data.questions import PromptStyle
from mcqtune.model.prompts import closing_letter_ids
from mcqtune.train.distill import TEACHER_COLUMN
from mcqtune.core.scoring import decoder_and_head, finish_logits
# A-D's rows of the output layer, as the scorer reads them
from mcqtune.core.scoring import head_rows as letter_rows
from mcqtune.core.scoring import letter_token_ids
from mcqtune.training.trainer import KeepAdapterDtype, PhaseTimes, log_evaluation, scoring_metrics

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value of positions excluded from the loss (prompt and padding)
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


def check_loss(loss: str, world_size: int) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if loss == "letters" and world_size > 1:
        # The letters loss runs the decoder beside the DDP wrapper, whose forward synchronises the gradients.
        raise ValueError("--loss letters trains in one process; with several processes use --loss answer")
    return loss


class TeacherCollator:
    """The trainer's collator, with each row's teacher probabilities (--distill_from) stacked beside the batch."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, examples: list[dict]) -> dict:
        teacher = [example.pop(TEACHER_COLUMN) for example in examples]
        batch = self.collate(examples)
        batch[TEACHER_COLUMN] = torch.tensor(teacher, dtype=torch.float32)
        return batch


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

