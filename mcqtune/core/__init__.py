"""What every job shares: letter scoring, the reply parser and its grammar, reasoning replies and their engines
(generate, continuous batching, FP8 weights), batch planning, the letter prior."""
