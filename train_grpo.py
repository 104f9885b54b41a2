"""Reinforce a model on single-choice questions with GRPO (the same command as `mcq-tune grpo`).

    python train_grpo.py --config qwen2.5-14b-grpo-4090.yaml --train_file train.csv \
        --adapter outputs/qwen2.5-14b-lora/adapter --output_dir outputs/qwen2.5-14b-grpo
    python train_grpo.py --config demo-grpo-cpu.yaml --adapter outputs/demo/adapter
    python train_grpo.py --help                      # every option

The code is mcqtune.grpo (run.py: the command; rewards.py: the rewards; data.py: the shuffled prompts).
"""

import sys

from mcqtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["grpo", *sys.argv[1:]]))
