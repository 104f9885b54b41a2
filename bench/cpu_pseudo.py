"""CPU testbed for pseudo-labels: one model trained on its labels against the same model trained with the test
questions that the 3-fold ensemble answered confidently as extra rows (``train_sft.py --pseudo_label_from``).

    python bench/cpu_pseudo.py                   # writes bench/cpu_pseudo.json (its reading: bench/RESULTS.md)

The testbed of bench/cpu_levers.py (a tiny random Qwen2 with the real tokenizer, the hard sample, backend hf in 16
bits, 45 steps per run), per training seed: ``--folds 3``, the fold folder answers the test file (its letter
probabilities are the pseudo-labels' source), then the single-model recipe with and without ``--pseudo_label_from``
that run at ``--threshold``; both answered by infer.py on the same test file (its answers are never read by
training: pseudo-labels carry the ensemble's letters).
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

OUTPUT = ROOT / "bench" / "cpu_pseudo.json"


def run_seed(run: Runner, paths: dict, seed: int, threshold: float) -> dict:
    w = run.work / f"seed-{seed}"
    run(f"seed{seed}_train_kfold", *train_command(paths, seed, w / "cv", "--folds", FOLDS))
    run(f"seed{seed}_infer_kfold", *infer_command(paths, w / "cv", w / "kfold.csv"))
    run(f"seed{seed}_train_single", *train_command(paths, seed, w / "single"))
    run(f"seed{seed}_train_pseudo", *train_command(paths, seed, w / "pseudo", "--pseudo_label_from", w / "kfold_run",
                                                   "--pseudo_label_file", paths["test"],
                                                   "--pseudo_label_threshold", threshold))
    out = {"kfold": accuracy(w / "kfold.csv", paths["test"])}
    for name in ("single", "pseudo"):
        run(f"seed{seed}_infer_{name}", *infer_command(paths, w / name / "adapter", w / f"{name}.csv"))
        out[name] = accuracy(w / f"{name}.csv", paths["test"])
    rows = json.loads((w / "pseudo" / "training_summary.json").read_text())["rows"]["train"]
    out["pseudo_rows"] = rows.get("by_source", {}).get("pseudo-labels", 0)
    out["pseudo_letters"] = rows.get("pseudo_label_letters")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="outputs/cpu_pseudo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args(argv)
    started = time.time()
    run = Runner(Path(args.work_dir).resolve())
    paths = prepare(run, args.steps)
    per_seed = {seed: run_seed(run, paths, seed, args.threshold) for seed in args.seeds}
    runs = {name: {"accuracy": [round(per_seed[s][name], 4) for s in args.seeds],
                   "mean": round(statistics.fmean(per_seed[s][name] for s in args.seeds), 4)}
            for name in ("single", "pseudo", "kfold")}
    results = {"what": "accuracy on the hard sample's balanced test file, tiny random Qwen2 (CPU), per training seed",
               "commit": git_commit(), "date": time.strftime("%Y-%m-%d"), "seeds": args.seeds, "data_seed": DATA_SEED,
               "steps": args.steps, "folds": FOLDS, "threshold": args.threshold,
               "pseudo_rows": [per_seed[s]["pseudo_rows"] for s in args.seeds],
               "pseudo_letters": [per_seed[s]["pseudo_letters"] for s in args.seeds],
               "cpu_pseudo_label_accuracy": runs["pseudo"]["mean"], "cpu_single_accuracy": runs["single"]["mean"],
               "runs": runs, "total_seconds": round(time.time() - started, 1), "cpu_seconds": children_cpu_seconds(),
               "commands": {name: " ".join(map(str, command)) for name, command in run.commands.items()}}
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: results[k] for k in ("cpu_pseudo_label_accuracy", "cpu_single_accuracy", "pseudo_rows",
                                              "runs")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
