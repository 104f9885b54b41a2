"""Answer a competition test file and write submission.csv (ID,answer), resumably, with a report.

    python infer.py --model_path outputs/run/adapter --test_file test.csv --output_file submission.csv
    python infer.py --config configs/infer-14b-4090.yaml --mode generate

`--model_path` is a LoRA adapter directory (its base comes from adapter_config.json or `--base_model_id`),
a merged model directory, or a plain model. Modes:

* `score` (default): one forward pass per question; the answer is the letter A-D with the highest
  next-token logit at the answer position of the training prompt. Keeps the four probabilities.
* `generate`: greedy generation (Unsloth's fast path on the unsloth backend), read by `answer_parser`.
  A reply it cannot read is answered by `score` instead, and listed in the report with its text.
* `reason`: the model reasons (within `--max_reasoning_tokens`), then answers; the letter is read after the
  reasoning, and a reply that commits to nothing is closed and its letter scored (core/reasoning.py).

The run folder (`--output_dir`, default `<output_file stem>_run/`) is locked for the whole run: a second run
on it stops at once. Answers are checkpointed to `<run folder>/predictions.partial.jsonl` as they come, under
the run's identity (`runs/identity.py`: every option, the test file's bytes and decoding, the models by content,
the precision loaded, the chat template); the same command continues where an interrupted one stopped, and any
other run starts over (the old checkpoint kept as `*.stale`). A run that starts over first moves the earlier
submission and report into `<run folder>/previous-<time>/`, so a run that fails never leaves another run's
answers under its name. The run folder also receives `predictions.csv`, `report.json`, `report.md` and charts.

This file is the command line and the one answering loop; the option checks, model sources and run identity
are in `setup.py`, the ways the model is loaded in `loading.py`, what each mode computes in `modes.py` (reasoning
replies in `reasoning.py`, continuous batching in `continuous.py`), the run folder's files and the output assembly
in `outputs.py`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from mcqtune.infer.modes import (estimate_letter_prior_of, fill_unparsed, generator, reasoner_of,
                                    score_utilisation, scorer)
from mcqtune.model.prompts import PromptTooLong, find_answer_slot
from mcqtune.runs.distributed import agree_on, distributed_info, shard
from mcqtune.runs.provenance import models_by_content
from mcqtune.infer.outputs import (checkpoint_path, gather_answers, letter_distributions, lock_output_file,
                           set_aside_earlier_outputs, write_outputs)
from mcqtune.infer.setup import (adopt_training_prompt, check_answer_slot, check_args, check_engine,
                                    check_device_options, check_reply_room, expand_fold_run, load_request,
                                    resolve_paged_attention, run_identity_of, varlen_only_set)
from mcqtune.infer.options import InferArguments
from mcqtune.data.questions import load_mcq_csv
from mcqtune.core.engines import PAGED_ENGINES
from mcqtune.model.prompts import encode_prompts_checked
from mcqtune.reporting.meters import BatchClock, HostMemoryWatch
from mcqtune.model.loading import select_backend
from mcqtune.runs.folder import lock_run_folder

logger = logging.getLogger("infer")


# ------------------------------------------------------------------------------------------ answering


def plan_batches(prompts: Sequence[Sequence[int]], batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's share of fixed batches over *all* rows (longest first). The batches do not depend on
    the number of processes, only on the batch size: each question meets the same neighbours and padding on
    one GPU or many, so the answers are the same; a resumed run rebuilds the same batches too."""
    from mcqtune.core.scoring import length_sorted_batches

    return shard(length_sorted_batches([len(p) for p in prompts], batch_size), rank, world)


def answer_batches(batches: list[list[int]], ids: list[str], compute: Callable, store, progress,
                   clock: BatchClock) -> None:
    """The one answering loop: each batch not yet in the store is computed (split on out-of-memory) and stored."""
    from mcqtune.core.scoring import run_halving

    for batch in batches:
        if all(ids[i] in store.records for i in batch):
            continue
        store.add(clock.run(lambda rows: run_halving(compute, rows), batch))
        progress.update(len(batch))


