"""Exporting (`mcq-tune export`): merged 16-bit weights, GGUF (llama.cpp runs in a child process), model cards,
the lm-evaluation-harness task."""
