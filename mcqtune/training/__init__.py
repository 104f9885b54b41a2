"""What the SFT and GRPO jobs share: options, starting a run in its folder, checkpoints, trainer pieces."""
