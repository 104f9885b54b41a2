"""Generating replies, shared by every job that generates (infer's reasoning, traces, GRPO's validation): weights
made for decoding (FP8)."""
