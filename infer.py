"""Answer a competition test file and write submission.csv (ID,answer), resumably, with a report.

    python infer.py --model_path outputs/run/adapter --test_file test.csv --output_file submission.csv
    python infer.py --config configs/infer-14b-4090.yaml --mode generate

`--model_path` is a LoRA adapter directory (its base comes from adapter_config.json or `--base_model_id`),
a merged model directory, or a plain model. Modes:

* `score` (default): one forward pass per question; the answer is the letter A-D with the highest
  next-token logit at the answer position of the training prompt. Keeps the four probabilities.
* `generate`: greedy generation (Unsloth's fast path on the unsloth backend), read by `answer_parser`.
  A reply it cannot read is answered by `score` instead, and listed in the report with its text.

The run folder (`--output_dir`, default `<output_file stem>_run/`) is locked for the whole run: a second run
on it stops at once. Answers are checkpointed to `<run folder>/predictions.partial.jsonl` as they come, under
the run's identity (`run_identity.py`: every option, the test file's bytes and decoding, the models by content,
the precision loaded, the chat template); the same command continues where an interrupted one stopped, and any
other run starts over (the old checkpoint kept as `*.stale`). A run that starts over first moves the earlier
submission and report into `<run folder>/previous-<time>/`, so a run that fails never leaves another run's
answers under its name. The run folder also receives `predictions.csv`, `report.json`, `report.md` and charts.

This file is the command line and the one answering loop; the option checks, model sources and run identity
are in `infer_setup.py`, the ways the model is loaded in `infer_loading.py`, what each mode computes in
`answer_modes.py`, the run folder's files and the output assembly in `infer_outputs.py`.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from answer_modes import estimate_letter_prior_of, fill_unparsed, generator, score_utilisation, scorer
from chat_template import find_answer_slot
from cli import ConfigError, parse_with, run_cli
from distributed import agree_on, distributed_info, shard
from infer_outputs import (checkpoint_path, gather_answers, letter_distributions, lock_output_file,
                           set_aside_earlier_outputs, write_outputs)
from infer_setup import check_args, expand_fold_run, load_request, run_identity_of
from mcq_dataset import PromptOptions, encode_prompts, load_mcq_csv
from meters import BatchClock, HostMemoryWatch
from model_options import InferenceWeightOptions
from modeling import peek_backend, select_backend
from run_folder import lock_run_folder

logger = logging.getLogger("infer")


# Dataclass fields (and --help) follow the bases in reverse: the prompt's, the weights', then these.
@dataclass
class InferArguments(InferenceWeightOptions, PromptOptions):
    test_file: str = field(default="", metadata={"help": "competition CSV (ID,question,option_A..D[,answer])"})
    model_path: str = field(default="", metadata={"help": "adapter directory, merged model or base model"})
    base_model_id: str | None = field(default=None, metadata={"help": "base model of an adapter (default: "
                                                                      "the one in adapter_config.json)"})
    output_file: str = field(default="submission.csv", metadata={"help": "where ID,answer goes"})
    output_dir: str | None = field(default=None, metadata={"help": "predictions, report, checkpoint "
                                                                   "(default: <output_file stem>_run/)"})
    mode: str = field(default="score", metadata={"help": "score | generate", "choices": ["score", "generate"]})
    batch_size: int | None = field(default=None, metadata={"help": "default: from the GPU memory this process may "
                                                                   "use (see gpu_memory_gb)"})
    gpu_memory_gb: float | None = field(default=None, metadata={"help": "GPU memory to plan the batch for (default: "
                                                                        "the card's, within any process cap)"})
    max_new_tokens: int = field(default=48, metadata={"help": "generate mode: reply length limit"})
    repetition_penalty: float = field(default=1.1, metadata={"help": "generate mode"})
    permutations: int = field(default=1, metadata={"help": "score mode: average over N cyclic option orders (1-4)"})
    share_prefix: bool = field(default=True, metadata={"help": "score mode: compute the prompt start shared by all "
                                                              "questions once (same answers, less compute; "
                                                              "bench/RESULTS.md)"})
    debias_letters: bool = field(default=False, metadata={"help": "score mode: divide out the model's preference "
                                                                    "for some letters, estimated from the four cyclic "
                                                                    "option orders of debias_sample test questions "
                                                                    "(PriDe); report.json shows both distributions"})
    debias_sample: int = field(default=64, metadata={"help": "questions the letter prior is estimated on"})
    rescore: str | None = field(default=None, metadata={"help": "cascade: a finished score-mode run of this test "
                                                                "file (run folder or predictions.csv); answer only "
                                                                "its least confident rows, keep its other answers"})
    rescore_fraction: float = field(default=0.2, metadata={"help": "with --rescore: the share of rows (smallest "
                                                                   "margin between the top two letters) answered "
                                                                   "again"})
    ensemble: list[str] = field(default_factory=list, metadata={"help": "more adapter directories to average "
                                                                        "(score mode)"})
    resume: bool = field(default=True, metadata={"help": "continue from the checkpoint of an identical run"})
    encoding: str | None = field(default=None, metadata={"help": "CSV encoding if not UTF-8 (gb18030, big5)"})
    number_rows: bool = field(default=False, metadata={"help": "the test file has no ID column: use row numbers "
                                                                 "0..N-1 as IDs (check that the competition expects "
                                                                 "that)"})

    @property
    def run_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        out = Path(self.output_file)
        return out.with_name(out.stem + "_run")


# ------------------------------------------------------------------------------------------ answering


def plan_batches(prompts: Sequence[Sequence[int]], batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's share of fixed batches over *all* rows (longest first). The batches do not depend on
    the number of processes, only on the batch size: each question meets the same neighbours and padding on
    one GPU or many, so the answers are the same; a resumed run rebuilds the same batches too."""
    from scoring import length_sorted_batches

    return shard(length_sorted_batches([len(p) for p in prompts], batch_size), rank, world)


