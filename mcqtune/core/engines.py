"""The ways reasoning replies are generated (infer.py --generation_engine; reasoning.generate_replies)."""

GENERATION_ENGINES = ("generate", "continuous", "nf4", "fp8")
# through transformers' continuous batching (continuous.py); nf4: its NF4 weights read by a fused kernel (nf4.py);
# fp8: its weights converted to FP8 (fp8.py)
PAGED_ENGINES = ("continuous", "nf4", "fp8")
PAGED_ATTENTIONS = ("sdpa", "varlen")
# how the paged engines attend: transformers' paged SDPA (a dense mask over every reply's cache) or core/varlen.py
