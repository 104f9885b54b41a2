"""CPU testbed for distillation: one model trained on its labels against the same model trained with the 3-fold
ensemble's out-of-fold letter probabilities as a teacher (``train_sft.py --distill_from``).

    python bench/cpu_distill.py                  # writes bench/cpu_distill.json (its reading: bench/RESULTS.md)

The testbed of bench/cpu_levers.py (a tiny random Qwen2 with the real tokenizer, the hard sample, backend hf in 16
bits, 45 steps per run), per training seed: ``--folds 3`` (each training row answered by the fold model that did
not see it: oof_predictions.csv), then the single-model recipe with and without ``--distill_from`` that k-fold
folder; both answered by infer.py on the balanced test file. The folds' own average is reported beside them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_levers import (DATA_SEED, FOLDS, ROOT, STEPS, Runner, accuracy, children_cpu_seconds,  # noqa: E402
                        git_commit, infer_command, prepare, train_command)

OUTPUT = ROOT / "bench" / "cpu_distill.json"


def run_seed(run: Runner, paths: dict, seed: int, weight: float) -> dict:
    w = run.work / f"seed-{seed}"
    run(f"seed{seed}_train_kfold", *train_command(paths, seed, w / "cv", "--folds", FOLDS))
    run(f"seed{seed}_train_single", *train_command(paths, seed, w / "single"))
    run(f"seed{seed}_train_distilled", *train_command(paths, seed, w / "distilled", "--distill_from", w / "cv",
                                                      "--distill_weight", weight))
    out = {}
    for name, model in (("single", w / "single" / "adapter"), ("distilled", w / "distilled" / "adapter"),
                        ("kfold", w / "cv")):
        run(f"seed{seed}_infer_{name}", *infer_command(paths, model, w / f"{name}.csv"))
        out[name] = accuracy(w / f"{name}.csv", paths["test"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="outputs/cpu_distill")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--distill_weight", type=float, default=1.0)
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args(argv)
    started = time.time()
    run = Runner(Path(args.work_dir).resolve())
    paths = prepare(run, args.steps)
    per_seed = {seed: run_seed(run, paths, seed, args.distill_weight) for seed in args.seeds}
    runs = {name: {"accuracy": [round(per_seed[s][name], 4) for s in args.seeds],
                   "mean": round(statistics.fmean(per_seed[s][name] for s in args.seeds), 4)}
            for name in ("single", "distilled", "kfold")}
    results = {"what": "accuracy on the hard sample's balanced test file, tiny random Qwen2 (CPU), per training seed",
               "commit": git_commit(), "date": time.strftime("%Y-%m-%d"), "seeds": args.seeds, "data_seed": DATA_SEED,
               "steps": args.steps, "folds": FOLDS, "distill_weight": args.distill_weight,
               "cpu_distill_accuracy": runs["distilled"]["mean"], "cpu_single_accuracy": runs["single"]["mean"],
               "runs": runs, "total_seconds": round(time.time() - started, 1), "cpu_seconds": children_cpu_seconds(),
               "commands": {name: " ".join(command) for name, command in run.commands.items()}}
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: results[k] for k in ("cpu_distill_accuracy", "cpu_single_accuracy", "runs")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
