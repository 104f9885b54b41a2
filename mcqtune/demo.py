"""The whole pipeline on a CPU in a few minutes: build, train, answer, compare before and after.

    mcq-tune demo                       # or: python demo.py, or bash scripts/demo.sh (installs first)

Builds a tiny random Qwen2 with the real Qwen2.5 tokenizer (offline), measures its accuracy on the
held-out sample questions (chance), fine-tunes it with `mcq-tune train`'s code path and the demo-cpu.yaml config,
answers the held-out questions with `mcq-tune infer`'s code path, and prints accuracy before and after. The real
recipe is the same two commands with the qwen2.5-14b-4090.yaml and infer-14b-4090.yaml configs. The sample
questions are written by mcqtune.data.sample into <out>/sample (the same files as the checkout's data/sample/).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mcqtune.config_files import config_dir
from mcqtune.errors import UserError
from mcqtune.model.loading import select_backend


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
    from mcqtune.answering import infer

    return infer.main(infer.InferArguments(test_file=str(sample / "test.csv"), model_path=str(model_path),
                                           output_file=str(out / f"{name}_submission.csv"),
                                           output_dir=str(out / f"{name}_report"), resume=False))


def train(model_dir: Path, sample: Path, out: Path, extra: list[str]) -> dict:
    from mcqtune.train import sft as train_sft

    argv = ["--config", str(config_dir() / "demo-cpu.yaml"), "--model_name_or_path", str(model_dir),
            "--train_file", str(sample / "train.csv"), "--output_dir", str(out / "demo"), *extra]
    return train_sft.main(*train_sft.make_parser().parse_args_and_config(argv))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs", help="where the model, runs and reports go")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    select_backend("auto")
    out = Path(args.out)
    model_dir = ensure_tiny_model(out)
    sample = ensure_sample(out)
    before = answer(model_dir, sample, out, "before")
    summary = train(model_dir, sample, out, extra)
    after = answer(out / "demo" / "adapter", sample, out, "demo")
    print()
    print(f"accuracy on {before['rows']} held-out questions: before training {before['accuracy']:.1%}, "
          f"after training {after['accuracy']:.1%} (chance 25%)")
    print(f"submission: {out / 'demo_submission.csv'}; report: {out / 'demo_report' / 'report.md'}; "
          f"training curves: {out / 'demo' / 'training_curves.png'}; adapter: {summary['outputs']['adapter']}")
    return 0
