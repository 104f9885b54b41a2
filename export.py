"""Export a trained adapter: merged 16-bit weights, GGUF, a clean adapter, an lm-eval task (`mcq-tune export`).

    python export.py --adapter_path outputs/qwen2.5-14b-lora/adapter --format gguf --gguf_type q4_k_m \
        --output_dir exports/gguf

The code is mcqtune.export.
"""

import sys

from mcqtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
