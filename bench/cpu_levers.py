"""CPU testbed: each leaderboard lever against one model, over several training seeds, on the hard sample.

    python bench/cpu_levers.py                    # writes bench/cpu_levers.json (its time: bench/RESULTS.md)
    python bench/cpu_levers.py --table            # the markdown table of bench/cpu_levers.json (bench/RESULTS.md)

Everything runs through the real command lines, as subprocesses, in ``--work_dir``: a tiny random Qwen2 with the
real tokenizer (``mcq-tune tiny``), the hard sample (``mcq-tune sample --hard``: near-miss distractors, label
noise, training answers skewed towards A, a balanced test file), then per training seed the configs/demo-cpu.yaml
recipe (backend hf, 16-bit base weights, a fixed number of steps) for

* ``single``: one model, ``infer.py`` on the test file (the reference every lever is compared with);
* ``letters``: the same training with ``--loss letters``;
* ``debias``: the single model with ``--debias_letters true``;
* ``permutations``: the single model over the four cyclic option orders (``--permutations 4``);
* ``kfold``: ``--folds 3``, the three fold adapters averaged by ``infer.py --model_path <cv dir>``;
* ``cascade``: the single model's answers, the least confident share answered again by the k-fold average;

and across seeds ``ensemble``: ``ensemble.py`` (mean of probabilities) over the single models of two
consecutive seeds, and ``ensemble_all`` over every seed's single model (one value). Accuracy is read from each
submission against the test file's answers. The data seed stays fixed, so the spread is that of training.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "bench" / "cpu_levers.json"
DATA_SEED = 7
STEPS = 45  # enough for the single model to pass chance on most seeds, few enough for the whole run's budget
EVAL_STEPS = 9  # validation (and a checkpoint) five times per run: the best one is kept, as in the recipe
FOLDS = 3
CASCADE_FRACTION = 0.3
ENV = {"HF_HUB_OFFLINE": "1", "UNSLOTH_DISABLE_STATISTICS": "1", "TOKENIZERS_PARALLELISM": "false"}
LEVERS = ("single", "letters", "debias", "permutations", "kfold", "cascade", "ensemble", "ensemble_all")
DESCRIPTIONS = {
    "single": "one model (demo-cpu recipe, answer loss)",
    "letters": "four-letter loss (`--loss letters`)",
    "debias": "letter-bias correction (`--debias_letters true`)",
    "permutations": "4 cyclic option orders (`--permutations 4`)",
    "kfold": f"{FOLDS}-fold, folds averaged (`--folds {FOLDS}`)",
    "cascade": f"cascade: least confident {CASCADE_FRACTION:.0%} answered again by the {FOLDS} folds",
    "ensemble": "ensemble of 2 seeds' single models (`ensemble.py`, mean)",
    "ensemble_all": "ensemble of every seed's single model",
}


class Runner:
    """Runs one CLI command, logs it to ``<work>/logs/<name>.log``, records the command and its seconds."""

    def __init__(self, work: Path):
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.commands: dict[str, list[str]] = {}
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, *args) -> float:
        command = [sys.executable, *map(str, args)]
        started = time.time()
        with (self.logs / f"{name}.log").open("w") as log:
            done = subprocess.run(command, cwd=ROOT, env={**os.environ, **ENV}, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.time() - started
        if done.returncode != 0:
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} failed (exit {done.returncode}): {' '.join(command)}\n{tail}")
        self.commands[name] = [Path(command[0]).name, *command[1:]]
        self.seconds[name] = round(seconds, 1)
        print(f"{name}: {seconds:.0f} s", flush=True)
        return seconds


def accuracy(submission: Path, test_file: Path) -> float:
    with test_file.open(encoding="utf-8") as handle:
        truth = {row["ID"]: row["answer"] for row in csv.DictReader(handle)}
    with submission.open(encoding="utf-8") as handle:
        answers = {row["ID"]: row["answer"] for row in csv.DictReader(handle)}
    if answers.keys() != truth.keys():
        raise RuntimeError(f"{submission} does not answer exactly the questions of {test_file}")
    return sum(answers[i] == truth[i] for i in truth) / len(truth)


def prepare(run: Runner, steps: int) -> dict:
    """The tiny model and the hard sample, made once for every seed; ``steps`` per training run."""
    paths = {"model": run.work / "tiny-qwen", "data": run.work / "data"}
    run("tiny_model", "-m", "mcqtune", "tiny", paths["model"])
    run("data", "-m", "mcqtune", "sample", paths["data"], "--hard", "--seed", DATA_SEED)
    return {**paths, "train": paths["data"] / "train.csv", "test": paths["data"] / "test.csv", "steps": steps}


def train_command(paths: dict, seed: int, out: Path, *extra) -> list:
    every = min(EVAL_STEPS, paths["steps"])
    return ["train_sft.py", "--config", "configs/demo-cpu.yaml", "--model_name_or_path", paths["model"],
            "--train_file", paths["train"], "--output_dir", out, "--backend", "hf", "--load_in_4bit", "false",
            "--seed", seed, "--max_steps", paths["steps"], "--eval_steps", every, "--save_steps", every, *extra]


def infer_command(paths: dict, model: Path, output: Path, *extra) -> list:
    return ["infer.py", "--model_path", model, "--test_file", paths["test"], "--output_file", output,
            "--backend", "hf", "--no_load_in_4bit", "--batch_size", 32, *extra]


def run_seed(run: Runner, paths: dict, seed: int) -> dict[str, float]:
    """Every lever of one training seed: accuracy on the test file by lever."""
    w = run.work / f"seed-{seed}"
    single, letters, cv = w / "single", w / "letters", w / "cv"
    run(f"seed{seed}_train_single", *train_command(paths, seed, single))
    run(f"seed{seed}_train_letters", *train_command(paths, seed, letters, "--loss", "letters"))
    run(f"seed{seed}_train_kfold", *train_command(paths, seed, cv, "--folds", FOLDS))
    answers = {
        "single": infer_command(paths, single / "adapter", w / "single.csv"),
        "letters": infer_command(paths, letters / "adapter", w / "letters.csv"),
        "debias": infer_command(paths, single / "adapter", w / "debias.csv", "--debias_letters", "true"),
        "permutations": infer_command(paths, single / "adapter", w / "permutations.csv", "--permutations", 4),
        "kfold": infer_command(paths, cv, w / "kfold.csv"),
        "cascade": infer_command(paths, cv, w / "cascade.csv", "--rescore", w / "single_run",
                                 "--rescore_fraction", CASCADE_FRACTION),
    }
    for lever, command in answers.items():  # in this order: the cascade reads the single model's run
        run(f"seed{seed}_infer_{lever}", *command)
    return {lever: accuracy(w / f"{lever}.csv", paths["test"]) for lever in answers}


def run_ensembles(run: Runner, paths: dict, seeds: list[int]) -> dict[str, list[float]]:
    """Seed ensembles of the single models: each seed with the next one, and all of them."""
    members = [run.work / f"seed-{s}" / "single_run" for s in seeds]
    pairs = []
    for i, seed in enumerate(seeds):
        out = run.work / f"ensemble-{seed}-{seeds[(i + 1) % len(seeds)]}.csv"
        run(f"ensemble_{seed}", "ensemble.py", members[i], members[(i + 1) % len(seeds)], "--output_file", out)
        pairs.append(accuracy(out, paths["test"]))
    out = run.work / "ensemble-all.csv"
    run("ensemble_all", "ensemble.py", *members, "--output_file", out)
    return {"ensemble": pairs, "ensemble_all": [accuracy(out, paths["test"])]}


def summarise(per_seed: dict[str, list[float]], single_mean: float) -> dict:
    out = {}
    for lever in LEVERS:
        values = per_seed[lever]
        mean = statistics.fmean(values)
        out[lever] = {"description": DESCRIPTIONS[lever], "accuracy": [round(v, 4) for v in values],
                      "mean": round(mean, 4), "std": round(statistics.stdev(values), 4) if len(values) > 1 else None,
                      "min": round(min(values), 4), "max": round(max(values), 4),
                      "vs_single": round(mean - single_mean, 4)}
    return out


def lever_seconds(seconds: dict[str, float], seeds: list[int]) -> dict[str, float | None]:
    """Mean seconds per seed of the commands a lever adds (training and answering)."""
    def mean_of(names):
        values = [seconds[n] for n in names if n in seconds]
        return round(statistics.fmean(values), 1) if values else None

    train = {"single": "train_single", "letters": "train_letters", "kfold": "train_kfold"}
    out = {}
    for lever in LEVERS[:6]:
        out[f"{lever}_infer"] = mean_of([f"seed{s}_infer_{lever}" for s in seeds])
        if lever in train:
            out[f"{lever}_train"] = mean_of([f"seed{s}_{train[lever]}" for s in seeds])
    out["ensemble"] = mean_of([f"ensemble_{s}" for s in seeds])
    return out


def children_cpu_seconds() -> float:
    """User + system CPU time of every command run so far (the cores they used, not the wall clock)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(usage.ru_utime + usage.ru_stime, 1)


