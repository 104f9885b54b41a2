"""Answer a competition test file and write submission.csv (ID,answer), resumably, with a report.

    python infer.py --model_path outputs/run/adapter --test_file test.csv --output_file submission.csv
    python infer.py --config configs/infer-14b-4090.yaml --mode generate

`--model_path` is a LoRA adapter directory (its base comes from adapter_config.json or `--base_model_id`),
a merged model directory, or a plain model. Modes:

* `score` (default): one forward pass per question; the answer is the letter A-D with the highest
  next-token logit at the answer position of the training prompt. Keeps the four probabilities.
* `generate`: greedy generation (Unsloth's fast path on the unsloth backend), read by `answer_parser`.
  A reply it cannot read is answered by `score` instead, and listed in the report with its text.

Answers are checkpointed to `<output_dir>/predictions.partial.jsonl` as they come; running the same
command again after an interruption continues where it stopped. The checkpoint is keyed by content (test
file, base model and adapters, precision loaded, chat template, every prompt/scoring option, batch size):
if anything changed -- an adapter retrained into the same folder, say -- no row is reused; the old
checkpoint is moved to `*.stale`, the run starts over and the log and report.json say what changed.
The output directory also receives `predictions.csv`, `report.json`, `report.md` and PNG charts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import yaml

import answer_parser
from answer_parser import parse_answer_with_rule
from mcq_dataset import (ANSWER_COLUMN, LETTERS, OPTION_COLUMNS, DataError, PromptOptions, cyclic_orders,
                         encode_prompts, load_mcq_csv)
from modeling import BACKENDS, ModelLoadError, peek_backend, select_backend

logger = logging.getLogger("infer")

CHECKPOINT_NAME = "predictions.partial.jsonl"


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
    max_prompt_tokens: int = field(default=512, metadata={"help": "longer questions are shortened to fit"})
    max_new_tokens: int = field(default=48, metadata={"help": "generate mode: reply length limit"})
    repetition_penalty: float = field(default=1.1, metadata={"help": "generate mode"})
    permutations: int = field(default=1, metadata={"help": "score mode: average over N cyclic option orders (1-4)"})
    share_prefix: bool = field(default=True, metadata={"help": "score mode: compute the prompt start shared by all "
                                                              "questions once (same answers, ~1.4x faster)"})
    ensemble: list[str] = field(default_factory=list, metadata={"help": "more adapter directories to average "
                                                                        "(score mode)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "run code shipped with the model"})
    resume: bool = field(default=True, metadata={"help": "continue from the checkpoint of an identical run"})
    encoding: str | None = field(default=None, metadata={"help": "CSV encoding if not UTF-8"})

    @property
    def run_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        out = Path(self.output_file)
        return out.with_name(out.stem + "_run")


class ConfigError(ValueError):
    """A bad option, found before the model is loaded."""


# ------------------------------------------------------------------------------------------ checks


def check_args(args: InferArguments) -> None:
    problems = []
    if not args.test_file:
        problems.append("test_file is required")
    if not args.model_path:
        problems.append("model_path is required")
    if not 1 <= args.permutations <= 4:
        problems.append(f"permutations must be 1-4, got {args.permutations}")
    if args.batch_size is not None and args.batch_size < 1:
        problems.append("batch_size must be >= 1")
    if args.mode == "generate" and (args.permutations > 1 or args.ensemble):
        problems.append("permutations and ensemble apply to score mode only")
    out_parent = Path(args.output_file).resolve().parent
    if not out_parent.is_dir():
        problems.append(f"the folder of output_file does not exist: {out_parent}")
    if problems:
        raise ConfigError("; ".join(problems))


# Options that decide the answers, besides the files and the precision (checkpoint format 2).
ANSWER_OPTIONS = ("mode", "backend", "max_prompt_tokens", "max_new_tokens", "repetition_penalty", "permutations",
                  "share_prefix", "system_prompt", "user_template")
FINGERPRINT_FORMAT = 2


def fingerprint(args: InferArguments, base: str, adapter: str | None, load_info: dict, tokenizer,
                batch_size: int, backend: str) -> dict:
    """Everything that decides the answers: the test file, base model and adapters by content, the precision
    loaded, the chat template, the prompt and scoring options and the batch size (bf16 rounding depends on
    the batch, so near-ties can flip)."""
    from modeling import adapter_identity, model_identity

    options = {k: getattr(args, k) for k in ANSWER_OPTIONS}
    options["backend"] = backend
    return {"format": FINGERPRINT_FORMAT,
            "test_file_sha256": hashlib.sha256(Path(args.test_file).read_bytes()).hexdigest(),
            "base_model": model_identity(base),
            "adapters": [adapter_identity(a) for a in ([adapter] if adapter else []) + list(args.ensemble)],
            "precision": load_info["precision"],
            "chat_template_sha256": hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest(),
            "batch_size": batch_size, **options,
            # generate mode: the parser's rules decide which replies count, so its version is part of the key
            "answer_parser_sha256": hashlib.sha256(Path(answer_parser.__file__).read_bytes()).hexdigest()
            if args.mode == "generate" else None}


def changed_keys(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


# ------------------------------------------------------------------------------------------ sharding


def distributed_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) as set by torchrun / accelerate launch; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def process_group():
    """torch.distributed over gloo (CPU tensors and Python objects, with or without GPUs, across nodes)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return dist


