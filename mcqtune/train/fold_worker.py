"""One fold of a k-fold run, as a child process of the k-fold driver (train/folds.py): the options arrive as JSON
on standard input, the fold trains in this process, and the exit status says how it went (the same one-line
errors as `mcq-tune train`). Not a command for users: ``mcq-tune train --folds K --fold i`` trains one fold.
"""

from __future__ import annotations

import json
import logging
import sys

from mcqtune.errors import run_cli
from mcqtune.model.loading import select_backend


def main(argv=None) -> int:
    payload = json.loads(sys.stdin.read())
    backend = select_backend(payload["backend"])  # before trl / transformers are imported
    from trl import SFTConfig

    from mcqtune.train.folds import train_folds
    from mcqtune.train.options import ScriptArguments

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_folds(ScriptArguments(**payload["script_args"]), SFTConfig(**payload["training_args"]), backend)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
