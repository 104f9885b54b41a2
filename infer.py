"""Answer a competition test file and write submission.csv (the same command as `mcq-tune infer`).

    python infer.py --config infer-14b-4090.yaml --model_path outputs/qwen2.5-14b-lora/adapter \
        --test_file test.csv --output_file submission.csv
    python infer.py --help                          # every option

The code is mcqtune.infer (infer.py: the command and the answering loop).
"""

import sys

from mcqtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
