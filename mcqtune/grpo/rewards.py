"""The rewards of GRPO on single-choice questions, read from the reply exactly as infer.py reads replies.

* ``correct``: 1 when the letter the reply commits to equals the label, else 0. The letter is the answer parser's
  (answer_parser.py), so a reply that hedges ("A or B"), names several letters, is empty, or did not finish within
  ``max_completion_length`` commits to nothing and earns 0: guessing several letters can never pay. A reasoning
  reply is read after its reasoning (core/reasoning.py), never from inside it.
* ``format``: 1 when the reply has the trained form -- a direct reply is one letter and nothing else; a reasoning
  reply finished, closed its thinking block, and ends with the answer prefix and one letter -- else 0. Off unless
  ``--format_reward_weight`` is above 0.

Every option order is shuffled per prompt before the model sees it (grpo/data.py), so the label's position
carries no signal either. Each step also logs the share of replies that committed to no letter
(``replies/no_letter``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from mcqtune.core.parser import ParsedAnswer, parse_answer_with_rule
from mcqtune.core.reasoning import THINK_CLOSE, conclusion, cut_at_stop, read_reply, thinking_open
from mcqtune.data.questions import ANSWER_PREFIX, LETTERS, OPTION_COLUMNS

CORRECT, FORMAT = "correct", "format"
PREFIXED_LETTER = re.compile(rf"^\s*{ANSWER_PREFIX[:-1]}[：:]\s*([A-D])\s*$")  # "答案：B" alone on its line


@dataclass(frozen=True)
class ReplyReader:
    """Completion token ids -> the letter they commit to (or None, with why), in the run's reply form."""

    tokenizer: object = field(repr=False)
    stop_ids: frozenset[int]
    reasoning: bool = False
    opened: bool = False  # the generation prompt itself opens the thinking block

    def text(self, completion_ids: Sequence[int]) -> tuple[str, bool]:
        ids, finished = cut_at_stop(completion_ids, self.stop_ids)
        return self.tokenizer.decode(ids, skip_special_tokens=False), finished

    def read(self, completion_ids: Sequence[int], options: Sequence[str] | None) -> ParsedAnswer:
        text, finished = self.text(completion_ids)
        if self.reasoning:
            return read_reply(text, options, finished, self.opened)
        if not finished:
            return ParsedAnswer(None, "unfinished:budget")
        return parse_answer_with_rule(text, options)

    def well_formed(self, completion_ids: Sequence[int]) -> bool:
        text, finished = self.text(completion_ids)
        if not finished:
            return False
        if not self.reasoning:
            return text.strip() in LETTERS
        if thinking_open(text, self.opened) or text.count(THINK_CLOSE) > 1:
            return False
        last, _ = conclusion(text)
        lines = [line for line in last.splitlines() if line.strip()]
        return bool(lines) and PREFIXED_LETTER.match(lines[-1]) is not None


def correct_rewards(reader: ReplyReader, completion_ids: Sequence[Sequence[int]], options: Sequence[Sequence[str]],
                    answers: Sequence[str]) -> tuple[list[float], int]:
    """1.0 for each reply whose letter equals its label, else 0.0; and how many replies named no letter."""
    letters = [reader.read(ids, opts).letter for ids, opts in zip(completion_ids, options)]
    return [float(letter is not None and letter == answer) for letter, answer in zip(letters, answers)], \
        sum(letter is None for letter in letters)


def reward_functions(reader: ReplyReader, with_format: bool) -> list[Callable]:
    """TRL reward functions (named ``correct`` and ``format``: TRL logs ``rewards/<name>/mean`` per step). They
    read the row's shuffled options and label from the batch's columns."""

    def correct(prompts, completions, completion_ids, answer, log_metric=None, **columns):
        options = list(zip(*(columns[c] for c in OPTION_COLUMNS)))
        rewards, silent = correct_rewards(reader, completion_ids, options, answer)
        if log_metric is not None:
            log_metric("replies/no_letter", silent / max(len(rewards), 1))
        return rewards

    def format(prompts, completions, completion_ids, **columns):  # noqa: A001  (the name TRL logs)
        return [float(reader.well_formed(ids)) for ids in completion_ids]

    return [correct, format] if with_format else [correct]