def agree_on(value, world: int):
    """Rank 0's value on every rank (the batch size: every rank must form the same batches)."""
    if world == 1:
        return value
    box = [value]
    process_group().broadcast_object_list(box, src=0)
    return box[0]


def gather_answers(records: dict[str, dict], answered: int, world: int) -> tuple[dict[str, dict], int]:
    """Rank 0 receives every rank's answers over the process group (no shared filesystem needed)."""
    if world == 1:
        return records, answered
    dist = process_group()
    parts = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object((records, answered), parts, dst=0)
    if dist.get_rank() != 0:
        return {}, answered
    merged = {}
    for part, _ in parts:
        merged.update(part)
    return merged, sum(n for _, n in parts)


def checkpoint_path(run_dir: Path, rank: int, world: int) -> Path:
    return run_dir / (CHECKPOINT_NAME if world == 1 else f"predictions.partial.rank{rank}-of-{world}.jsonl")


# ------------------------------------------------------------------------------------------ checkpoint


class PredictionStore:
    """Append-only JSONL of finished answers; the first line records the run's fingerprint.

    A checkpoint whose fingerprint differs from this run's is never used: it is moved aside to
    ``<name>.stale`` (nothing computed is deleted) and the run starts over; ``restarted`` names what changed.
    """

    def __init__(self, path: Path, print_: dict, resume: bool):
        self.path = path
        self.records: dict[str, dict] = {}
        self.restarted: dict | None = None
        if path.exists() and resume:
            lines = path.read_text(encoding="utf-8").splitlines()
            header = json.loads(lines[0]) if lines else {}
            old = header.get("fingerprint", {})
            if old == print_:
                self._load(lines[1:])
                logger.info("resuming: %d answers already in %s", len(self.records), path)
                return
            self.restarted = {"changed": changed_keys(old, print_), "old_checkpoint": str(self._set_aside())}
            logger.warning("%s was made with another %s: starting over (old answers kept in %s)", path,
                           ", ".join(self.restarted["changed"]), self.restarted["old_checkpoint"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"fingerprint": print_}, ensure_ascii=False) + "\n", encoding="utf-8")

    def _load(self, lines: list[str]) -> None:
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut off by the interruption
                continue
            self.records[record["ID"]] = record

    def _set_aside(self) -> Path:
        stale = self.path.with_name(self.path.name + ".stale")
        os.replace(self.path, stale)
        return stale

    def add(self, records: list[dict]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.records[record["ID"]] = record
            handle.flush()
            os.fsync(handle.fileno())


# ------------------------------------------------------------------------------------------ model


def resolve_sources(model_path: str, base_model_id: str | None = None) -> tuple[str, str | None]:
    """(base model, adapter or None) from --model_path / --base_model_id."""
    from modeling import check_model_source, is_adapter_dir, read_adapter_base

    check_model_source(model_path)
    if not is_adapter_dir(model_path):
        return model_path, None
    base = base_model_id or read_adapter_base(model_path)
    if not base:
        raise ModelLoadError(f"{model_path} is an adapter without a recorded base model: pass --base_model_id")
    return base, model_path


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


def adapter_names(args: InferArguments) -> list[str | None]:
    if not args.ensemble:
        return [None]
    return ["default"] + [f"ensemble_{n}" for n in range(len(args.ensemble))]


# ------------------------------------------------------------------------------------------ answering


def plan_batches(prompts: Sequence[Sequence[int]], batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's share of fixed batches over *all* rows (longest first). The batches do not depend on
    the number of processes, only on the batch size: each question meets the same neighbours and padding on
    one GPU or many, so the answers are the same; a resumed run rebuilds the same batches too."""
    from scoring import length_sorted_batches

    return length_sorted_batches([len(p) for p in prompts], batch_size)[rank::world]


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


def score_rows(frame: pd.DataFrame, batches: list[list[int]], compute, store: PredictionStore, progress,
               clock: BatchClock) -> None:
    """Letter probabilities for every batch not yet in the store (averaged over permutations/adapters)."""
    from scoring import run_halving

    all_ids = frame["ID"].tolist()
    for batch in batches:
        ids = [all_ids[i] for i in batch]
        if all(i in store.records for i in ids):
            continue
        total = clock.run(lambda rows: run_halving(compute, rows), batch)
        store.add([{"ID": id_, "answer": LETTERS[int(p.argmax())], "probs": [round(float(x), 6) for x in p],
                    "source": "score"} for id_, p in zip(ids, total)])
        progress.update(len(batch))


def generate_rows(model, tokenizer, frame: pd.DataFrame, args: InferArguments, batches: list[list[int]],
                  prompts, store: PredictionStore, progress, clock: BatchClock) -> None:
    """Greedy replies for batches not yet in the store, parsed; unparsed ones get answer None for now."""
    import torch

    from scoring import left_pad, model_device, run_halving

    device = model_device(model)
    stop_ids = [tokenizer.eos_token_id] + ([tokenizer.pad_token_id] if tokenizer.pad_token_id is not None else [])

    def compute(rows: list[int]) -> list[str]:
        input_ids, attention_mask = left_pad([prompts[i] for i in rows], tokenizer.pad_token_id)
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                    max_new_tokens=args.max_new_tokens, do_sample=False,
                                    repetition_penalty=args.repetition_penalty, eos_token_id=stop_ids,
                                    pad_token_id=tokenizer.pad_token_id, use_cache=True)
        return tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True)

    all_ids, all_options = frame["ID"].tolist(), frame[list(OPTION_COLUMNS)].values.tolist()
    for batch in batches:
        ids = [all_ids[i] for i in batch]
        if all(i in store.records for i in ids):
            continue
        replies = clock.run(lambda rows: run_halving(compute, rows), batch)
        records = []
        for i, id_, reply in zip(batch, ids, replies):
            parsed = parse_answer_with_rule(reply, all_options[i])
            records.append({"ID": id_, "answer": parsed.letter, "raw": reply, "rule": parsed.rule,
                            "source": "generate"})
        store.add(records)
        progress.update(len(batch))


def fill_unparsed(model, tokenizer, frame: pd.DataFrame, args: InferArguments, batch_size: int,
                  store: PredictionStore) -> None:
    """Rows whose reply had no readable letter are answered by letter scoring, and keep their reply text."""
    from scoring import score_frame

    missing = [r for r in store.records.values() if r["answer"] is None]
    if not missing:
        return
    logger.warning("%d replies had no readable letter; answering them by letter scoring", len(missing))
    sub = frame[frame["ID"].isin([r["ID"] for r in missing])]
    probs = score_frame(model, tokenizer, sub, args.prompt_style, batch_size, args.max_prompt_tokens,
                        share_prefix=args.share_prefix)
    updated = []
    for (_, row), p in zip(sub.iterrows(), probs):
        record = dict(store.records[row["ID"]])
        record.update(answer=LETTERS[int(p.argmax())], probs=[round(float(x), 6) for x in p], source="score_fallback")
        updated.append(record)
    store.add(updated)


def answer(model, tokenizer, frame: pd.DataFrame, prompts, args: InferArguments, batch_size: int,
           store: PredictionStore, rank: int, world: int) -> tuple[int, BatchClock]:
    """Answer this process's batches of the encoded ``prompts``: how many were answered in this run, and the
    time each batch took."""
    from tqdm.auto import tqdm

    from scoring import batch_scorer

    batches = plan_batches(prompts, batch_size, rank, world)
    mine = [frame["ID"].iat[i] for batch in batches for i in batch]
    todo = sum(id_ not in store.records for id_ in mine)
    clock = BatchClock()
    with tqdm(total=len(mine), initial=len(mine) - todo, unit="q", desc=args.mode, disable=rank != 0) as progress:
        if args.mode == "score":
            _, compute = batch_scorer(model, tokenizer, frame, args.prompt_style, args.max_prompt_tokens,
                                      cyclic_orders(args.permutations), adapter_names(args), args.share_prefix, prompts)
            score_rows(frame, batches, compute, store, progress, clock)
        else:
            generate_rows(model, tokenizer, frame, args, batches, prompts, store, progress, clock)
            fill_unparsed(model, tokenizer, frame, args, batch_size, store)
    return todo, clock


# ------------------------------------------------------------------------------------------ outputs


def write_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write next to the target, then rename: an interrupted write never replaces a good file."""
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False, encoding="utf-8")
    os.replace(tmp, path)


def assemble_predictions(frame: pd.DataFrame, answers: dict[str, dict]) -> pd.DataFrame:
    """One row per question in input order; fails loudly if any question has no answer."""
    missing = [id_ for id_ in frame["ID"] if id_ not in answers]
    if missing:
        raise RuntimeError(f"{len(missing)} questions have no answer (first: {missing[:5]})")
    records = [answers[id_] for id_ in frame["ID"]]
    predictions = pd.DataFrame({"ID": frame["ID"], "answer": [r["answer"] for r in records],
                                "source": [r.get("source") for r in records]})
    if any("probs" in r for r in records):
        for k, letter in enumerate(LETTERS):
            predictions[f"p_{letter}"] = [r["probs"][k] if "probs" in r else None for r in records]
    if any("raw" in r for r in records):
        predictions["raw"] = [r.get("raw") for r in records]
        predictions["rule"] = [r.get("rule") for r in records]
    for column in (ANSWER_COLUMN, "subject"):
        if column in frame:
            predictions[f"true_{column}" if column == ANSWER_COLUMN else column] = list(frame[column])
    return predictions


# ------------------------------------------------------------------------------------------ main


def main(args: InferArguments, backend: str | None = None) -> dict:
    """Validate, load, answer (resumably), write submission + predictions + report. Returns the report.

    Under torchrun / accelerate launch with N processes (one or several machines), the length-sorted batches
    are dealt out to the processes whole; each keeps its own checkpoint and rank 0 gathers every answer over
    the process group and writes one submission in input order, the same as a one-process run's.
    """
    from report import HostMemoryWatch

    with HostMemoryWatch() as host:  # the report splits the host memory peak (loading is the largest)
        return answer_test_file(args, backend, host)


def answer_test_file(args: InferArguments, backend: str | None, host) -> dict:
    import torch

    from modeling import load_inference_model
    from report import inference_report, write_inference_report
    from scoring import auto_batch_size

    started = time.time()
    check_args(args)
    frame = load_mcq_csv(args.test_file, encoding=args.encoding)
    rank, world, local_rank = distributed_info()
    backend = select_backend(backend or args.backend)
    device_map = {"": local_rank} if world > 1 and torch.cuda.is_available() else None
    request = load_request(args, backend, device_map)
    model, tokenizer, load_info = load_inference_model(request)
    loaded = time.time()
    prompts = encode_prompts(tokenizer, frame, args.prompt_style, args.max_prompt_tokens)  # once, every mode
    batch_size = agree_on(args.batch_size or auto_batch_size(model, max(map(len, prompts)), args), world)
    print_ = fingerprint(args, request.base, request.adapter, load_info, tokenizer, batch_size, backend)
    store = PredictionStore(checkpoint_path(args.run_dir, rank, world), print_, args.resume)
    answered, clock = answer(model, tokenizer, frame, prompts, args, batch_size, store, rank, world)
    records, answered = gather_answers(store.records, answered, world)
    if rank != 0:
        return {"rank": rank, "answered_this_run": answered}
    seconds = time.time() - loaded
    predictions = assemble_predictions(frame, records)
    write_atomic(predictions[["ID", "answer"]], Path(args.output_file))
    write_atomic(predictions, args.run_dir / "predictions.csv")
    report = inference_report(frame, predictions, {
        "test_file": args.test_file, "model_path": args.model_path, "base_model": request.base,
        "adapters": ([request.adapter] if request.adapter else []) + list(args.ensemble), "mode": args.mode,
        "batch_size": batch_size, "processes": world, **load_info, "restarted": store.restarted,
        "startup_seconds": round(loaded - started, 1), "answer_timing": clock.summary(), **host.summary()},
        seconds, answered)
    report["total_seconds"] = round(time.time() - started, 1)
    write_inference_report(report, predictions, frame, args.run_dir)
    logger.info("wrote %s (%d answers, %s)%s", args.output_file, len(predictions), load_info["precision"],
                f"; accuracy {report['accuracy']:.2%}" if "accuracy" in report else "")
    return report


def make_parser():
    from trl import TrlParser

    return TrlParser((InferArguments,))


def run(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        backend = select_backend(peek_backend(argv))
        try:
            (args,) = make_parser().parse_args_and_config(argv)
        except (ValueError, yaml.YAMLError) as err:
            raise ConfigError(str(err)) from None
        report = main(args, backend)
    except (ConfigError, DataError, ModelLoadError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: report[k] for k in ("rows", "questions_per_second", "accuracy", "precision") if k in report}))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