def answer(model, tokenizer, frame: pd.DataFrame, prompts, args: InferArguments, batch_size: int, store,
           rank: int, world: int, prior=None) -> tuple[int, BatchClock]:
    """Answer this process's batches: how many were answered in this run, and the time each batch took."""
    from tqdm.auto import tqdm

    batches = plan_batches(prompts, batch_size, rank, world)
    ids = frame["ID"].tolist()
    mine = [ids[i] for batch in batches for i in batch]
    todo = sum(id_ not in store.records for id_ in mine)
    clock = BatchClock()
    compute = {"score": lambda: scorer(model, tokenizer, frame, prompts, args, prior),
               "generate": lambda: generator(model, tokenizer, frame, prompts, args),
               "reason": lambda: reasoner_of(model, tokenizer, frame, prompts, args)}[args.mode]()
    with tqdm(total=len(mine), initial=len(mine) - todo, unit="q", desc=args.mode, disable=rank != 0) as progress:
        answer_batches(batches, ids, compute, store, progress, clock)
    if args.mode == "generate":
        fill_unparsed(model, tokenizer, frame, args, batch_size, store)
    return todo, clock


# ------------------------------------------------------------------------------------------ main


def run(args: InferArguments, backend: str | None = None) -> dict:
    """Validate, lock the run folder, load, answer (resumably), write submission + predictions + report.

    Under torchrun / accelerate launch with N processes (one or several machines), the length-sorted batches
    are dealt out to the processes whole; each keeps its own checkpoint and rank 0 gathers every answer over
    the process group and writes one submission in input order, the same as a one-process run's.
    """
    args, kfold = expand_fold_run(dataclasses.replace(args))  # a copy: the caller's arguments stay as given
    check_args(args)  # the options as given, then as completed from the adapter's training record
    args, prompt = adopt_training_prompt(args)
    check_args(args)
    check_answer_slot(args)
    frame = load_mcq_csv(args.test_file, encoding=args.encoding, number_rows=args.number_rows)
    rank, world, _ = distributed_info()
    plan = None
    if args.rescore:
        from mcqtune.infer.cascade import Rescore

        from mcqtune.runs.identity import sha256_file

        plan = Rescore.plan(args.rescore, frame, args.rescore_fraction, sha256_file(args.test_file), args.test_file,
                            args.allow_bare_predictions)
        logger.info("rescore: answering the %d least confident of %d questions again", len(plan.ids), len(frame))
    with lock_run_folder(args.run_dir, rank, world), lock_output_file(args.output_file, rank), \
            HostMemoryWatch() as host:
        try:
            return answer_test_file(args, plan.rows() if plan else frame, backend, host, plan,
                                    {"kfold": kfold, "prompt_provenance": prompt})
        except PromptTooLong as err:
            trained = (prompt or {}).get("trained_max_prompt_tokens")
            if trained is not None and not args.prompt_mismatch_ok:  # a longer limit than training's is refused
                raise PromptTooLong(err.needed, err.limit, f" with --prompt_mismatch_ok true: the adapter was "
                                    f"trained at --max_prompt_tokens {trained} and never saw longer prompts") \
                    from None
            raise


