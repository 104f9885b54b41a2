"""Write the project's sample questions (train.csv, test.csv, test_no_answer.csv), or the hard testbed."""

from __future__ import annotations

import argparse

from mcqtune.data.sample import EASY_ROWS, HARD_ROWS, HardSettings, write_sample


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="the folder the CSV files go to")
    parser.add_argument("--train", type=int, default=None, help=f"training rows (default {EASY_ROWS[0]}; "
                                                                 f"--hard: {HARD_ROWS[0]})")
    parser.add_argument("--test", type=int, default=None, help=f"test rows (default {EASY_ROWS[1]}; --hard: "
                                                                f"{HARD_ROWS[1]})")
    parser.add_argument("--seed", type=int, default=7, help="which questions are drawn, and in what order")
    parser.add_argument("--hard", action="store_true", help="the testbed where a tiny model stays below 100%%")
    parser.add_argument("--noise", type=float, default=HardSettings.noise, help="--hard: share of training "
                        "answers replaced by another letter")
    parser.add_argument("--a_share", type=float, default=HardSettings.a_share, help="--hard: share of training "
                        "answers that are A")
    parser.add_argument("--near_miss", type=float, default=HardSettings.near_miss, help="--hard: share of "
                        "distractors in a neighbouring subject's vocabulary")
    args = parser.parse_args(argv)
    problems = [f"--{name} must be between 0 and 1, got {getattr(args, name)}"
                for name in ("noise", "a_share", "near_miss") if not 0 <= getattr(args, name) <= 1]
    if problems:
        parser.error("; ".join(problems))
    rows = HARD_ROWS if args.hard else EASY_ROWS
    hard = HardSettings(args.noise, args.a_share, args.near_miss) if args.hard else None
    paths = write_sample(args.out_dir, args.train or rows[0], args.test or rows[1], args.seed, hard)
    for path in paths.values():
        print(f"wrote {path}")
    return 0
