"""Fine-tune a chat model on single-choice questions with LoRA (the same command as `mcq-tune train`).

    python train_sft.py --config qwen2.5-14b-4090.yaml --train_file train.csv --output_dir outputs/qwen2.5-14b-lora
    python train_sft.py --config demo-cpu.yaml --model_name_or_path outputs/tiny-qwen \
        --train_file data/sample/train.csv --output_dir outputs/demo
    python train_sft.py --help                      # every option

The code is mcqtune.train (sft.py: the command; run.py: one run; folds.py: k-fold).
"""

import sys

from mcqtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
