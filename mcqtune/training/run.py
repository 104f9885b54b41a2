"""Starting a training run (SFT or GRPO): the dtype it loads in, the embedding offload, the answer slot checked
before any weights load, and its output folder (resume or start afresh)."""

from __future__ import annotations

import logging
import os

from mcqtune.data.questions import PromptOptions
from mcqtune.model.prompts import find_answer_slot

logger = logging.getLogger("mcqtune.training")


def training_dtype(training_args):
    """The dtype the model is loaded in follows the training precision: fp16 training (T4-class cards,
    no bf16) needs fp16 weights, or Unsloth refuses to train."""
    import torch

    if not torch.cuda.is_available():
        return None
    if training_args.fp16:
        return torch.float16
    return torch.bfloat16 if training_args.bf16 else None


def embedding_offload_wanted(script_args, training_args, backend: str = "unsloth") -> bool:
    """``offload_embedding`` for a single training process on the unsloth backend only: DDP wraps a model on
    one device, and plain transformers has no such offload. Saying no is logged."""
    if not script_args.offload_embedding:
        return False
    if training_args.world_size > 1 or backend != "unsloth":
        logger.warning("offload_embedding is not used (%s): the embedding table stays with the rest of the model",
                       f"{training_args.world_size} processes" if training_args.world_size > 1 else
                       f"backend {backend}")
        return False
    return True


def prepare_output_dir(script_args, training_args, identity: dict) -> tuple[dict, str | None]:
    """The run's identity and the checkpoint to resume from (None: start fresh). A fresh
    run moves an earlier run's checkpoints and outputs aside; --resume refuses checkpoints made with other data,
    model or settings."""
    from mcqtune.training.checkpoints import checkpoint_to_resume, set_aside_previous_run

    node_local = training_args.save_on_each_node  # no shared filesystem: every node keeps its own checkpoints
    main_process = int(os.environ.get("LOCAL_RANK" if node_local else "RANK", 0)) == 0
    if not script_args.resume:
        if main_process:
            set_aside_previous_run(training_args.output_dir)
        return identity, None
    resume_from = checkpoint_to_resume(training_args.output_dir, identity, move_aside=main_process)
    if resume_from is None:
        logger.warning("--resume: no complete checkpoint in %s, starting from scratch", training_args.output_dir)
        if main_process:
            set_aside_previous_run(training_args.output_dir)
    else:
        logger.info("resuming from %s", resume_from)
    return identity, resume_from


def check_answer_slot(model_name_or_path: str, options: PromptOptions, trust_remote_code: bool = False) -> str:
    """Where the answer letter goes in the model's chat template, from the tokenizer alone, before any weights
    are loaded; a template that cannot carry the answer stops the run here (prompts.py)."""
    from mcqtune.model.loading import check_model_source, load_tokenizer

    check_model_source(model_name_or_path)  # a missing model: its own one-line error, not the hub's
    tokenizer = load_tokenizer(model_name_or_path, trust_remote_code, options.chat_template)
    line = find_answer_slot(tokenizer, options.prompt_style).describe(tokenizer, options.prompt_style)
    logger.info(line)
    return line
