"""Tiny random models with the real Qwen2.5 tokenizer (and other families' tokens and templates), built offline
for the tests and the demo."""
