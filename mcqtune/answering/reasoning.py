"""Reasoning replies (``infer.py --mode reason``): the model reasons, then answers; the letter is read after the
reasoning, never from inside it, and a reply that commits to nothing is closed and scored.

The reply's form follows the template (data/questions.py ``reasoned_reply``): with the thinking switch on, a
``<think>`` block then ``答案：X``; without one, plain reasoning (asked for by the reasoning instruction) then a
last line ``答案：X``. How a reply becomes a letter:

* ``reason``        the reply finished within ``--max_reasoning_tokens`` and its conclusion -- the text after the
                    thinking block, or the plain reply's last line -- commits to one letter (answer_parser.py);
* ``reason_closed`` it did not (budget spent, thinking never closed, a hedge, no letter): the reasoning so far is
                    closed -- the thinking block ended, the answer prefix written -- and the letters A-D are scored
                    at that point, as score mode scores them after its prompt. Counted in report.json, with why.

The record keeps the reply, the rule or why it was closed, and the number of tokens generated.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Sequence

import pandas as pd

from mcqtune.answering.parser import ParsedAnswer, parse_answer_with_rule
from mcqtune.data.questions import ANSWER_PREFIX, LETTERS, OPTION_COLUMNS, PromptStyle
from mcqtune.model.chat_template import TemplateError
from mcqtune.runs.predictions import score_record

if TYPE_CHECKING:
    from mcqtune.answering.options import InferArguments

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CLOSING_TOKENS = 16  # room for closing_text's tokens after a reply that used its whole budget


def turn_style(style: PromptStyle) -> PromptStyle:
    """The direct-answer form of ``style``: where the template's turn ends (the stop tokens) is found with it."""
    return dataclasses.replace(style, enable_thinking=False, reasoning=False)


def closing_letter_ids(tokenizer) -> list[int]:
    """The token of each letter right after the answer prefix; refused unless each is one token of its own."""
    prefix = tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False)
    found = []
    for letter in LETTERS:
        ids = tokenizer.encode(ANSWER_PREFIX + letter, add_special_tokens=False)
        if ids[:len(prefix)] != prefix or len(ids) != len(prefix) + 1:
            raise TemplateError(f"the tokenizer does not write {ANSWER_PREFIX + letter!r} as the prefix then one "
                                "letter token, so a closed reasoning reply cannot be scored")
        found.append(ids[-1])
    if len(set(found)) != len(LETTERS):
        raise TemplateError("the letters A-D share a token after the answer prefix")
    return found


def opens_thinking(prompt_text: str) -> bool:
    """The generation prompt itself opens the thinking block (DeepSeek-R1-Distill's template does)."""
    return prompt_text.rstrip().endswith(THINK_OPEN)


def thinking_open(reply: str, opened: bool) -> bool:
    """The reply is still inside its thinking block."""
    if THINK_CLOSE in reply:
        return False
    return opened or THINK_OPEN in reply


def conclusion(reply: str) -> tuple[str, str]:
    """(the part of a reply that may commit to the answer, its name): after the thinking block, else the last
    non-empty line."""
    if THINK_CLOSE in reply:
        return reply.rsplit(THINK_CLOSE, 1)[1], "after_thinking"
    lines = [line for line in reply.splitlines() if line.strip()]
    return (lines[-1] if lines else ""), "last_line"


def read_reply(reply: str, options: Sequence[str] | None, finished: bool, opened: bool = False) -> ParsedAnswer:
    """The letter a reasoning reply commits to after its reasoning, or None with why (``unfinished:budget``,
    ``unfinished:thinking``, or the parser's reason)."""
    if not finished:
        return ParsedAnswer(None, "unfinished:budget")
    if thinking_open(reply, opened):
        return ParsedAnswer(None, "unfinished:thinking")
    text, where = conclusion(reply)
    parsed = parse_answer_with_rule(text, options)
    return ParsedAnswer(parsed.letter, f"{where}:{parsed.rule}")


def closing_text(reply: str, opened: bool) -> str:
    """What closes an unanswered reply: the thinking block's end if it is open, then the answer prefix."""
    return (f"\n{THINK_CLOSE}\n\n" if thinking_open(reply, opened) else "\n\n") + ANSWER_PREFIX


def reply_ids(generated: Sequence[int], stop_ids: Sequence[int], pad_id: int | None) -> tuple[list[int], bool]:
    """The reply's tokens up to (not including) the first stop token, and whether it stopped by itself."""
    ids = list(generated)
    for i, token in enumerate(ids):
        if token in stop_ids:
            return ids[:i], True
    while ids and pad_id is not None and ids[-1] == pad_id and pad_id not in stop_ids:
        ids.pop()
    return ids, False


def reasoner(model, tokenizer, frame: pd.DataFrame, prompts, args: InferArguments, stop_ids: Sequence[int],
             opened: bool) -> Callable:
    """rows -> records: a reasoning reply per row, read after its reasoning, or closed and scored."""
    import torch

    from mcqtune.answering.scoring import left_pad, letter_logits, model_device

    device = model_device(model)
    letter_ids = closing_letter_ids(tokenizer)
    ids, options = frame["ID"].tolist(), frame[list(OPTION_COLUMNS)].values.tolist()

    def close_and_score(rows: list[int], replies: dict[int, list[int]], texts: dict[int, str]) -> dict[int, list]:
        sequences = [prompts[i] + replies[i] + tokenizer.encode(closing_text(texts[i], opened),
                                                               add_special_tokens=False) for i in rows]
        input_ids, attention_mask = left_pad(sequences, tokenizer.pad_token_id)
        with torch.inference_mode():
            logits = letter_logits(model, input_ids.to(device), attention_mask.to(device), letter_ids)
        return dict(zip(rows, torch.softmax(logits, dim=-1).cpu().numpy()))

    def compute(rows: list[int]) -> list[dict]:
        input_ids, attention_mask = left_pad([prompts[i] for i in rows], tokenizer.pad_token_id)
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                    max_length=input_ids.shape[1] + args.max_reasoning_tokens, do_sample=False,
                                    repetition_penalty=args.repetition_penalty, eos_token_id=list(stop_ids),
                                    pad_token_id=tokenizer.pad_token_id, use_cache=True)
        replies, texts, parsed = {}, {}, {}
        for i, generated in zip(rows, output[:, input_ids.shape[1]:].tolist()):
            replies[i], finished = reply_ids(generated, stop_ids, tokenizer.pad_token_id)
            texts[i] = tokenizer.decode(replies[i], skip_special_tokens=False)
            parsed[i] = read_reply(texts[i], options[i], finished, opened)
        unanswered = [i for i in rows if parsed[i].letter is None]
        closed = close_and_score(unanswered, replies, texts) if unanswered else {}
        records = []
        for i in rows:
            reply = {"raw": texts[i], "rule": parsed[i].rule, "reasoning_tokens": len(replies[i])}
            if i in closed:
                records.append({**score_record(ids[i], closed[i], "reason_closed"), **reply})
            else:
                records.append({"ID": ids[i], "answer": parsed[i].letter, "source": "reason", **reply})
        return records

    return compute
