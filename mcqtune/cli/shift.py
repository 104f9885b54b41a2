"""`mcq-tune shift`: the command line of mcqtune.reporting.shift."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from mcqtune.data.overlap import describe_overlap, overlap
from mcqtune.data.questions import OPTION_COLUMNS, load_mcq_csv
from mcqtune.errors import DataError
from mcqtune.reporting.shift import make_parser, test_likeness, write_report


def main(argv: Sequence[str] | None = None) -> int:
    from mcqtune.errors import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)
    if args.folds < 2 or args.top < 1:
        raise ConfigError("--folds must be >= 2 and --top >= 1")
    train = load_mcq_csv(args.train_file, encoding=args.encoding)
    test = load_mcq_csv(args.test_file, encoding=args.encoding)
    for path, frame in ((args.train_file, train), (args.test_file, test)):
        if len(frame) < args.folds:
            raise DataError(path, f"{len(frame)} rows: too few for {args.folds}-fold cross-validation (lower --folds, "
                                  "or give more rows)")
    out_dir = Path(args.out_dir or Path(args.test_file).with_name(Path(args.test_file).stem + "_shift"))
    out_dir.mkdir(parents=True, exist_ok=True)
    auc, likeness = test_likeness(train, test, args.folds)
    shared = overlap(train, test, OPTION_COLUMNS)
    report = write_report(out_dir, args.train_file, args.test_file, train, auc, likeness, args.top, shared)
    print(f"AUC {auc:.3f}: {report['reading']}. Overlap: {describe_overlap(shared)}. Report: "
          f"{out_dir / 'shift_report.md'}")
    return 0
