"""The ways reasoning replies are generated (infer.py --generation_engine; reasoning.generate_replies)."""

import os

GENERATION_ENGINES = ("generate", "continuous", "nf4", "fp8")
# through transformers' continuous batching (continuous.py); nf4: its NF4 weights read by a fused kernel (nf4.py);
# fp8: its weights converted to FP8 (fp8.py)
PAGED_ENGINES = ("continuous", "nf4", "fp8")
PAGED_ATTENTIONS = ("sdpa", "varlen")
# how the paged engines attend: transformers' paged SDPA (a dense mask over every reply's cache) or core/varlen.py;
# --paged_attention auto is varlen for them (the faster: bench/RESULTS.md)


def interpreting() -> bool:
    """This project's Triton kernels (nf4.py, varlen.py) run under Triton's interpreter, on the CPU: set by
    TRITON_INTERPRET=1 before Triton is first imported (the CPU tests' own process)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
