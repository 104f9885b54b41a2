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

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd

from mcqtune.core.engines import PAGED_ENGINES
from mcqtune.core.parser import ParsedAnswer, parse_answer_with_rule
from mcqtune.data.questions import ANSWER_PREFIX, LETTERS, OPTION_COLUMNS
from mcqtune.model.prompts import THINK_OPEN, closing_letter_ids
from mcqtune.runs.predictions import score_record

THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class ReplyOptions:
    """What the reasoning replies need, and nothing else: infer.py builds it from its options (``of``), GRPO's
    validation from its own."""

    max_reasoning_tokens: int
    repetition_penalty: float = 1.0
    temperature: float = 0.0
    seed: int = 0
    generation_engine: str = "generate"
    paged_attention: str = "sdpa"
    kv_cache_dtype: str = "auto"
    async_batching: bool = False
    gpu_memory_gb: float | None = None
    samples: int = 1

    @classmethod
    def of(cls, args) -> "ReplyOptions":
        """The reply options among a command's parsed options (infer.py's, traces')."""
        import dataclasses

        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


CLOSING_TOKENS = 16  # room for closing_text's tokens after a reply that used its whole budget


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


def cut_at_stop(generated: Sequence[int], stop_ids: Sequence[int]) -> tuple[list[int], bool]:
    """The reply's tokens up to (not including) the first stop token, and whether it stopped by itself (the pad
    token is among the stop tokens, so a finished row's padding is cut too)."""
    ids = list(generated)
    for i, token in enumerate(ids):
        if token in stop_ids:
            return ids[:i], True
    return ids, False


def generate_replies(model, tokenizer, prompts: list[list[int]], budget: int, stop_ids: Sequence[int],
                     repetition_penalty: float, temperature: float = 0.0, seed: int | None = None,
                     engine: str = "generate", gpu_memory_gb: float | None = None, attention: str = "sdpa",
                     kv_cache_dtype: str = "auto", async_batching: bool = False) -> list[tuple[list[int], bool]]:
    """Replies of at most ``budget`` tokens, greedy or (``temperature`` > 0) sampled from ``seed``: each one's
    tokens and whether it stopped by itself. ``engine`` "continuous", "nf4" or "fp8": through continuous batching
    (continuous.py; for nf4 with the fused 4-bit kernel installed meanwhile, core/nf4.py; for fp8 the model's
    weights were converted once after loading, core/fp8.py); ``attention`` how they attend (core/varlen.py),
    ``kv_cache_dtype`` what their cache is kept in, ``async_batching`` whether steps overlap."""
    import torch

    from mcqtune.core.scoring import left_pad, model_device

    if engine in PAGED_ENGINES:
        from mcqtune.core.continuous import continuous_replies
        from mcqtune.core.nf4 import MAX_FUSED_ROWS, fused_nf4

        fused = engine == "nf4"
        with fused_nf4(model) if fused else contextlib.nullcontext():
            replies = continuous_replies(model, tokenizer, prompts, budget, stop_ids, temperature, seed, gpu_memory_gb,
                                         max_replies=MAX_FUSED_ROWS if fused else None, attention=attention,
                                         kv_cache_dtype=kv_cache_dtype, async_batching=async_batching)
        return [cut_at_stop(reply, stop_ids) for reply in replies]
    device = model_device(model)
    input_ids, attention_mask = left_pad(prompts, tokenizer.pad_token_id)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 \
        else {"do_sample": False}
    if temperature > 0:
        torch.manual_seed(seed or 0)
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                max_length=input_ids.shape[1] + budget, **sampling,
                                repetition_penalty=repetition_penalty, eos_token_id=list(stop_ids),
                                pad_token_id=tokenizer.pad_token_id, use_cache=True)
    return [cut_at_stop(row, stop_ids) for row in output[:, input_ids.shape[1]:].tolist()]