def answer_test_file(args: InferArguments, frame: pd.DataFrame, backend: str | None, host, plan=None,
                     provenance: dict | None = None) -> dict:
    """Answer ``frame`` (the test file, or with a cascade ``plan`` its rows to answer again) and write the outputs."""
    import torch

    from mcqtune.core.batch_planning import auto_batch_size
    from mcqtune.infer.loading import load_inference_model
    from mcqtune.core.scoring import prefix_sharing
    from mcqtune.runs.predictions import PredictionStore

    started = time.time()
    rank, world, local_rank = distributed_info()
    backend = select_backend(backend or args.backend)
    check_engine(args.generation_engine, backend, world)
    check_device_options(args.kv_cache_dtype, args.async_batching)
    device_map = {"": local_rank} if world > 1 and torch.cuda.is_available() else None
    request = load_request(args, backend, device_map)
    needs_varlen = varlen_only_set(args)
    if args.mode == "reason" and (args.paged_attention == "varlen" or needs_varlen):
        from mcqtune.core.varlen import check_base

        check_base(request.base, needs_varlen[0][2] if needs_varlen else "--paged_attention sdpa")
    model, tokenizer, load_info = load_inference_model(request)
    resolve_paged_attention(args, model.config)
    if args.mode == "reason" and args.generation_engine == "fp8":
        model, load_info = weights_for_decoding(model, load_info)
    loaded = time.time()
    slot = find_answer_slot(tokenizer, args.prompt_style).describe(tokenizer, args.prompt_style)  # or refuse
    logger.info(slot)
    prompts, shortened = encode_prompts_checked(tokenizer, frame, args.prompt_style, args.max_prompt_tokens)
    check_reply_room(model.config, max(map(len, prompts), default=0), args)
    if shortened:  # once, every mode; counted in report.json
        logger.warning("%d of %d questions were longer than max_prompt_tokens %d and were shortened (their template "
                       "and options are kept whole)", shortened, len(frame), args.max_prompt_tokens)
    batch_size = agree_on(args.batch_size or auto_batch_size(model, max(map(len, prompts)), args), world)
    prior = agree_on(estimate_letter_prior_of(model, tokenizer, frame, prompts, args, batch_size), world)
    identity = run_identity_of(args, request, load_info, tokenizer, batch_size, prior)
    store = PredictionStore(checkpoint_path(args.run_dir, rank, world), identity, args.resume, frame["ID"])
    if rank == 0:
        set_aside_earlier_outputs(args, store)
    answered, clock = answer(model, tokenizer, frame, prompts, args, batch_size, store, rank, world, prior)
    store.close()
    records, answered = gather_answers(store, answered, world)
    if rank != 0:
        return {"rank": rank, "answered_this_run": answered}
    run = {"output_file": str(Path(args.output_file).resolve()),
           "test_file": args.test_file, "test_file_sha256": identity["test_file"]["bytes_sha256"],
           "model_path": args.model_path, "base_model": request.base,
           "adapters": [str(Path(a).resolve()) for a in ([request.adapter] if request.adapter else [])
                        + list(args.ensemble)],
           "models_by_content": models_by_content(identity), "mode": args.mode,
           "generation_engine": args.generation_engine if args.mode == "reason" else None,
           "paged_attention": args.paged_attention if args.mode == "reason" and args.generation_engine in PAGED_ENGINES
           else None,
           "kv_cache_dtype": args.kv_cache_dtype if args.mode == "reason" and args.generation_engine in PAGED_ENGINES
           else None,
           "async_batching": args.async_batching if args.mode == "reason" and args.generation_engine in PAGED_ENGINES
           else None,
           "samples": args.samples if args.mode == "reason" else None,
           "backend": request.weights.backend,
           "max_reasoning_tokens": args.max_reasoning_tokens if args.mode == "reason" else None,
           "max_new_tokens": args.max_new_tokens if args.mode == "generate" else None,
           "repetition_penalty": args.repetition_penalty if args.mode != "score" else None,
           "temperature": args.temperature if args.mode == "reason" else None,
           "seed": args.seed if args.temperature > 0 else None,
           **{k: v for k, v in (provenance or {}).items() if v},
           "batch_size": batch_size, "processes": world, **load_info, "restarted": store.restarted,
           "damaged_records_set_aside": store.damaged, "startup_seconds": round(loaded - started, 1),
           "answer_timing": clock.summary(), "answer_slot": slot, "questions_shortened": shortened,
           "shared_prefix": prefix_sharing(model, args.share_prefix) if args.mode == "score" else None,
           "score_mfu": score_utilisation(model, tokenizer, prompts, args, clock.summary()),
           **letter_distributions(records, prior)}
    return write_outputs(args, frame, records, run, answered=answered, host=host, started=started, loaded=loaded,
                         plan=plan)


def weights_for_decoding(model, load_info: dict):
    """``--generation_engine fp8``: the adapter merged and the decoder's linear layers held in FP8, once, before the
    first reply; report.json's precision says so."""
    from mcqtune.core.fp8 import to_fp8

    model, converted = to_fp8(model)
    return model, {**load_info, "precision": f"FP8 e4m3 (per-row scales, {converted} layers, adapter merged) from "
                                             f"{load_info['precision']}"}


