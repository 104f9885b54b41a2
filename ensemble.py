"""Fuse the letter probabilities of several runs into one submission (the same command as `mcq-tune ensemble`).

    python ensemble.py runs/a_run runs/b_run --output_file submission.csv

The code is mcqtune.ensemble.
"""

import sys

from mcqtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["ensemble", *sys.argv[1:]]))
