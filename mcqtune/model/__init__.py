"""Loading models and tokenizers on either backend (Unsloth, transformers), LoRA, weight options, and where the
answer letter goes in a model's chat template."""
