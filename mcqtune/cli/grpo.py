"""`mcq-tune grpo`: the command line of mcqtune.grpo.run."""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from mcqtune.errors import CONTINUE_AGAIN, RESUME_TO_CONTINUE, ConfigError, parse_with, set_continue_hint
from mcqtune.grpo import run as grpo_run
from mcqtune.grpo.options import make_parser
from mcqtune.model.loading import peek_backend, select_backend


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    backend = select_backend(peek_backend(argv))
    args, training_args = parse_with(make_parser(), argv, ConfigError)
    set_continue_hint(CONTINUE_AGAIN if args.resume else RESUME_TO_CONTINUE)
    grpo_run.run(args, training_args, backend)
    return 0
