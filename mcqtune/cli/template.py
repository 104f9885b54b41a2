"""`mcq-tune template`: the command line of mcqtune.model.prompts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from mcqtune.errors import UserError, parse_with
from mcqtune.data.questions import PromptOptions
from mcqtune.model.prompts import find_answer_slot


@dataclass
class SlotArguments(PromptOptions):
    model_name_or_path: str = field(default="", metadata={"help": "model directory or hub id whose tokenizer and "
                                                                  "chat template to check"})


def main(argv: Sequence[str] | None = None) -> int:
    from trl import TrlParser

    from mcqtune.model.loading import load_tokenizer

    (args,) = parse_with(TrlParser((SlotArguments,)), argv)
    if not args.model_name_or_path:
        raise UserError("--model_name_or_path is required")
    tokenizer = load_tokenizer(args.model_name_or_path, chat_template=args.chat_template)
    print(find_answer_slot(tokenizer, args.prompt_style).describe(tokenizer, args.prompt_style))
    return 0
