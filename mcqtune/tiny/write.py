"""Write a tiny random model with the real Qwen2.5 tokenizer: Qwen2.5 (the demo's) or another family.

    mcq-tune tiny outputs/tiny-qwen                      # usable as --model_name_or_path
    mcq-tune tiny outputs/tiny-llama --family llama3     # another family (families.py)
"""

from __future__ import annotations