def batch_seed(seed: int, first_id: str) -> int:
    """The sampling seed of the batch that starts with question ``first_id``: the same batch gets the same
    replies whether the run is whole or resumed."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{first_id}".encode()).digest()[:4], "little")


def score_closed(model, tokenizer, sequences: list[list[int]]):
    """(n, 4) letter probabilities after each closed reply (prompt + reply + closing text)."""
    import torch

    from mcqtune.core.scoring import left_pad, letter_logits, model_device

    device = model_device(model)
    input_ids, attention_mask = left_pad(sequences, tokenizer.pad_token_id)
    with torch.inference_mode():
        logits = letter_logits(model, input_ids.to(device), attention_mask.to(device), closing_letter_ids(tokenizer))
    return torch.softmax(logits, dim=-1).cpu().numpy()


def reasoner(model, tokenizer, frame: pd.DataFrame, prompts, args: ReplyOptions, stop_ids: Sequence[int],
             opened: bool) -> Callable:
    """rows -> records: a reasoning reply per row, read after its reasoning, or closed and scored; with
    ``--samples N``, the vote of up to N sampled replies (``voter``)."""
    closing_letter_ids(tokenizer)  # refused before the first reply, not after it
    ids, options = frame["ID"].tolist(), frame[list(OPTION_COLUMNS)].values.tolist()

    def close(sequences: list[tuple[int, list[int], str]]):
        """(row, reply tokens, reply text) -> letter probabilities after the closed reply."""
        return score_closed(model, tokenizer, [
            prompts[i] + reply + tokenizer.encode(closing_text(text, opened), add_special_tokens=False)
            for i, reply, text in sequences]) if sequences else []

    def one_reply(rows: list[int], seed: int) -> list[dict]:
        replies = generate_replies(model, tokenizer, [prompts[i] for i in rows], args.max_reasoning_tokens,
                                   stop_ids, args.repetition_penalty, args.temperature, seed,
                                   args.generation_engine, args.gpu_memory_gb, args.paged_attention,
                                   args.kv_cache_dtype, args.async_batching)
        texts = [tokenizer.decode(reply, skip_special_tokens=False) for reply, _ in replies]
        parsed = [read_reply(text, options[i], finished, opened)
                  for i, text, (_, finished) in zip(rows, texts, replies)]
        unanswered = [k for k, p in enumerate(parsed) if p.letter is None]
        closed = dict(zip(unanswered, close([(rows[k], replies[k][0], texts[k]) for k in unanswered])))
        return [{**reasoning_record(ids[i], texts[k], parsed[k], len(replies[k][0]), closed.get(k)),
                 "_tokens": replies[k][0]} for k, i in enumerate(rows)]

    def compute(rows: list[int]) -> list[dict]:
        return [without_tokens(r) for r in one_reply(rows, batch_seed(args.seed, ids[rows[0]]))]

    return voter(ids, one_reply, close, args) if args.samples > 1 else compute


def without_tokens(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "_tokens"}


def can_still_lose(counts: dict[str, int], remaining: int) -> bool:
    """The leading letter could still be caught (or tied) by another with ``remaining`` votes to come."""
    ranked = sorted(counts.values(), reverse=True) + [0]
    return ranked[0] <= ranked[1] + remaining


def voter(ids: list[str], one_reply: Callable, close: Callable, args: ReplyOptions) -> Callable:
    """rows -> records: self-consistency. Each round samples one reply for every question still open (its seed from
    --seed, the batch and the round, so a resumed run draws the same replies); a reply votes for the letter it
    commits to, or, closed and scored, for its most probable letter. A question stops once its leading letter can
    no longer lose; after --samples rounds a tie goes to the tied letter with the highest closing letter
    probability summed over the question's replies (every reply closed and scored)."""
    from collections import Counter

    def compute(rows: list[int]) -> list[dict]:
        replies: dict[int, list[dict]] = {i: [] for i in rows}
        open_rows = list(rows)
        for round_ in range(args.samples):
            for i, record in zip(open_rows, one_reply(open_rows, batch_seed(args.seed, f"{ids[rows[0]]}#{round_}"))):
                replies[i].append(record)
            remaining = args.samples - round_ - 1
            open_rows = [i for i in open_rows if remaining and can_still_lose(
                Counter(r["answer"] for r in replies[i]), remaining)]
            if not open_rows:
                break
        return [vote_record(i, replies[i], close) for i in rows]

    return compute


def vote_record(row: int, replies: list[dict], close: Callable) -> dict:
    """A question answered by the vote of its replies: the count per letter in ``vote``, the first reply for the
    winning letter in ``raw``, every reply's tokens in ``reasoning_tokens``, how many replies were closed and
    scored (voting by their closing letters) in ``closed_replies``."""
    import numpy as np

    counts = {letter: sum(r["answer"] == letter for r in replies) for letter in LETTERS}
    top = max(counts.values())
    tied = [letter for letter in LETTERS if counts[letter] == top]
    record = {}
    if len(tied) > 1:
        probs = np.sum([r["probs"] if "probs" in r else p for r, p in zip(replies, close_each(row, replies, close))],
                       axis=0) / len(replies)
        winner = max(tied, key=lambda letter: probs[LETTERS.index(letter)])
        record = {"probs": [round(float(x), 6) for x in probs]}
    else:
        winner = tied[0]
    first = next(r for r in replies if r["answer"] == winner)
    return {"ID": first["ID"], "answer": winner, "source": "vote", **record, "raw": first["raw"],
            "rule": f"vote:{len(tied)}-way tie" if len(tied) > 1 else "vote",
            "reasoning_tokens": sum(r["reasoning_tokens"] for r in replies),
            "vote": " ".join(f"{letter}:{counts[letter]}" for letter in LETTERS),
            "closed_replies": sum(r["source"] == "reason_closed" for r in replies)}


def close_each(row: int, replies: list[dict], close: Callable) -> list:
    """Every reply's closing letter probabilities (a closed reply's were computed when it was scored)."""
    todo = [k for k, r in enumerate(replies) if "probs" not in r]
    computed = dict(zip(todo, close([(row, replies[k]["_tokens"], replies[k]["raw"]) for k in todo])))
    return [computed.get(k) for k in range(len(replies))]


def reasoning_record(id_: str, text: str, parsed: ParsedAnswer, tokens: int, closed_probs=None) -> dict:
    """A question answered by reasoning: the letter read after the reasoning, or the closed reply's scores."""
    reply = {"raw": text, "rule": parsed.rule, "reasoning_tokens": tokens}
    if closed_probs is not None:
        return {**score_record(id_, closed_probs, "reason_closed"), **reply}
    return {"ID": id_, "answer": parsed.letter, "source": "reason", **reply}
