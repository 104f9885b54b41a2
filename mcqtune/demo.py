"""The whole pipeline on a CPU in a few minutes: build, train, answer, compare before and after.

    mcq-tune demo                       # or: python demo.py, or bash scripts/demo.sh (installs first)

Builds a tiny random Qwen2 with the real Qwen2.5 tokenizer (offline), measures its accuracy on the
held-out sample questions (chance), fine-tunes it with `mcq-tune train`'s code path and the demo-cpu.yaml config,
answers the held-out questions with `mcq-tune infer`'s code path, and prints accuracy before and after. The real
recipe is the same two commands with the qwen2.5-14b-4090.yaml and infer-14b-4090.yaml configs. The sample
questions are written by mcqtune.data.sample into <out>/sample (the same files as the checkout's data/sample/).
"""

from __future__ import annotations

from pathlib import Path

from mcqtune.config_files import config_dir
from mcqtune.errors import UserError


def ensure_tiny_model(out: Path) -> Path:
    from mcqtune.tiny.qwen import write_tiny_qwen

    model_dir = out / "tiny-qwen"
    if (model_dir / "tiny_qwen.json").is_file():  # written last: the folder is whole
        return model_dir
    if model_dir.exists() and any(model_dir.iterdir()):
        raise UserError(f"{model_dir} holds an incomplete model (an earlier write was interrupted); remove that "
                        "folder and run the demo again")
    return write_tiny_qwen(model_dir)


def ensure_sample(out: Path) -> Path:
    from mcqtune.data.sample import write_sample

    sample = out / "sample"
    if not (sample / "test.csv").is_file():
        write_sample(sample)
    return sample


def answer(model_path: Path, sample: Path, out: Path, name: str) -> dict:
    from mcqtune.infer import run as infer

    return infer.run(infer.InferArguments(test_file=str(sample / "test.csv"), model_path=str(model_path),
                                           output_file=str(out / f"{name}_submission.csv"),
                                           output_dir=str(out / f"{name}_report"), resume=False))


def train(model_dir: Path, sample: Path, out: Path, extra: list[str]) -> dict:
    from mcqtune.train import sft as train_sft
    from mcqtune.train.options import make_parser

    argv = ["--config", str(config_dir() / "demo-cpu.yaml"), "--model_name_or_path", str(model_dir),
            "--train_file", str(sample / "train.csv"), "--output_dir", str(out / "demo"), *extra]
    return train_sft.run(*make_parser().parse_args_and_config(argv))
