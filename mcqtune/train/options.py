"""The options of `mcq-tune train` (train_sft.py): the dataclass, the parser, and the checks that need no data.

Every option can come from a YAML config or the command line (the command line wins); the recipe's Trainer
defaults are in the shipped ``defaults.yaml``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Sequence
from pathlib import Path

from mcqtune.config_files import config_dir
from mcqtune.data.questions import PromptOptions, check_prompt_options
from mcqtune.errors import ConfigError
from mcqtune.model.options import LoraOptions, WeightOptions, check_lora_options
from mcqtune.training.options import RunOptions, output_problems

logger = logging.getLogger("train_sft")


# Dataclass fields (and --help) follow the bases in reverse: the prompt's, the weights', LoRA's, then these.
PACKING_REFUSED = ("padding_free / packing put several questions into one sequence, which is right only with "
                   "FlashAttention's variable-length kernels; this recipe runs PyTorch's SDPA attention, where the "
                   "questions would attend to each other. To cut padding use --train_sampling_strategy "
                   "group_by_length instead")
# Options a backend may switch off while the config is built (Unsloth turns packing and padding_free off with a
# notice or silently), so their request is read from the command line and the YAML file before parsing.
ASKED_BEFORE_PARSING = ("packing", "padding_free")


def check_requested(argv: Sequence[str]) -> None:
    """Refuse, in one line, what was asked for on the command line or in --config but cannot be honoured, before
    a backend's config hook can turn it off unseen."""
    import yaml

    from mcqtune.config_files import resolve_config

    asked = {}
    if "--config" in argv[:-1]:
        path = Path(resolve_config(argv[argv.index("--config") + 1]))
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, yaml.YAMLError):
            config = None  # the parser names the problem
        asked.update({k: v for k, v in (config or {}).items() if k in ASKED_BEFORE_PARSING} if isinstance(config, dict)
                     else {})
    for i, item in enumerate(argv):
        for name in ASKED_BEFORE_PARSING:
            if item in (f"--{name}", f"--{name.replace('_', '-')}"):
                value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "true"
                asked[name] = value
            elif item.startswith(f"--{name}="):
                asked[name] = item.split("=", 1)[1]
    if any(str(v).lower() in ("true", "1", "yes") for v in asked.values()):
        raise ConfigError(PACKING_REFUSED)


@dataclass
class ScriptArguments(RunOptions, LoraOptions, WeightOptions, PromptOptions):
    extra_train_files: list[str] = field(default_factory=list, metadata={
        "help": "more labelled CSVs in the same layout (public MCQ sets ...), added to the training rows only: "
                "validation and folds come from train_file, the one the leaderboard resembles"})
    extra_train_weights: list[float] = field(default_factory=list, metadata={
        "help": "per extra file, the share of its rows to use (0.5: a seeded half; 2: every row twice); default 1"})
    max_answer_tokens: int = field(default=48, metadata={"help": "answer tokens kept (letter + <|im_end|>)"})
    loss: str = field(default="answer", metadata={
        "help": "answer: cross-entropy of the answer tokens over the whole vocabulary (TRL's loss); letters: "
                "cross-entropy among A-D only, at the answer position, which is what the scorer reads: no gradient "
                "is spent on the rest of the vocabulary or <|im_end|> (one training process)",
        "choices": ["answer", "letters"]})
    augment_permutations: int = field(default=0, metadata={"help": "extra copies of each row, options shuffled"})
    reasoning_column: str | None = field(default=None, metadata={
        "help": "train reasoning replies: this column's text (e.g. reasoning, explanation), then the answer prefix "
                "and the letter, in the template's own form (a thinking block with enable_thinking); the loss covers "
                "the reasoning and the answer (max_answer_tokens must hold both: a longer row is refused, never "
                "cut); validation is then eval_loss over those tokens; answer with infer.py --mode reason"})
    answer_weight: float = field(default=1.0, metadata={
        "help": "with reasoning_column: how many times the answer letter's cross-entropy counts beside each "
                "reasoning token's (1: every target token alike; above 1 leans the loss towards the answer); "
                "eval_loss is weighted alike, so compare it only between runs of one weight"})
    distill_from: list[str] = field(default_factory=list, metadata={
        "help": "teachers' letter probabilities for the training rows: infer.py run folders or predictions.csv of "
                "the training file, or a k-fold folder / oof_predictions.csv (averaged when several; checked to be "
                "of this train file); each row's loss adds distill_weight x KL(teacher || student) over A-D at the "
                "answer position (rows without a teacher: the label's loss only)"})
    distill_weight: float = field(default=1.0, metadata={"help": "weight of the distillation term beside the "
                                                                 "label's cross-entropy"})
    distill_temperature: float = field(default=1.0, metadata={
        "help": "softens teacher and student alike (the term is scaled by its square)"})
    val_test_like: str | None = field(default=None, metadata={
        "help": "validate on the val_fraction most test-like training rows, as ranked by mcq-tune shift's "
                "train_test_likeness.csv for this train file, instead of a random split"})
    pseudo_label_from: list[str] = field(default_factory=list, metadata={
        "help": "infer.py runs (score mode) of --pseudo_label_file, averaged when several: its questions they answer "
                "with probability >= pseudo_label_threshold join training with that letter (never validation)"})
    pseudo_label_file: str | None = field(default=None, metadata={
        "help": "the test CSV the --pseudo_label_from runs answered (checked by its bytes)"})
    pseudo_label_threshold: float = field(default=0.9, metadata={
        "help": "the least probability of a pseudo-label's letter"})
    export: str = field(default="adapter", metadata={"help": "adapter | merged (adapter + merged 16-bit weights)",
                                                     "choices": ["adapter", "merged"]})
    merged_dtype: str | None = field(default=None, metadata={"help": "dtype of merged weights (default: the base "
                                                                     "model's own; bfloat16, float16, float32)"})
    early_stopping_patience: int | None = field(default=None, metadata={"help": "evaluations without improvement"})
    keep_effective_batch: bool = field(default=True, metadata={"help": "on N GPUs divide gradient_accumulation_steps "
                                                                      "by N so the effective batch stays the same"})
    folds: int = field(default=1, metadata={"help": "k-fold: train K adapters into <output_dir>/fold-<i>/, each "
                                                    "validated on its own fold; out-of-fold predictions and "
                                                    "cv_report.md at the end"})
    fold: int | None = field(default=None, metadata={"help": "with --folds K: train only fold i (0..K-1), e.g. "
                                                             "one fold per GPU or machine"})

    @property
    def reasoning(self) -> bool:
        return bool(self.reasoning_column)


