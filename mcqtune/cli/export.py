"""`mcq-tune export`: the command line of mcqtune.export.exporter."""

from __future__ import annotations

import logging
from typing import Sequence

from mcqtune.export.exporter import (
    choose_job,
    make_parser,
    refuse_unused_options,
    refuse_used_output_dir,
    require_inputs,
    run_job,
)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; a failure raises ExportError (or another UserError), which run_cli prints as one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)
    job = choose_job(args)
    refuse_unused_options(args, job)
    require_inputs(args, job)
    refuse_used_output_dir(args.output_dir)
    run_job(args, job)
    return 0
