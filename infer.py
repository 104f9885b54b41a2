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
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from cli import UserError, parse_with, run_cli
from distributed import agree_on, distributed_info, gather_to_first, shard
from mcq_dataset import (LETTERS, OPTION_COLUMNS, PromptOptions, check_prompt_options, cyclic_orders, encode_prompts,
                         load_mcq_csv)
from modeling import BACKENDS, peek_backend, select_backend
from prediction_store import assemble_predictions, score_record
from run_folder import RunLock, lock_run_folder, same_file, set_aside, write_csv_atomic

logger = logging.getLogger("infer")

CHECKPOINT_NAME = "predictions.partial.jsonl"
# What a run writes into its folder besides the checkpoint: set aside together when a run starts over.
RUN_OUTPUTS = ("predictions.csv", "report.json", "report.md", "answer_distribution.png", "confusion_matrix.png",
               "accuracy_by_subject.png")


@dataclass
class InferArguments(PromptOptions):
    test_file: str = field(default="", metadata={"help": "competition CSV (ID,question,option_A..D[,answer])"})
    model_path: str = field(default="", metadata={"help": "adapter directory, merged model or base model"})
    base_model_id: str | None = field(default=None, metadata={"help": "base model of an adapter (default: "
                                                                      "the one in adapter_config.json)"})
    output_file: str = field(default="submission.csv", metadata={"help": "where ID,answer goes"})
    output_dir: str | None = field(default=None, metadata={"help": "predictions, report, checkpoint "
                                                                   "(default: <output_file stem>_run/)"})
    mode: str = field(default="score", metadata={"help": "score | generate", "choices": ["score", "generate"]})
    backend: str = field(default="auto", metadata={"help": "auto | unsloth | hf", "choices": list(BACKENDS)})
    batch_size: int | None = field(default=None, metadata={"help": "default: from the GPU memory this process may "
                                                                   "use (see gpu_memory_gb)"})
    gpu_memory_gb: float | None = field(default=None, metadata={"help": "GPU memory to plan the batch for (default: "
                                                                        "the card's, within any process cap)"})
    load_in_4bit: bool = field(default=True, metadata={"help": "NF4 weights (the default)"})
    load_in_8bit: bool = field(default=False, metadata={"help": "8-bit weights instead of 4-bit (twice the memory)"})
    offload: bool = field(default=False, metadata={"help": "spread the weights over GPU and CPU memory (slow)"})
    fallback_ladder: bool = field(default=False, metadata={"help": "if loading fails, try 8-bit, then 16-bit with "
                                                                   "CPU offload (recorded in report.json)"})
    allow_pickle: bool = field(default=False, metadata={"help": "load .bin (pickle) weights; they can run code"})
    max_new_tokens: int = field(default=48, metadata={"help": "generate mode: reply length limit"})
    repetition_penalty: float = field(default=1.1, metadata={"help": "generate mode"})
    permutations: int = field(default=1, metadata={"help": "score mode: average over N cyclic option orders (1-4)"})
    share_prefix: bool = field(default=True, metadata={"help": "score mode: compute the prompt start shared by all "
                                                              "questions once (same answers, ~1.4x faster)"})
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
    trust_remote_code: bool = field(default=False, metadata={"help": "run code shipped with the model"})
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


class ConfigError(UserError):
    """A bad option, found before the model is loaded."""


def check_args(args: InferArguments) -> None:
    """Every problem with the options in one sentence, before anything is loaded."""
    problems = check_prompt_options(args)
    if not args.test_file:
        problems.append("test_file is required")
    if not args.model_path:
        problems.append("model_path is required")
    if not 1 <= args.permutations <= 4:
        problems.append(f"permutations must be 1-4, got {args.permutations}")
    if args.batch_size is not None and args.batch_size < 1:
        problems.append("batch_size must be >= 1")
    if args.max_new_tokens < 1:
        problems.append("max_new_tokens must be >= 1")
    if args.mode == "generate" and (args.permutations > 1 or args.ensemble or args.debias_letters):
        problems.append("permutations, ensemble and debias_letters apply to score mode only")
    if args.rescore and (args.mode != "score" or not 0 < args.rescore_fraction <= 1):
        problems.append(f"rescore needs score mode and 0 < rescore_fraction <= 1, got {args.mode}, "
                        f"{args.rescore_fraction}")
    if args.debias_sample < 1:
        problems.append(f"debias_sample must be >= 1, got {args.debias_sample}")
    problems += output_problems(args)
    if problems:
        raise ConfigError("; ".join(problems))