def git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or None


def measure(work: Path, seeds: list[int], steps: int = STEPS) -> dict:
    started = time.time()
    run = Runner(work)
    paths = prepare(run, steps)
    per_seed: dict[str, list[float]] = {lever: [] for lever in LEVERS}
    for seed in seeds:
        for lever, value in run_seed(run, paths, seed).items():
            per_seed[lever].append(value)
    per_seed.update(run_ensembles(run, paths, seeds))
    single_mean = statistics.fmean(per_seed["single"])
    return {"what": "accuracy on the hard sample's balanced test file, tiny random Qwen2 (CPU), per training seed",
            "commit": git_commit(), "date": time.strftime("%Y-%m-%d"), "cpu_cores": os.cpu_count(),
            "seeds": seeds, "data_seed": DATA_SEED, "steps": steps, "eval_steps": min(EVAL_STEPS, steps), "folds": FOLDS,
            "cascade_fraction": CASCADE_FRACTION, "chance": 0.25,
            "levers": summarise(per_seed, single_mean), "seconds": lever_seconds(run.seconds, seeds),
            "total_seconds": round(time.time() - started, 1), "cpu_seconds": children_cpu_seconds(),
            "commands": {name: " ".join(command) for name, command in run.commands.items()}}


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def table(results: dict) -> str:
    """Markdown: one row per lever, mean and spread over seeds, the change against the single model."""
    lines = ["| lever | accuracy % (mean) | std | min-max | vs one model (points) | per seed |",
             "| --- | --- | --- | --- | --- | --- |"]
    for lever, row in results["levers"].items():
        delta = "" if lever == "single" else f"{100 * row['vs_single']:+.1f}"
        lines.append(f"| {row['description']} | {percent(row['mean'])} | {percent(row['std'])} | "
                     f"{percent(row['min'])}-{percent(row['max'])} | {delta} | "
                     f"{', '.join(percent(v) for v in row['accuracy'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="outputs/cpu_levers", help="models, data, runs and logs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", default=str(OUTPUT))
    parser.add_argument("--steps", type=int, default=STEPS, help="optimiser steps per training run (a smoke test: 2)")
    parser.add_argument("--table", action="store_true", help="print the table of --output and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.output).read_text())))
        return 0
    if len(args.seeds) < 2:
        parser.error("--seeds: at least two, for a spread and the seed ensembles")
    results = measure(Path(args.work_dir).resolve(), args.seeds, args.steps)
    Path(args.output).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(table(results))
    print(f"wrote {args.output} ({results['total_seconds'] / 60:.1f} minutes, "
          f"{results['cpu_seconds'] / 60:.1f} CPU minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
