"""TRL's SFTTrainer, specialised for single-choice answers: answer-only logits and validation accuracy.

Import this module only after ``modeling.select_backend`` (Unsloth must be imported before trl).

* ``compute_loss`` runs the transformer body once and sends only the hidden states of positions that carry
  a label (the answer letter and ``<|im_end|>``) through the output layer. The loss is the same
  cross-entropy TRL computes, but the (batch x length x 152k) logits tensor is never built: on a 4090 that is
  gigabytes of memory, on a CPU most of the step time.
* ``evaluation_loop`` adds ``eval_accuracy``: letter scoring (``scoring.score_frame``) of the validation
  questions, so checkpoints can be kept and early stopping decided by accuracy rather than loss.
"""

from __future__ import annotations

import logging

import pandas as pd
import torch
import torch.nn.functional as F
from trl import SFTTrainer

from mcq_dataset import PromptStyle
from scoring import accuracy, decoder_and_head, letters_from_probs, score_frame

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value of positions excluded from the loss (prompt and padding)


def answer_only_loss(model, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    """Mean (or, under gradient accumulation, the share of the summed) cross-entropy on labelled positions."""
    labels = inputs["labels"]
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                     use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep]).float()
    loss = F.cross_entropy(logits, targets[keep], reduction="sum")
    if num_items_in_batch is not None:
        return loss / num_items_in_batch
    return loss / keep.sum().clamp(min=1)


class MCQTrainer(SFTTrainer):
    def __init__(self, *args, val_frame: pd.DataFrame | None = None, prompt_style: PromptStyle = PromptStyle(),
                 max_prompt_tokens: int | None = 512, **kwargs):
        super().__init__(*args, **kwargs)
        self.val_frame = val_frame
        self.prompt_style = prompt_style
        self.max_prompt_tokens = max_prompt_tokens
        # compute_loss below honours num_items_in_batch, so the Trainer must not divide by accumulation again.
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.world_size > 1:
            # Under DDP the forward must go through the wrapper so that gradients are synchronised: use
            # TRL's own loss (same labels, full logits; Unsloth fuses it on the GPU).
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = answer_only_loss(model, inputs, num_items_in_batch)
        return (loss, {"loss": loss}) if return_outputs else loss

    def validation_accuracy(self) -> float | None:
        if self.val_frame is None or "answer" not in self.val_frame:
            return None
        probs = score_frame(self.model, self.processing_class, self.val_frame, self.prompt_style,
                            batch_size=self.args.per_device_eval_batch_size, max_prompt_tokens=self.max_prompt_tokens)
        return accuracy(letters_from_probs(probs), list(self.val_frame["answer"]))

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=True,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        value = self.validation_accuracy()
        if value is not None:
            output.metrics[f"{metric_key_prefix}_accuracy"] = value
        return output
