"""`mcq-tune infer`: the command line of mcqtune.infer.run."""

from __future__ import annotations

import logging
from typing import Sequence

from mcqtune.infer import run as infer_run
from mcqtune.infer.options import parse_args
from mcqtune.model.loading import peek_backend, select_backend


def main(argv: Sequence[str] | None = None) -> int:
    import json

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = select_backend(peek_backend(argv))
    report = infer_run.run(parse_args(argv), backend)
    print(json.dumps({k: report[k] for k in ("rows", "questions_per_second", "accuracy", "precision") if k in report}))
    return 0