def output_problems(args: InferArguments) -> list[str]:
    """The submission and the run folder must never overwrite an input."""
    out = Path(args.output_file)
    problems = []
    if not out.resolve().parent.is_dir():
        problems.append(f"the folder of output_file does not exist: {out.resolve().parent}")
    if out.is_dir():
        problems.append(f"output_file {out} is a folder; name a .csv file")
    written = [out] + [args.run_dir / name for name in (CHECKPOINT_NAME, *RUN_OUTPUTS)]
    rescored = [str(Path(args.rescore) / "predictions.csv") if Path(args.rescore).is_dir() else args.rescore] \
        if args.rescore else []
    for source in [args.test_file, args.model_path, *args.ensemble, *rescored]:
        if source and any(same_file(target, source) for target in written):
            problems.append(f"output_file / output_dir would overwrite the input {source}; write elsewhere")
    return problems


# ------------------------------------------------------------------------------------------ model


def resolve_sources(model_path: str, base_model_id: str | None = None) -> tuple[str, str | None]:
    """(base model, adapter or None) from --model_path / --base_model_id."""
    from modeling import check_model_source, is_adapter_dir, resolve_adapter_base

    check_model_source(model_path)
    if not is_adapter_dir(model_path):
        return model_path, None
    return base_model_id or resolve_adapter_base(model_path), model_path


def load_request(args: InferArguments, backend: str, device_map=None):
    from modeling import InferenceLoad

    base, adapter = resolve_sources(args.model_path, args.base_model_id)
    for extra in args.ensemble:
        resolve_sources(extra)
    return InferenceLoad(base=base, adapter=adapter, ensemble=list(args.ensemble), backend=backend,
                         load_in_4bit=args.load_in_4bit and not args.load_in_8bit, load_in_8bit=args.load_in_8bit,
                         offload=args.offload, fallback_ladder=args.fallback_ladder, allow_pickle=args.allow_pickle,
                         trust_remote_code=args.trust_remote_code, chat_template=args.chat_template,
                         max_seq_length=args.max_prompt_tokens + args.max_new_tokens, device_map=device_map)


def expand_fold_run(args: InferArguments) -> InferArguments:
    """``--model_path`` of a k-fold training run (fold-*/adapter inside): every fold's adapter, averaged."""
    import dataclasses

    from cross_validation import fold_adapters

    folder = Path(args.model_path) if args.model_path else None
    if folder is None or not folder.is_dir() or (folder / "config.json").is_file() \
            or (folder / "adapter_config.json").is_file():
        return args
    adapters = [str(a) for a in fold_adapters(folder)]
    if not adapters:
        return args
    logger.info("%s is a k-fold run: answering with the average of its %d fold adapters", folder, len(adapters))
    return dataclasses.replace(args, model_path=adapters[0], ensemble=adapters[1:] + list(args.ensemble))


def adapter_names(args: InferArguments) -> list[str | None]:
    if not args.ensemble:
        return [None]
    return ["default"] + [f"ensemble_{n}" for n in range(len(args.ensemble))]


def run_identity_of(args: InferArguments, request, load_info: dict, tokenizer, batch_size: int,
                    letter_prior=None) -> dict:
    """Everything that decides the answers (run_identity.inference_identity), the letter prior included."""
    import answer_parser
    from run_identity import adapter_identity, inference_identity, model_identity, sha256_file

    return inference_identity(
        args, base=model_identity(request.base),
        adapter=adapter_identity(request.adapter) if request.adapter else None,
        ensemble=[adapter_identity(a) for a in args.ensemble], backend=request.backend, batch_size=batch_size,
        precision=load_info["precision"], tokenizer_template=tokenizer.chat_template,
        parser_sha256=sha256_file(answer_parser.__file__) if args.mode == "generate" else None,
        letter_prior=letter_prior)


# ------------------------------------------------------------------------------------------ the run folder


def checkpoint_path(run_dir: Path, rank: int, world: int) -> Path:
    return run_dir / (CHECKPOINT_NAME if world == 1 else f"predictions.partial.rank{rank}-of-{world}.jsonl")


