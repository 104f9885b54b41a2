"""``python -m mcqtune`` is the `mcq-tune` command."""

import sys

from mcqtune.cli import main

sys.exit(main())
