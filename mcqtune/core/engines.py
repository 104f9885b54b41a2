"""The ways reasoning replies are generated (infer.py --generation_engine; reasoning.generate_replies)."""

GENERATION_ENGINES = ("generate", "continuous", "fp8")
PAGED_ENGINES = ("continuous", "fp8")  # through transformers' continuous batching (continuous.py); fp8: FP8 weights
