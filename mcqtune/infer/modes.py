"""How each mode turns rows into answer records, for infer.py's one answering loop.

* ``scorer``: the letter probabilities at the answer position (averaged over option orders and adapters),
  divided by the letter prior when ``--debias_letters`` estimated one (``estimate_letter_prior_of``).
* ``generator``: greedy replies read by ``answer_parser``; ``fill_unparsed`` then answers the replies with no
  readable letter by letter scoring, keeping their text for the report.
* ``reasoner_of``: reasoning replies (reasoning.py), read after the reasoning or closed and scored.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

import pandas as pd

from mcqtune.model.prompts import stop_token_ids
from mcqtune.infer.setup import adapter_names
from mcqtune.data.questions import OPTION_COLUMNS
from mcqtune.data.option_orders import cyclic_orders
from mcqtune.runs.predictions import score_record

if TYPE_CHECKING:
    from mcqtune.infer.options import InferArguments

logger = logging.getLogger(__name__)


def scorer(model, tokenizer, frame: pd.DataFrame, prompts, args: InferArguments, prior=None) -> Callable:
    """rows -> records: the letter probabilities (averaged over permutations and adapters), divided by the
    letter ``prior`` when one is given (the uncorrected ones are kept beside them)."""
    from mcqtune.core.scoring import batch_scorer, combine_orders

    orders = cyclic_orders(args.permutations)
    _, compute = batch_scorer(model, tokenizer, frame, args.prompt_style, args.max_prompt_tokens, orders,
                              adapter_names(args), args.share_prefix, prompts, per_order=True)
    ids = frame["ID"].tolist()

    def score(rows: list[int]) -> list[dict]:
        per_order = compute(rows)
        records = [score_record(ids[i], p) for i, p in zip(rows, combine_orders(per_order, orders, prior))]
        if prior is not None:
            for record, raw in zip(records, combine_orders(per_order, orders)):
                record["probs_uncorrected"] = [round(float(x), 6) for x in raw]
        return records

    return score


def estimate_letter_prior_of(model, tokenizer, frame: pd.DataFrame, prompts, args: InferArguments,
                             batch_size: int) -> list[float] | None:
    """--debias_letters: the model's letter prior over a seeded sample of this file's questions."""
    import random

    from mcqtune.core.scoring import batch_scorer, estimate_prior

    if not args.debias_letters:
        return None
    rows = sorted(random.Random(0).sample(range(len(frame)), min(args.debias_sample, len(frame))))
    _, compute = batch_scorer(model, tokenizer, frame, args.prompt_style, args.max_prompt_tokens, cyclic_orders(4),
                              adapter_names(args), args.share_prefix, prompts, per_order=True)
    prior = [round(float(x), 6) for x in estimate_prior(compute, rows, batch_size)]
    logger.info("letter prior over %d questions (A-D): %s", len(rows), prior)
    return prior


def generator(model, tokenizer, frame: pd.DataFrame, prompts, args: InferArguments) -> Callable:
    """rows -> records: greedy replies read by the answer parser (answer None when no letter is readable)."""
    import torch

    from mcqtune.core.parser import parse_answer_with_rule
    from mcqtune.core.scoring import left_pad, model_device

    device = model_device(model)
    stop_ids = stop_token_ids(tokenizer, model, args.prompt_style)  # the template's end of turn first
    ids, options = frame["ID"].tolist(), frame[list(OPTION_COLUMNS)].values.tolist()

    def compute(rows: list[int]) -> list[dict]:
        input_ids, attention_mask = left_pad([prompts[i] for i in rows], tokenizer.pad_token_id)
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                    max_length=input_ids.shape[1] + args.max_new_tokens, do_sample=False,
                                    repetition_penalty=args.repetition_penalty, eos_token_id=stop_ids,
                                    pad_token_id=tokenizer.pad_token_id, use_cache=True)
        replies = tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True)
        records = []
        for i, reply in zip(rows, replies):
            parsed = parse_answer_with_rule(reply, options[i])
            records.append({"ID": ids[i], "answer": parsed.letter, "raw": reply, "rule": parsed.rule,
                            "source": "generate"})
        return records

    return compute


def reasoner_of(model, tokenizer, frame: pd.DataFrame, prompts, args: InferArguments) -> Callable:
    """rows -> records: reasoning replies read after their reasoning, or closed and scored (reasoning.py)."""
    from mcqtune.core.reasoning import ReplyOptions, reasoner
    from mcqtune.model.prompts import opens_thinking
    from mcqtune.model.prompts import render_prompt
    from mcqtune.model.prompts import PROBE_ROW

    stop_ids = stop_token_ids(tokenizer, model, args.prompt_style)  # the direct form's end of turn
    opened = opens_thinking(render_prompt(tokenizer, PROBE_ROW, args.prompt_style))
    return reasoner(model, tokenizer, frame, prompts, ReplyOptions.of(args), stop_ids, opened)


def score_utilisation(model, tokenizer, prompts, args: InferArguments, timing: dict) -> dict:
    """Model-FLOP utilisation of the steady scoring batches (mfu.py): the tokens each question needs computed
    (its prompt, less the shared template prefix computed once), at the steady questions per second."""
    from mcqtune.reporting.mfu import utilisation
    from mcqtune.core.scoring import SharedPrefix, keeps_keys_values, template_prefix

    if args.mode != "score":
        return {"mfu": None, "reason": f"{args.mode} mode"}
    shared = args.share_prefix and keeps_keys_values(model)
    prefix = len(template_prefix(tokenizer, args.prompt_style)) if shared else 0
    prefix = prefix if prefix >= SharedPrefix.MIN_TOKENS else 0
    mean_tokens = sum(len(p) for p in prompts) / max(len(prompts), 1) - prefix
    qps = timing.get("steady_questions_per_second")
    return {**utilisation(qps * mean_tokens * args.permutations if qps else None, model.config, training=False,
                          sequence=round(mean_tokens + prefix)),
            "computed_tokens_per_question": round(mean_tokens, 1)}


def fill_unparsed(model, tokenizer, frame: pd.DataFrame, args: InferArguments, batch_size: int, store) -> None:
    """Rows whose reply had no readable letter are answered by letter scoring, and keep their reply text."""
    from mcqtune.core.scoring import score_frame

    missing = [r for r in store.records.values() if r["answer"] is None]
    if not missing:
        return
    logger.warning("%d replies had no readable letter; answering them by letter scoring", len(missing))
    sub = frame[frame["ID"].isin([r["ID"] for r in missing])]
    probs = score_frame(model, tokenizer, sub, args.prompt_style, batch_size, args.max_prompt_tokens,
                        share_prefix=args.share_prefix)
    store.add([{**store.records[id_], **score_record(id_, p, "score_fallback")} for id_, p in zip(sub["ID"], probs)])

