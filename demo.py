"""The whole pipeline on a CPU in a few minutes: build, train, answer, compare before and after.

    python demo.py                      # or: bash scripts/demo.sh (installs the requirements first)

Builds a tiny random Qwen2 with the real Qwen2.5 tokenizer (offline), measures its accuracy on the
held-out sample questions (chance), fine-tunes it with train_sft.py's code path and configs/demo-cpu.yaml,
answers the held-out questions with infer.py's code path, and prints accuracy before and after. The real
recipe is the same two scripts with configs/qwen2.5-14b-4090.yaml and configs/infer-14b-4090.yaml.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from modeling import select_backend

ROOT = Path(__file__).resolve().parent
SAMPLE = ROOT / "data" / "sample"


def ensure_tiny_model(out: Path) -> Path:
    from tiny_qwen import write_tiny_qwen

    model_dir = out / "tiny-qwen"
    if not (model_dir / "config.json").is_file():
        write_tiny_qwen(model_dir)
    return model_dir


def answer(model_path: Path, out: Path, name: str) -> dict:
    import infer

    return infer.main(infer.InferArguments(test_file=str(SAMPLE / "test.csv"), model_path=str(model_path),
                                           output_file=str(out / f"{name}_submission.csv"),
                                           output_dir=str(out / f"{name}_report"), resume=False))


def train(model_dir: Path, out: Path, extra: list[str]) -> dict:
    import train_sft

    argv = ["--config", str(ROOT / "configs" / "demo-cpu.yaml"), "--model_name_or_path", str(model_dir),
            "--train_file", str(SAMPLE / "train.csv"), "--output_dir", str(out / "demo"), *extra]
    return train_sft.main(*train_sft.make_parser().parse_args_and_config(argv))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs", help="where the model, runs and reports go")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    select_backend("auto")
    out = Path(args.out)
    model_dir = ensure_tiny_model(out)
    before = answer(model_dir, out, "before")
    summary = train(model_dir, out, extra)
    after = answer(out / "demo" / "adapter", out, "demo")
    print()
    print(f"accuracy on {before['rows']} held-out questions: before training {before['accuracy']:.1%}, "
          f"after training {after['accuracy']:.1%} (chance 25%)")
    print(f"submission: {out / 'demo_submission.csv'}; report: {out / 'demo_report' / 'report.md'}; "
          f"training curves: {out / 'demo' / 'training_curves.png'}; adapter: {summary['outputs']['adapter']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