def recipe_defaults() -> dict:
    """The recipe's SFTConfig overrides (defaults.yaml, package data)."""
    import yaml

    return yaml.safe_load((config_dir() / "defaults.yaml").read_text(encoding="utf-8"))


def make_parser():
    from trl import SFTConfig, TrlParser

    parser = TrlParser((ScriptArguments, SFTConfig))
    parser.set_defaults(**recipe_defaults())
    return parser


def check_config(script_args: ScriptArguments, training_args) -> None:
    """Fail on impossible settings with one sentence, before any data or model is loaded."""
    problems = []
    if not script_args.train_file:
        problems.append("train_file is required")
    if not script_args.model_name_or_path:
        problems.append("model_name_or_path is required")
    if not 0 < script_args.val_fraction < 1 and not script_args.val_file:
        problems.append(f"val_fraction must be between 0 and 1, got {script_args.val_fraction}")
    problems += check_lora_options(script_args)
    problems += check_prompt_options(script_args)
    if script_args.folds < 1 or (script_args.fold is not None and not 0 <= script_args.fold < script_args.folds):
        problems.append(f"folds must be >= 1 and fold in 0..folds-1, got folds {script_args.folds}, fold "
                        f"{script_args.fold}")
    if len(script_args.extra_train_weights) > len(script_args.extra_train_files) or \
            any(w <= 0 for w in script_args.extra_train_weights):
        problems.append("extra_train_weights: one positive number per extra_train_files entry")
    if script_args.folds > 1 and script_args.val_file:
        problems.append("with --folds the validation rows are the folds of train_file: leave out val_file")
    problems += output_problems(script_args, training_args)
    if script_args.reasoning and script_args.loss == "letters":
        problems.append("--loss letters scores the letter right after the prompt; reasoning replies put it after "
                        "the reasoning: use --loss answer with reasoning_column")
    if script_args.reasoning and script_args.augment_permutations:
        problems.append("augment_permutations with reasoning_column would move the options and the answer letter "
                        "but not the reasoning that names them: leave one out")
    if script_args.reasoning and script_args.folds > 1:
        problems.append("--folds with reasoning_column is not supported: out-of-fold answers of reasoning replies "
                        "need generation (answer each fold's validation rows with infer.py --mode reason)")
    if not (math.isfinite(script_args.answer_weight) and script_args.answer_weight > 0):
        problems.append(f"answer_weight must be a number > 0, got {script_args.answer_weight}")
    elif script_args.answer_weight != 1.0 and not script_args.reasoning:
        problems.append("answer_weight weighs the answer against the reasoning: it needs reasoning_column (a direct "
                        "answer is the letter and the end of the turn only)")
    elif script_args.answer_weight != 1.0 and training_args.world_size > 1:
        problems.append("answer_weight is applied by the one-process loss; several processes use TRL's loss, which "
                        "weighs every token alike: train in one process or leave answer_weight at 1")
    if script_args.distill_from:
        conflicts = [name for name, on in (("reasoning_column", script_args.reasoning),
                                           ("--loss letters", script_args.loss == "letters"),
                                           ("augment_permutations", script_args.augment_permutations),
                                           ("--folds", script_args.folds > 1),
                                           ("several processes", training_args.world_size > 1)) if on]
        if conflicts:
            problems.append(f"distill_from is not supported with {', '.join(conflicts)} (the teacher's probabilities "
                            "belong to each training row's own options and answer position, in one process)")
        if script_args.distill_weight <= 0 or script_args.distill_temperature <= 0:
            problems.append("distill_weight and distill_temperature must be > 0")
    if script_args.val_test_like and (script_args.val_file or script_args.folds > 1):
        problems.append("val_test_like picks the validation rows of a random split's place; not with val_file or "
                        "--folds (their validation rows are given)")
    if script_args.pseudo_label_from:
        if not script_args.pseudo_label_file:
            problems.append("pseudo_label_from needs --pseudo_label_file: the test CSV those runs answered")
        if not 0.25 < script_args.pseudo_label_threshold <= 1:
            problems.append(f"pseudo_label_threshold must be in (0.25, 1], got {script_args.pseudo_label_threshold}")
        if script_args.reasoning:
            problems.append("pseudo_label_from with reasoning_column: pseudo-labelled questions have no reasoning")
    elif script_args.pseudo_label_file:
        problems.append("pseudo_label_file is used with --pseudo_label_from RUN (runs that answered it)")
    if script_args.max_answer_tokens < 2:
        problems.append(f"max_answer_tokens must be >= 2 (the letter and the end of the turn), got "
                        f"{script_args.max_answer_tokens}")
    if training_args.per_device_train_batch_size < 1 or training_args.gradient_accumulation_steps < 1:
        problems.append("per_device_train_batch_size and gradient_accumulation_steps must be >= 1")
    if getattr(training_args, "padding_free", False) or getattr(training_args, "packing", False):
        problems.append(PACKING_REFUSED)
    if problems:
        raise ConfigError("; ".join(problems))


