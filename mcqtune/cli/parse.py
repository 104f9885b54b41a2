"""`mcq-tune parse`: the command line of mcqtune.core.parser."""

from __future__ import annotations

from typing import Sequence

from mcqtune.core.parser import build_arg_parser, parse_answer_with_rule


def main(argv: Sequence[str]) -> int:
    args = build_arg_parser().parse_args(list(argv))  # no TEXT: usage on stderr, exit 2
    for text in args.texts:
        parsed = parse_answer_with_rule(text, args.options)
        if parsed.letter:
            print(f"{parsed.letter}  (rule: {parsed.rule})")
        else:
            print(f"-  (unparsed: {parsed.rule.split(':', 1)[1]})")
    return 0
