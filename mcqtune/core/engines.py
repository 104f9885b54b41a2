"""The ways reasoning replies are generated (infer.py --generation_engine; reasoning.generate_replies)."""

import os
from typing import NamedTuple

GENERATION_ENGINES = ("generate", "continuous", "nf4", "fp8")
# through transformers' continuous batching (continuous.py); nf4: its NF4 weights read by a fused kernel (nf4.py);
# fp8: its weights converted to FP8 (fp8.py)
PAGED_ENGINES = ("continuous", "nf4", "fp8")
PAGED_ATTENTIONS = ("sdpa", "varlen")
# how the paged engines attend: transformers' paged SDPA (a dense mask over every reply's cache) or core/varlen.py;
# --paged_attention auto is varlen for them where the model allows it (the faster: bench/RESULTS.md)
ATTENTION_CHOICES = ("auto", *PAGED_ATTENTIONS)
# what the paged engines keep their key/value cache in: the model's own type, or FP8 (e4m3, read back by varlen's
# kernel), which holds twice the tokens in the same memory
KV_CACHE_DTYPES = ("auto", "fp8")


class Remedies(NamedTuple):
    """What a paged engine's refusal tells the user to change, in the options of the command that runs it."""

    budget: str  # the option that bounds a reply's tokens
    fallback: str  # the engine that always runs
    memory: str  # how to give the cache less memory
    attention: str  # what serves a model varlen attention cannot


INFER_REMEDIES = Remedies("--max_reasoning_tokens", "--generation_engine generate",
                          "plan for less with --gpu_memory_gb (the cache takes a fixed share of what is left after "
                          "loading)", "--paged_attention sdpa")
GRPO_REMEDIES = Remedies("--max_completion_length", "--rollout_engine generate",
                         "generate fewer replies a step (--per_device_train_batch_size, --gradient_accumulation_steps)",
                         "--rollout_engine generate")


def interpreting() -> bool:
    """This project's Triton kernels (nf4.py, varlen.py) run under Triton's interpreter, on the CPU: set by
    TRITON_INTERPRET=1 before Triton is first imported (the CPU tests' own process)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
