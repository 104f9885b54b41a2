"""CPU testbed for GRPO: does reinforcement from the correctness reward add anything after a short SFT?

    python bench/cpu_grpo.py                     # writes bench/cpu_grpo.json (its reading: bench/RESULTS.md)

The same testbed as bench/cpu_levers.py (a tiny random Qwen2 with the real tokenizer, the hard sample, backend
hf with 16-bit weights), through the real command lines. Per training seed:

* ``sft``: train_sft.py with configs/demo-cpu.yaml for ``--sft_steps`` steps, then ``--extra_sft_steps`` more in the
  same run (``--max_steps`` the sum): the SFT that sees as many more questions as GRPO does;
* ``grpo``: train_sft.py for ``--sft_steps`` steps, then train_grpo.py (configs/demo-grpo-cpu.yaml) from that
  adapter for ``--grpo_steps`` steps of 4 questions x 4 replies each.

``--extra_sft_steps`` defaults to the questions GRPO sees (grpo_steps x 4) over SFT's 16 questions a step. Both
are answered by infer.py (letter scoring) on the balanced test file; accuracy from the submissions.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_levers import (DATA_SEED, ROOT, Runner, accuracy, children_cpu_seconds, git_commit,  # noqa: E402
                        infer_command, prepare, train_command)

OUTPUT = ROOT / "bench" / "cpu_grpo.json"
SFT_STEPS, GRPO_STEPS = 30, 30
GRPO_QUESTIONS_PER_STEP, SFT_QUESTIONS_PER_STEP = 4, 16  # demo-grpo-cpu.yaml (16 replies / 4), demo-cpu.yaml


def grpo_command(paths: dict, seed: int, adapter: Path, out: Path, steps: int, *extra) -> list:
    every = max(steps // 3, 1)
    return ["train_grpo.py", "--config", "configs/demo-grpo-cpu.yaml", "--model_name_or_path", paths["model"],
            "--train_file", paths["train"], "--output_dir", out, "--backend", "hf", "--load_in_4bit", "false",
            "--adapter", adapter, "--seed", seed, "--max_steps", steps, "--eval_steps", every, "--save_steps", every,
            *extra]


def run_seed(run: Runner, paths: dict, seed: int, sft_steps: int, extra: int, grpo_steps: int,
             temperature: float, learning_rate: float) -> dict:
    w = run.work / f"seed-{seed}"
    run(f"seed{seed}_sft_long", *train_command({**paths, "steps": sft_steps + extra}, seed, w / "sft_long"))
    run(f"seed{seed}_sft_short", *train_command({**paths, "steps": sft_steps}, seed, w / "sft_short"))
    run(f"seed{seed}_grpo", *grpo_command(paths, seed, w / "sft_short" / "adapter", w / "grpo", grpo_steps,
                                          "--temperature", temperature, "--learning_rate", learning_rate))
    out = {}
    for name, adapter in (("sft", w / "sft_long" / "adapter"), ("sft_short", w / "sft_short" / "adapter"),
                          ("grpo", w / "grpo" / "adapter")):
        run(f"seed{seed}_infer_{name}", *infer_command(paths, adapter, w / f"{name}.csv"))
        out[name] = accuracy(w / f"{name}.csv", paths["test"])
    rewards = json.loads((w / "grpo" / "training_summary.json").read_text())["rewards"]
    out["grpo_reward_first_last"] = [rewards[0]["rewards/correct/mean"], rewards[-1]["rewards/correct/mean"]]
    out["grpo_no_letter_first_last"] = [rewards[0]["replies/no_letter"], rewards[-1]["replies/no_letter"]]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="outputs/cpu_grpo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sft_steps", type=int, default=SFT_STEPS)
    parser.add_argument("--grpo_steps", type=int, default=GRPO_STEPS)
    parser.add_argument("--extra_sft_steps", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=1.0, help="GRPO's sampling temperature")
    parser.add_argument("--learning_rate", type=float, default=2e-3, help="GRPO's (demo-grpo-cpu.yaml's by default)")
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args(argv)
    extra = args.extra_sft_steps if args.extra_sft_steps is not None else \
        math.ceil(args.grpo_steps * GRPO_QUESTIONS_PER_STEP / SFT_QUESTIONS_PER_STEP)
    started = time.time()
    run = Runner(Path(args.work_dir).resolve())
    paths = prepare(run, args.sft_steps)
    per_seed = {seed: run_seed(run, paths, seed, args.sft_steps, extra, args.grpo_steps, args.temperature,
                               args.learning_rate) for seed in args.seeds}
    summary = {name: {"accuracy": [round(per_seed[s][name], 4) for s in args.seeds],
                      "mean": round(statistics.fmean(per_seed[s][name] for s in args.seeds), 4)}
               for name in ("sft", "sft_short", "grpo")}
    results = {"what": "accuracy on the hard sample's balanced test file, tiny random Qwen2 (CPU), per training seed",
               "commit": git_commit(), "date": time.strftime("%Y-%m-%d"), "seeds": args.seeds, "data_seed": DATA_SEED,
               "sft_steps": args.sft_steps, "extra_sft_steps": extra, "grpo_steps": args.grpo_steps,
               "grpo_temperature": args.temperature, "grpo_learning_rate": args.learning_rate,
               "questions_seen_after_sft": {"sft": extra * SFT_QUESTIONS_PER_STEP,
                                            "grpo": args.grpo_steps * GRPO_QUESTIONS_PER_STEP},
               "cpu_grpo_accuracy": summary["grpo"]["mean"], "cpu_sft_accuracy": summary["sft"]["mean"],
               "runs": summary, "per_seed": {str(s): v for s, v in per_seed.items()},
               "total_seconds": round(time.time() - started, 1), "cpu_seconds": children_cpu_seconds(),
               "commands": {name: " ".join(command) for name, command in run.commands.items()}}
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: results[k] for k in ("cpu_grpo_accuracy", "cpu_sft_accuracy", "runs")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
