"""Read the answer letter (A-D) from a model's free-text reply, under the product's public name.

    python answer_parser.py "经过分析，正确答案是（Ｃ）。"      # prints: C  (= mcq-tune parse ...)
    from answer_parser import parse_answer                    # in a checkout

The code is mcqtune/core/parser.py (its phrase tables: grammar.py).
"""

import sys

from mcqtune.core.parser import ParsedAnswer, clean_reply, parse_answer, parse_answer_with_rule
from mcqtune.cli import main

__all__ = ["ParsedAnswer", "clean_reply", "parse_answer", "parse_answer_with_rule"]

if __name__ == "__main__":
    sys.exit(main(["parse", *sys.argv[1:]]))