def set_aside_earlier_outputs(args: InferArguments, store) -> None:
    """A run that does not continue the checkpoint moves the earlier submission and report out of the way first."""
    if not store.resumed:
        set_aside(args.run_dir, [Path(args.output_file).resolve(), *RUN_OUTPUTS],
                  "outputs of an earlier run (this run does not continue its answers)")


# ------------------------------------------------------------------------------------------ answering


def plan_batches(prompts: Sequence[Sequence[int]], batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's share of fixed batches over *all* rows (longest first). The batches do not depend on
    the number of processes, only on the batch size: each question meets the same neighbours and padding on
    one GPU or many, so the answers are the same; a resumed run rebuilds the same batches too."""
    from scoring import length_sorted_batches

    return shard(length_sorted_batches([len(p) for p in prompts], batch_size), rank, world)


class BatchClock:
    """Seconds per answered batch, so the report can tell the first batches (kernel compilation for new
    shapes, the longest prompts) from the steady rate. Each batch ends with its results on the host, so
    the GPU work is inside its time."""

    WARMUP_BATCHES = 2

    def __init__(self):
        self.batches: list[tuple[int, float]] = []

    def run(self, compute, batch: list[int]):
        started = time.perf_counter()
        result = compute(batch)
        self.batches.append((len(batch), time.perf_counter() - started))
        return result

    def summary(self) -> dict:
        warm, steady = self.batches[:self.WARMUP_BATCHES], self.batches[self.WARMUP_BATCHES:]
        rows, seconds = sum(n for n, _ in steady), sum(t for _, t in steady)
        return {"batches": len(self.batches), "warmup_batches": len(warm),
                "warmup_seconds": round(sum(t for _, t in warm), 2),
                "steady_questions_per_second": round(rows / seconds, 2) if seconds > 0 else None}


def scorer(model, tokenizer, frame: pd.DataFrame, prompts, args: InferArguments, prior=None) -> Callable:
    """rows -> records: the letter probabilities (averaged over permutations and adapters), divided by the
    letter ``prior`` when one is given (the uncorrected ones are kept beside them)."""
    from scoring import batch_scorer, combine_orders

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

    from scoring import batch_scorer, estimate_prior

    if not args.debias_letters:
        return None
    rows = sorted(random.Random(0).sample(range(len(frame)), min(args.debias_sample, len(frame))))
    _, compute = batch_scorer(model, tokenizer, frame, args.prompt_style, args.max_prompt_tokens, cyclic_orders(4),
                              adapter_names(args), args.share_prefix, prompts, per_order=True)
    prior = [round(float(x), 6) for x in estimate_prior(compute, rows, batch_size)]
    logger.info("letter prior over %d questions (A-D): %s", len(rows), prior)
    return prior


def letter_distributions(records: dict[str, dict], prior) -> dict:
    """For report.json: the prior and the answers' letters without the correction (the corrected ones are the
    report's answer_distribution)."""
    if prior is None:
        return {}
    uncorrected = [LETTERS[max(range(4), key=r["probs_uncorrected"].__getitem__)] for r in records.values()]
    return {"letter_prior": prior,
            "answer_distribution_uncorrected": {k: uncorrected.count(k) for k in LETTERS}}


def generator(model, tokenizer, frame: pd.DataFrame, prompts, args: InferArguments) -> Callable:
    """rows -> records: greedy replies read by the answer parser (answer None when no letter is readable)."""
    import torch

    from answer_parser import parse_answer_with_rule
    from scoring import left_pad, model_device

    device = model_device(model)
    stop_ids = [tokenizer.eos_token_id] + ([tokenizer.pad_token_id] if tokenizer.pad_token_id is not None else [])
    ids, options = frame["ID"].tolist(), frame[list(OPTION_COLUMNS)].values.tolist()

    def compute(rows: list[int]) -> list[dict]:
        input_ids, attention_mask = left_pad([prompts[i] for i in rows], tokenizer.pad_token_id)
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                    max_new_tokens=args.max_new_tokens, do_sample=False,
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


def answer_batches(batches: list[list[int]], ids: list[str], compute: Callable, store, progress,
                   clock: BatchClock) -> None:
    """The one answering loop: each batch not yet in the store is computed (split on out-of-memory) and stored."""
    from scoring import run_halving

    for batch in batches:
        if all(ids[i] in store.records for i in batch):
            continue
        store.add(clock.run(lambda rows: run_halving(compute, rows), batch))
        progress.update(len(batch))


def fill_unparsed(model, tokenizer, frame: pd.DataFrame, args: InferArguments, batch_size: int, store) -> None:
    """Rows whose reply had no readable letter are answered by letter scoring, and keep their reply text."""
    from scoring import score_frame

    missing = [r for r in store.records.values() if r["answer"] is None]
    if not missing:
        return
    logger.warning("%d replies had no readable letter; answering them by letter scoring", len(missing))
    sub = frame[frame["ID"].isin([r["ID"] for r in missing])]
    probs = score_frame(model, tokenizer, sub, args.prompt_style, batch_size, args.max_prompt_tokens,
                        share_prefix=args.share_prefix)
    store.add([{**store.records[id_], **score_record(id_, p, "score_fallback")} for id_, p in zip(sub["ID"], probs)])


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


# ------------------------------------------------------------------------------------------ outputs


def gather_answers(store, answered: int, world: int) -> tuple[dict[str, dict] | None, int]:
    """Rank 0 receives every rank's answers over the process group (no shared filesystem needed)."""
    parts = gather_to_first((store.records, answered), world)
    if parts is None:
        return None, answered
    records = {}
    for part, _ in parts:
        records.update(part)
    return records, sum(n for _, n in parts)


# ------------------------------------------------------------------------------------------ main


def main(args: InferArguments, backend: str | None = None) -> dict:
    """Validate, lock the run folder, load, answer (resumably), write submission + predictions + report.

    Under torchrun / accelerate launch with N processes (one or several machines), the length-sorted batches
    are dealt out to the processes whole; each keeps its own checkpoint and rank 0 gathers every answer over
    the process group and writes one submission in input order, the same as a one-process run's.
    """
    from report import HostMemoryWatch

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


def lock_output_file(output_file: str, rank: int):
    """The submission is locked too: two runs with their own folders never write one submission file."""
    import contextlib

    if rank != 0:
        return contextlib.nullcontext()
    out = Path(output_file).resolve()
    return RunLock(out.parent, f".{out.name}.lock", what=out).acquire()


def answer_test_file(args: InferArguments, frame: pd.DataFrame, backend: str | None, host, plan=None) -> dict:
    """Answer ``frame`` (the test file, or with a cascade ``plan`` its rows to answer again) and write the outputs."""
    import torch

    from modeling import load_inference_model
    from prediction_store import PredictionStore
    from report import inference_report, write_inference_report
    from scoring import auto_batch_size

    started = time.time()
    rank, world, local_rank = distributed_info()
    backend = select_backend(backend or args.backend)
    device_map = {"": local_rank} if world > 1 and torch.cuda.is_available() else None
    request = load_request(args, backend, device_map)
    model, tokenizer, load_info = load_inference_model(request)
    loaded = time.time()
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
    seconds = time.time() - loaded
    predictions = assemble_predictions(frame, records)
    cascade_info = {}
    if plan is not None:
        predictions, cascade_info = plan.merge(predictions)
        frame = plan.frame
    report = inference_report(frame, predictions, {
        "test_file": args.test_file, "test_file_sha256": identity["test_file"]["bytes_sha256"],
        "model_path": args.model_path, "base_model": request.base,
        "adapters": ([request.adapter] if request.adapter else []) + list(args.ensemble), "mode": args.mode,
        "batch_size": batch_size, "processes": world, **load_info, "restarted": store.restarted,
        "damaged_records_set_aside": store.damaged, "startup_seconds": round(loaded - started, 1),
        "answer_timing": clock.summary(), **letter_distributions(records, prior), **cascade_info, **host.summary()},
        seconds, answered)
    report["total_seconds"] = round(time.time() - started, 1)
    write_csv_atomic(predictions, args.run_dir / "predictions.csv")
    write_inference_report(report, predictions, frame, args.run_dir)
    write_csv_atomic(predictions[["ID", "answer"]], Path(args.output_file))  # last: it exists only when all is done
    logger.info("wrote %s (%d answers, %s)%s", args.output_file, len(predictions), load_info["precision"],
                f"; accuracy {report['accuracy']:.2%}" if "accuracy" in report else "")
    return report


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
