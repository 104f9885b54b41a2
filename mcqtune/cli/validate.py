"""`mcq-tune validate`: the command line of mcqtune.data.questions."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from mcqtune.data.questions import describe, load_mcq_csv, overlap_lines
from mcqtune.errors import DataError, describe_os_error, one_line


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    status, loaded = 0, {}
    for path in args.path:
        try:
            frame = load_mcq_csv(path, require_answer=args.require_answer, encoding=args.encoding,
                                 number_rows=args.number_rows or args.require_answer)
        except (DataError, OSError) as err:  # one line per bad file; the other files are still checked
            print(f"error: {one_line(describe_os_error(err)) if isinstance(err, OSError) else err}", file=sys.stderr)
            status = 1
            continue
        loaded[path] = frame
        print(f"{path}: OK, {describe(frame)}; first question: {frame['question'].iat[0][:60]}")
    for line in overlap_lines(loaded):
        print(line)
    return status


def make_parser() -> argparse.ArgumentParser:
    validate = argparse.ArgumentParser(prog="mcq-tune validate", description="Check competition CSVs and summarise "
                                       "them; with a labelled and an unlabelled file, the test questions the training "
                                       "file also holds.")
    validate.add_argument("path", nargs="+", help="competition CSV files (training, validation, test)")
    validate.add_argument("--require-answer", action="store_true", help="every row must have an answer A-D")
    validate.add_argument("--encoding", default=None, help="decode with this encoding (e.g. gb18030, big5)")
    validate.add_argument("--number-rows", action="store_true",
                          help="accept a file without an ID column (row numbers become IDs)")
    return validate
