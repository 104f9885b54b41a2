"""The whole pipeline on a CPU in a few minutes (the same command as `mcq-tune demo`).

    python demo.py                  # or: bash scripts/demo.sh, which installs the requirements first

The code is mcqtune/demo.py.
"""

import sys

from mcqtune.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
