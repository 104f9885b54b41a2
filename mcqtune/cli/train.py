"""`mcq-tune train`: the command line of mcqtune.train.sft."""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from mcqtune.errors import CONTINUE_AGAIN, RESUME_TO_CONTINUE, ConfigError, parse_with, set_continue_hint
from mcqtune.model.loading import peek_backend, select_backend
from mcqtune.train import sft
from mcqtune.train.options import check_requested, make_parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    check_requested(argv)
    backend = select_backend(peek_backend(argv))
    script_args, training_args = parse_with(make_parser(), argv, ConfigError)
    set_continue_hint(CONTINUE_AGAIN if script_args.resume else RESUME_TO_CONTINUE if script_args.folds <= 1 else
                      f"{CONTINUE_AGAIN} (finished folds are kept; add --resume true to continue the interrupted "
                      "fold from its last checkpoint)")
    sft.run(script_args, training_args, backend)
    return 0
