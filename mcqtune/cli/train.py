"""`mcq-tune train`: the command line of mcqtune.train.sft."""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from mcqtune.errors import ConfigError, parse_with
from mcqtune.model.loading import peek_backend, select_backend
from mcqtune.train import sft
from mcqtune.train.options import check_requested, make_parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    check_requested(argv)
    backend = select_backend(peek_backend(argv))
    script_args, training_args = parse_with(make_parser(), argv, ConfigError)
    sft.run(script_args, training_args, backend)
    return 0
