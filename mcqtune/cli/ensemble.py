"""`mcq-tune ensemble`: the command line of mcqtune.ensemble.fuse."""

from __future__ import annotations

import json
import logging
from typing import Sequence

from mcqtune.ensemble.fuse import ensemble, parse_args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = ensemble(parse_args(argv))
    summary = {"rows": report["rows"], "method": report["method"], "weights": report["weights"]}
    if report["ensemble"]["accuracy"]:
        summary["accuracy"] = report["ensemble"]["accuracy"]["accuracy"]
    print(json.dumps(summary, ensure_ascii=False))
    return 0