def fit_max_length(script_args: ScriptArguments, training_args) -> None:
    """TRL's max_length follows the prompt and answer limits, so TRL never cuts a row that this script built."""
    wanted = script_args.max_prompt_tokens + script_args.max_answer_tokens
    if getattr(training_args, "max_length", None) != wanted:
        logger.info("max_length %s -> %d (max_prompt_tokens + max_answer_tokens)", training_args.max_length, wanted)
        training_args.max_length = wanted


def fit_reasoning_validation(script_args: ScriptArguments, training_args) -> None:
    """Reasoning replies are validated by eval_loss over their reasoning and answer tokens (the letter after the
    prompt, which eval_accuracy scores, is not where they answer): the best checkpoint follows it."""
    if script_args.reasoning and training_args.metric_for_best_model in ("eval_accuracy", "accuracy"):
        logger.info("reasoning_column: the best checkpoint is chosen by eval_loss (lower is better) over the "
                    "reasoning and answer tokens; measure accuracy with infer.py --mode reason on the validation rows")
        training_args.metric_for_best_model, training_args.greater_is_better = "eval_loss", False


def scale_for_processes(script_args: ScriptArguments, training_args) -> None:
    """Data-parallel on N GPUs: keep micro-batch x accumulation x N equal to the single-GPU recipe."""
    world = training_args.world_size
    launched = int(os.environ.get("WORLD_SIZE", 1))
    if launched > 1 and world != launched:
        raise ConfigError(f"launched as {launched} processes but the Trainer runs {world} (data parallelism needs "
                          "one GPU per process); without GPUs train in one process")
    if world <= 1 or not script_args.keep_effective_batch:
        return
    micro, accumulation = training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps
    effective = micro * accumulation
    if effective % world:
        logger.warning("the effective batch %d cannot be split over %d processes: it grows to %d", effective, world,
                       micro * accumulation * world)
        return
    share = effective // world  # samples each process contributes to one optimiser step
    micro = next(m for m in range(min(micro, share), 0, -1) if share % m == 0)
    training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps = micro, share // micro
    logger.info("%d processes: micro-batch %d x accumulation %d per process (effective batch %d unchanged)", world,
                micro, share // micro, effective)
