"""GRPO's prompts: every question in rounds, each round with its options shuffled so the label's letter is
spread evenly over A-D; the prompt text and ids come from the one prompt builder (data/questions.py)."""

from __future__ import annotations

import hashlib
import math
import random

import pandas as pd

from mcqtune.data.option_orders import permute_options
from mcqtune.data.questions import ANSWER_COLUMN, ID_COLUMN, LETTERS, PromptStyle
from mcqtune.model.prompts import encode_prompts_checked

ROUND_COLUMN, ORDER_COLUMN = "round", "order"


def _key(seed: int, round_: int, id_: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{round_}:{id_}".encode()).digest()[:8], "little")


def shuffled_round(frame: pd.DataFrame, round_: int, seed: int) -> pd.DataFrame:
    """Every row once, its options reordered (the label follows its text): rows in a seeded order are given the
    answer letters A, B, C, D, A, ... in turn, the other three options a seeded order. Each letter is the label
    of a quarter of the rows (to within one), whatever the file's own letter shares."""
    order_of_rows = sorted(range(len(frame)), key=lambda i: _key(seed, round_, str(frame[ID_COLUMN].iloc[i])))
    rows: dict[int, dict] = {}
    for place, i in enumerate(order_of_rows):
        row = frame.iloc[i]
        rng = random.Random(_key(seed, round_, f"others:{row[ID_COLUMN]}"))
        target, source = place % 4, LETTERS.index(row[ANSWER_COLUMN])
        others = [k for k in range(4) if k != source]
        rng.shuffle(others)
        order = others[:target] + [source] + others[target:]
        new = permute_options(row, order)
        new[ROUND_COLUMN], new[ORDER_COLUMN] = round_, "".join(LETTERS[k] for k in order)
        rows[i] = new
    return pd.DataFrame([rows[i] for i in range(len(frame))])


def rounds_needed(rows: int, epochs: float, max_steps: int, prompts_per_step: int) -> int:
    """Enough shuffled rounds for the training length asked for (``max_steps`` when > 0, else ``epochs``)."""
    wanted = max_steps * prompts_per_step if max_steps > 0 else math.ceil(epochs * rows)
    return max(1, math.ceil(wanted / max(rows, 1)))


def shuffled_rounds(frame: pd.DataFrame, rounds: int, seed: int) -> pd.DataFrame:
    return pd.concat([shuffled_round(frame, r, seed) for r in range(rounds)], ignore_index=True)


def prompt_records(tokenizer, frame: pd.DataFrame, style: PromptStyle,
                   max_prompt_tokens: int) -> tuple[list[dict], dict[str, list[int]], int]:
    """One record per row for TRL (the prompt as text, the options and label the reward reads), the token ids of
    each prompt text (GRPO generates from exactly these ids, infer.py's), and how many questions were shortened."""
    ids, shortened = encode_prompts_checked(tokenizer, frame, style, max_prompt_tokens)
    texts = [tokenizer.decode(x, skip_special_tokens=False) for x in ids]
    by_text: dict[str, list[int]] = {}
    for text, prompt in zip(texts, ids):
        if by_text.setdefault(text, prompt) != prompt:
            raise ValueError(f"two prompts read the same but have other token ids: {text[:80]!r}")
    keep = [c for c in frame.columns if c not in ("prompt",)]
    records = [{"prompt": text, **{c: str(v) for c, v in row.items()}}
               for text, row in zip(texts, frame[keep].to_dict("records"))]
    return records, by_text, shortened
