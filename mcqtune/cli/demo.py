"""Train and answer with a tiny random model on the CPU, before and after fine-tuning: no GPU, no download."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mcqtune.demo import answer, ensure_sample, ensure_tiny_model, train
from mcqtune.model.loading import select_backend


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
