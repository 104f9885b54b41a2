"""Reinforcement from a correctness reward (GRPO) on single-choice questions: `mcq-tune grpo`, train_grpo.py."""
