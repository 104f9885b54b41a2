"""The options of `mcq-tune grpo` (train_grpo.py): the dataclass, the parser and the checks that need no data.

Every option can come from a YAML config or the command line (the command line wins); TRL's GRPOConfig gives the
GRPO options (num_generations, max_completion_length, beta, loss_type, temperature, learning_rate ...), the recipe's
values for them are in the shipped ``grpo-defaults.yaml``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mcqtune.config_files import config_dir
from mcqtune.data.questions import PromptOptions, check_prompt_options
from mcqtune.errors import ConfigError
from mcqtune.model.options import LoraOptions, WeightOptions, check_lora_options
from mcqtune.training.options import RunOptions, output_problems

logger = logging.getLogger("train_grpo")
ROLLOUT_ENGINES = ("generate", "nf4", "continuous")


@dataclass
class GRPOArguments(RunOptions, LoraOptions, WeightOptions, PromptOptions):
    adapter: str | None = field(default=None, metadata={
        "help": "start from this LoRA adapter (train_sft.py's adapter/ folder) instead of fresh LoRA weights; its "
                "rank, alpha and target modules are used, its base must be model_name_or_path, and its prompt "
                "settings must be the ones given here"})
    reasoning: bool = field(default=False, metadata={
        "help": "replies reason before the answer (infer.py --mode reason's form: the reasoning instruction, or "
                "the thinking block with enable_thinking); off: replies are the letter alone"})
    rollout_engine: str = field(default="generate", metadata={
        "help": "how rollouts decode: generate (the backend's generate) | nf4 (the same generate with the policy's "
                "NF4 weights read by one fused dequantise-and-multiply kernel at each decoding step, its LoRA "
                "unmerged: core/nf4.py; needs a CUDA GPU, --backend hf and --load_in_4bit true) | continuous "
                "(transformers' continuous batching with varlen attention, core/continuous.py and core/varlen.py, "
                "the LoRA unmerged; samples with temperature, top_p and top_k; needs --backend hf and one process; "
                "validation replies take the same engine)",
        "choices": list(ROLLOUT_ENGINES)})
    format_reward_weight: float = field(default=0.0, metadata={
        "help": "weight of the format reward (1 for a reply in the trained form) beside the correctness reward's "
                "weight 1; 0: correctness only"})


def recipe_defaults() -> dict:
    import yaml

    return yaml.safe_load((config_dir() / "grpo-defaults.yaml").read_text(encoding="utf-8"))


def make_parser():
    from trl import GRPOConfig, TrlParser

    parser = TrlParser((GRPOArguments, GRPOConfig))
    parser.set_defaults(**recipe_defaults())
    return parser


def check_grpo_config(args: GRPOArguments, training_args) -> None:
    """Fail on impossible settings with one sentence, before any data or model is loaded."""

    problems = []
    if not args.train_file:
        problems.append("train_file is required")
    if not args.model_name_or_path:
        problems.append("model_name_or_path is required")
    if not 0 < args.val_fraction < 1 and not args.val_file:
        problems.append(f"val_fraction must be between 0 and 1, got {args.val_fraction}")
    problems += check_lora_options(args)
    problems += check_prompt_options(args)
    problems += output_problems(args, training_args)
    if args.format_reward_weight < 0:
        problems.append(f"format_reward_weight must be >= 0, got {args.format_reward_weight}")
    if args.rollout_engine not in ROLLOUT_ENGINES:
        problems.append(f"rollout_engine must be one of {', '.join(ROLLOUT_ENGINES)}, got {args.rollout_engine!r}")
    if args.rollout_engine == "nf4" and not args.load_in_4bit:
        problems.append("rollout_engine nf4 reads NF4 weights: keep --load_in_4bit true")
    if args.rollout_engine == "nf4":
        from mcqtune.core.nf4 import MAX_FUSED_ROWS

        for name in ("use_vllm", "use_transformers_continuous_batching"):
            if getattr(training_args, name, False):
                problems.append(f"rollout_engine nf4 decodes through TRL's generate: drop --{name}")

        rollouts = training_args.generation_batch_size or training_args.per_device_train_batch_size
        if rollouts > MAX_FUSED_ROWS:
            problems.append(f"rollout_engine nf4 decodes at most {MAX_FUSED_ROWS} replies a step through its kernel; "
                            f"this run generates {rollouts} at once (generation_batch_size): lower it, or use "
                            "--rollout_engine generate")
    if args.rollout_engine == "continuous":
        problems += continuous_rollout_problems(training_args)
    if training_args.reward_weights is not None:
        problems.append("reward_weights is set by format_reward_weight (the correctness reward weighs 1)")
    if args.adapter and training_args.beta > 0:
        problems.append(f"beta {training_args.beta} with --adapter: the KL term's reference would be the base model "
                        "without any adapter, pulling training back from the adapter you start from; use beta 0")
    if args.enable_thinking and not args.reasoning:
        problems.append("enable_thinking makes the model reason in its thinking block before the letter: add "
                        "--reasoning true, or leave thinking off for direct replies")
    if not training_args.temperature > 0:
        problems.append(f"temperature must be > 0, got {training_args.temperature}: GRPO compares sampled replies "
                        "of each question (greedy ones would all be alike)")
    if training_args.max_completion_length < 1:
        problems.append(f"max_completion_length must be >= 1, got {training_args.max_completion_length}")
    elif not args.reasoning and training_args.max_completion_length > 64:
        logger.info("direct replies are one letter: max_completion_length %d leaves room for replies that never "
                    "commit (they earn nothing)", training_args.max_completion_length)
    if args.reasoning and training_args.max_completion_length < 64:
        problems.append(f"reasoning replies need room: max_completion_length {training_args.max_completion_length} "
                        "is below 64")
    if problems:
        raise ConfigError("; ".join(problems))


def continuous_rollout_problems(training_args) -> list[str]:
    """What continuous batching would not honour: transformers drops the repetition penalty and a minimum length
    from its batches; only the sampling settings it applies per request are allowed."""
    problems = []
    for name in ("use_vllm", "use_transformers_continuous_batching"):
        if getattr(training_args, name, False):
            problems.append(f"rollout_engine continuous makes the rollouts itself: drop --{name}")
    if training_args.repetition_penalty != 1.0:
        problems.append(f"rollout_engine continuous has no repetition penalty (transformers' continuous batching "
                        f"drops it): pass --repetition_penalty 1.0, or --rollout_engine generate to keep "
                        f"{training_args.repetition_penalty}")
    if training_args.min_p:
        problems.append("rollout_engine continuous samples with temperature, top_p and top_k only: drop --min_p, "
                        "or use --rollout_engine generate")
    if training_args.generation_kwargs:
        given = sorted(training_args.generation_kwargs)
        sampling = [key for key in given if key in ("temperature", "top_p", "top_k")]
        others = [key for key in given if key not in sampling]
        if sampling:
            problems.append(f"rollout_engine continuous reads {', '.join(sampling)} from its own options: pass "
                            f"{' '.join(f'--{key} ...' for key in sampling)} instead of --generation_kwargs")
        if others:
            problems.append(f"rollout_engine continuous samples with temperature, top_p and top_k only: drop "
                            f"{', '.join(others)} from --generation_kwargs, or use --rollout_engine generate")
    return problems
