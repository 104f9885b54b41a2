"""The competition CSV contract and the one prompt builder, under the product's public name.

    python mcq_dataset.py validate data/sample/train.csv --require-answer      # = mcq-tune validate ...
    from mcq_dataset import load_mcq_csv, build_messages, encode_prompt        # in a checkout

The code is mcqtune/data/questions.py.
"""

import sys

from mcqtune.cli import main
from mcqtune.data.questions import (ANSWER_COLUMN, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE, ID_COLUMN, LETTERS,
                                    OPTION_COLUMNS, REQUIRED_COLUMNS, SUBJECT_COLUMN, PromptOptions, PromptStyle,
                                    describe, has_answers, load_mcq_csv, normalize_answer)
from mcqtune.model.prompts import (build_messages, build_sft_records, encode_prompt, encode_prompts, render_chat,
                                   render_prompt, to_prompt_completion)
from mcqtune.errors import DataError

__all__ = ["ANSWER_COLUMN", "DEFAULT_SYSTEM_PROMPT", "DEFAULT_USER_TEMPLATE", "ID_COLUMN", "LETTERS", "OPTION_COLUMNS",
           "REQUIRED_COLUMNS", "SUBJECT_COLUMN", "DataError", "PromptOptions", "PromptStyle", "build_messages",
           "build_sft_records", "describe", "encode_prompt", "encode_prompts", "has_answers", "load_mcq_csv",
           "normalize_answer", "render_chat", "render_prompt", "to_prompt_completion"]

if __name__ == "__main__":
    sys.exit(main(["validate", *sys.argv[2:]] if sys.argv[1:2] == ["validate"] else ["validate", *sys.argv[1:]]))