def answer_batches(batches: list[list[int]], ids: list[str], compute: Callable, store, progress,
                   clock: BatchClock) -> None:
    """The one answering loop: each batch not yet in the store is computed (split on out-of-memory) and stored."""
    from scoring import run_halving

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
    compute = scorer(model, tokenizer, frame, prompts, args, prior) if args.mode == "score" else \
        generator(model, tokenizer, frame, prompts, args)
    with tqdm(total=len(mine), initial=len(mine) - todo, unit="q", desc=args.mode, disable=rank != 0) as progress:
        answer_batches(batches, ids, compute, store, progress, clock)
    if args.mode == "generate":
        fill_unparsed(model, tokenizer, frame, args, batch_size, store)
    return todo, clock


# ------------------------------------------------------------------------------------------ main


def main(args: InferArguments, backend: str | None = None) -> dict:
    """Validate, lock the run folder, load, answer (resumably), write submission + predictions + report.

    Under torchrun / accelerate launch with N processes (one or several machines), the length-sorted batches
    are dealt out to the processes whole; each keeps its own checkpoint and rank 0 gathers every answer over
    the process group and writes one submission in input order, the same as a one-process run's.
    """
    args = expand_fold_run(args)
    check_args(args)
    frame = load_mcq_csv(args.test_file, encoding=args.encoding, number_rows=args.number_rows)
    rank, world, _ = distributed_info()
    plan = None
    if args.rescore:
        from cascade import Rescore

        plan = Rescore.plan(args.rescore, frame, args.rescore_fraction)
        logger.info("rescore: answering the %d least confident of %d questions again", len(plan.ids), len(frame))
    with lock_run_folder(args.run_dir, rank, world), lock_output_file(args.output_file, rank), \
            HostMemoryWatch() as host:
        return answer_test_file(args, plan.rows() if plan else frame, backend, host, plan)


def answer_test_file(args: InferArguments, frame: pd.DataFrame, backend: str | None, host, plan=None) -> dict:
    """Answer ``frame`` (the test file, or with a cascade ``plan`` its rows to answer again) and write the outputs."""
    import torch

    from batch_planning import auto_batch_size
    from infer_loading import load_inference_model
    from prediction_store import PredictionStore

    started = time.time()
    rank, world, local_rank = distributed_info()
    backend = select_backend(backend or args.backend)
    device_map = {"": local_rank} if world > 1 and torch.cuda.is_available() else None
    request = load_request(args, backend, device_map)
    model, tokenizer, load_info = load_inference_model(request)
    loaded = time.time()
    slot = find_answer_slot(tokenizer, args.prompt_style).describe(tokenizer, args.prompt_style)  # or refuse
    logger.info(slot)
    prompts = encode_prompts(tokenizer, frame, args.prompt_style, args.max_prompt_tokens)  # once, every mode
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
    run = {"test_file": args.test_file, "test_file_sha256": identity["test_file"]["bytes_sha256"],
           "model_path": args.model_path, "base_model": request.base,
           "adapters": ([request.adapter] if request.adapter else []) + list(args.ensemble), "mode": args.mode,
           "batch_size": batch_size, "processes": world, **load_info, "restarted": store.restarted,
           "damaged_records_set_aside": store.damaged, "startup_seconds": round(loaded - started, 1),
           "answer_timing": clock.summary(), "answer_slot": slot,
           "score_mfu": score_utilisation(model, tokenizer, prompts, args, clock.summary()),
           **letter_distributions(records, prior)}
    return write_outputs(args, frame, records, run, answered=answered, host=host, started=started, loaded=loaded,
                         plan=plan)


def make_parser():
    from trl import TrlParser

    return TrlParser((InferArguments,))


def parse_args(argv: Sequence[str] | None) -> InferArguments:
    (args,) = parse_with(make_parser(), argv, ConfigError)
    return args


def cli_main(argv: Sequence[str] | None = None) -> int:
    import json

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = select_backend(peek_backend(argv))
    report = main(parse_args(argv), backend)
    print(json.dumps({k: report[k] for k in ("rows", "questions_per_second", "accuracy", "precision") if k in report}))
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    return run_cli(cli_main, argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
