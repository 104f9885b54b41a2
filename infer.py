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
command again after an interruption continues where it stopped. The output directory also receives
`predictions.csv`, `report.json`, `report.md` and PNG charts.
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

import numpy as np
import pandas as pd
import yaml

from answer_parser import parse_answer_with_rule
from mcq_dataset import (ANSWER_COLUMN, LETTERS, OPTION_COLUMNS, DataError, PromptOptions, cyclic_orders,
                         encode_prompt, has_answers, load_mcq_csv)
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
    batch_size: int | None = field(default=None, metadata={"help": "default: chosen from free GPU memory"})
    load_in_4bit: bool = field(default=True, metadata={"help": "NF4 weights; falls back to 8-bit, then offload"})
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


def fingerprint(args: InferArguments, test_path: str | Path) -> dict:
    """What must be equal for a checkpoint to be continued: the same file, model and settings."""
    digest = hashlib.sha256(Path(test_path).read_bytes()).hexdigest()
    keys = ("model_path", "base_model_id", "mode", "max_prompt_tokens", "max_new_tokens", "repetition_penalty",
            "permutations", "ensemble", "system_prompt", "user_template", "chat_template", "load_in_4bit")
    return {"test_file_sha256": digest, **{k: getattr(args, k) for k in keys}}


# ------------------------------------------------------------------------------------------ sharding


def distributed_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) as set by torchrun / accelerate launch; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def barrier() -> None:
    """Wait for every shard (gloo: works with and without GPUs; it only synchronises)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    dist.barrier()


def checkpoint_path(run_dir: Path, rank: int, world: int) -> Path:
    return run_dir / (CHECKPOINT_NAME if world == 1 else f"predictions.partial.rank{rank}-of-{world}.jsonl")


def merge_shards(run_dir: Path, world: int, print_: dict) -> tuple[dict[str, dict], int]:
    """All shards' answers (read after the barrier) and how many were answered in this run."""
    merged, answered = {}, 0
    for rank in range(world):
        merged.update(PredictionStore(checkpoint_path(run_dir, rank, world), print_, resume=True).records)
        answered += json.loads((run_dir / f"rank{rank}-of-{world}.done.json").read_text())["answered"]
    return merged, answered


# ------------------------------------------------------------------------------------------ checkpoint


class PredictionStore:
    """Append-only JSONL of finished answers; the first line records the run's fingerprint."""

    def __init__(self, path: Path, print_: dict, resume: bool):
        self.path = path
        self.records: dict[str, dict] = {}
        if path.exists() and resume:
            lines = path.read_text(encoding="utf-8").splitlines()
            header = json.loads(lines[0]) if lines else {}
            if header.get("fingerprint") != print_:
                raise ConfigError(f"{path} holds answers from a run with other settings or another test file; "
                                  "delete it (or the output directory) or pass --resume false to start over")
            for line in lines[1:]:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut off by the interruption
                    continue
                self.records[record["ID"]] = record
            logger.info("resuming: %d answers already in %s", len(self.records), path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"fingerprint": print_}, ensure_ascii=False) + "\n", encoding="utf-8")

    def add(self, records: list[dict]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.records[record["ID"]] = record
            handle.flush()
            os.fsync(handle.fileno())


# ------------------------------------------------------------------------------------------ model


def resolve_sources(args: InferArguments) -> tuple[str, str | None]:
    """(base model, adapter or None) from --model_path / --base_model_id."""
    from modeling import check_model_source, is_adapter_dir, read_adapter_base

    check_model_source(args.model_path)
    if not is_adapter_dir(args.model_path):
        return args.model_path, None
    base = args.base_model_id or read_adapter_base(args.model_path)
    if not base:
        raise ModelLoadError(f"{args.model_path} is an adapter without a recorded base model: pass --base_model_id")
    return base, args.model_path


def load_with_fallbacks(base: str, backend: str, args: InferArguments, device_map=None):
    """4-bit, else 8-bit, else 16-bit spread over GPU and CPU (the reference loading ladder)."""
    from modeling import load_base_model

    if args.load_in_4bit:
        ladder = [("4-bit", dict(load_in_4bit=True, device_map=device_map)),
                  ("8-bit", dict(load_in_4bit=False, load_in_8bit=True, device_map=device_map))]
    else:
        ladder = [("16-bit", dict(load_in_4bit=False, device_map=device_map))]
    ladder.append(("16-bit with CPU offload", dict(load_in_4bit=False, device_map="auto")))
    errors = []
    for name, kwargs in ladder:
        try:
            model, tokenizer = load_base_model(base, backend, max_seq_length=args.max_prompt_tokens + args.max_new_tokens,
                                               trust_remote_code=args.trust_remote_code, training=False, **kwargs)
            logger.info("loaded %s in %s", base, name)
            return model, tokenizer
        except ModelLoadError:
            raise
        except (RuntimeError, ValueError, ImportError, OSError) as err:
            logger.warning("loading %s in %s failed (%s); trying the next way", base, name, err)
            errors.append(f"{name}: {err}")
    raise ModelLoadError(f"could not load {base}: " + " | ".join(errors))


def load_for_inference(args: InferArguments, backend: str, device_map=None):
    from modeling import attach_adapter, load_tokenizer

    base, adapter = resolve_sources(args)
    for extra in args.ensemble:
        resolve_sources(InferArguments(model_path=extra))
    model, tokenizer = load_with_fallbacks(base, backend, args, device_map)
    if adapter:
        model = attach_adapter(model, adapter, backend)
        if (Path(adapter) / "tokenizer_config.json").is_file():
            tokenizer = load_tokenizer(adapter, args.trust_remote_code)
    if args.chat_template:
        tokenizer = load_tokenizer(adapter or base, args.trust_remote_code, args.chat_template)
    for number, extra in enumerate(args.ensemble):
        model.load_adapter(extra, adapter_name=f"ensemble_{number}", is_trainable=False)
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    model.eval()
    tokenizer.padding_side = "left"
    return model, tokenizer


def adapter_names(args: InferArguments) -> list[str | None]:
    if not args.ensemble:
        return [None]
    return ["default"] + [f"ensemble_{n}" for n in range(len(args.ensemble))]


def choose_batch_size(args: InferArguments) -> int:
    """From free GPU memory when not given: score passes hold no KV cache, generation does."""
    import torch

    if args.batch_size:
        return args.batch_size
    if not torch.cuda.is_available():
        return 16
    free_gb = torch.cuda.mem_get_info()[0] / 2**30
    per_gb = 8 if args.mode == "score" else 2
    size = int(max(4, min(128, free_gb * per_gb)))
    logger.info("batch size %d (%.1f GB free)", size, free_gb)
    return size


# ------------------------------------------------------------------------------------------ answering


def plan_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Fixed batches over all rows (longest first): a resumed run rebuilds exactly the same batches."""
    from scoring import length_sorted_batches

    return length_sorted_batches([len(p) for p in prompts], batch_size)


def score_rows(model, tokenizer, frame: pd.DataFrame, args: InferArguments, batch_size: int,
               store: PredictionStore, progress) -> None:
    """Letter probabilities for every row not yet in the store (averaged over permutations/adapters)."""
    from scoring import batch_scorer, run_halving

    prompts, compute = batch_scorer(model, tokenizer, frame, args.prompt_style, args.max_prompt_tokens,
                                    cyclic_orders(args.permutations), adapter_names(args), args.share_prefix)

    all_ids = frame["ID"].tolist()
    for batch in plan_batches(prompts, batch_size):
        ids = [all_ids[i] for i in batch]
        if all(i in store.records for i in ids):
            continue
        total = run_halving(compute, batch)
        store.add([{"ID": id_, "answer": LETTERS[int(p.argmax())], "probs": [round(float(x), 6) for x in p],
                    "source": "score"} for id_, p in zip(ids, total)])
        progress.update(len(batch))


def generate_rows(model, tokenizer, frame: pd.DataFrame, args: InferArguments, batch_size: int,
                  store: PredictionStore, progress) -> None:
    """Greedy replies for rows not yet in the store, parsed; unparsed ones get answer None for now."""
    import torch

    from scoring import left_pad, model_device, run_halving

    device = model_device(model)
    prompts = [encode_prompt(tokenizer, row, args.prompt_style, args.max_prompt_tokens)
               for _, row in frame.iterrows()]
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
    for batch in plan_batches(prompts, batch_size):
        ids = [all_ids[i] for i in batch]
        if all(i in store.records for i in ids):
            continue
        replies = run_halving(compute, batch)
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


def peak_memory_gb() -> dict:
    import resource

    import torch

    peak = {"cpu_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if torch.cuda.is_available():
        peak["gpu_peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        peak["gpu_peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return peak


def build_report(frame: pd.DataFrame, predictions: pd.DataFrame, args: InferArguments, seconds: float,
                 answered_now: int) -> dict:
    from report import confusion_matrix

    report = {
        "test_file": args.test_file, "model_path": args.model_path, "mode": args.mode, "rows": len(frame),
        "answer_distribution": {k: int((predictions["answer"] == k).sum()) for k in LETTERS},
        "seconds": round(seconds, 2), "answered_this_run": answered_now,
        "questions_per_second": round(answered_now / seconds, 2) if seconds > 0 and answered_now else None,
        **peak_memory_gb(),
    }
    if "rule" in predictions:
        unparsed = predictions[predictions["source"] == "score_fallback"]
        report["unparsed"] = {"count": len(unparsed),
                              "by_reason": unparsed["rule"].value_counts().to_dict(),
                              "rows": unparsed[["ID", "raw", "rule", "answer"]].to_dict("records")}
        report["rules"] = predictions["rule"].value_counts().to_dict()
    if has_answers(frame):
        correct = predictions["answer"].values == frame[ANSWER_COLUMN].values
        report["accuracy"] = round(float(correct.mean()), 4)
        if "subject" in frame:
            report["accuracy_by_subject"] = {s: round(float(correct[(frame["subject"] == s).values].mean()), 4)
                                             for s in sorted(frame["subject"].unique())}
        report["confusion_matrix"] = confusion_matrix(list(predictions["answer"]),
                                                      list(frame[ANSWER_COLUMN])).tolist()
    return report


def write_report(report: dict, predictions: pd.DataFrame, frame: pd.DataFrame, run_dir: Path) -> None:
    from report import plot_answer_distribution, plot_confusion, plot_subject_accuracy, write_json

    write_json(report, run_dir / "report.json")
    expected = list(frame[ANSWER_COLUMN]) if "accuracy" in report else None
    plot_answer_distribution(list(predictions["answer"]), run_dir / "answer_distribution.png", expected)
    if "confusion_matrix" in report:
        plot_confusion(np.array(report["confusion_matrix"]), run_dir / "confusion_matrix.png")
    if "accuracy_by_subject" in report:
        plot_subject_accuracy(report["accuracy_by_subject"], run_dir / "accuracy_by_subject.png")
    (run_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")


def render_markdown(report: dict) -> str:
    lines = [f"# Inference report: {report['mode']} mode", "",
             f"- test file: `{report['test_file']}` ({report['rows']} questions)",
             f"- model: `{report['model_path']}`",
             f"- speed: {report['questions_per_second']} questions/s ({report['seconds']} s this run)",
             "- answers: " + ", ".join(f"{k} {v}" for k, v in report["answer_distribution"].items())]
    if "accuracy" in report:
        lines.append(f"- **accuracy: {report['accuracy']:.2%}**")
    if "unparsed" in report:
        lines.append(f"- replies without a readable letter: {report['unparsed']['count']} (answered by scoring)")
    lines += ["", "![answers](answer_distribution.png)"]
    if "confusion_matrix" in report:
        lines.append("![confusion](confusion_matrix.png)")
    if "accuracy_by_subject" in report:
        lines.append("![subjects](accuracy_by_subject.png)")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ main


def main(args: InferArguments, backend: str | None = None) -> dict:
    """Validate, load, answer (resumably), write submission + predictions + report. Returns the report.

    Under torchrun / accelerate launch with N processes, each answers every N-th question on its own GPU
    and keeps its own checkpoint; rank 0 merges them into one submission in input order.
    """
    import torch
    from tqdm.auto import tqdm

    started = time.time()
    check_args(args)
    frame = load_mcq_csv(args.test_file, encoding=args.encoding)
    rank, world, local_rank = distributed_info()
    shard = frame.iloc[rank::world] if world > 1 else frame
    run_dir = args.run_dir
    print_ = fingerprint(args, args.test_file)
    store = PredictionStore(checkpoint_path(run_dir, rank, world), print_, args.resume)
    backend = select_backend(backend or args.backend)
    device_map = {"": local_rank} if world > 1 and torch.cuda.is_available() else None
    model, tokenizer = load_for_inference(args, backend, device_map)
    batch_size = choose_batch_size(args)
    todo = int((~shard["ID"].isin(store.records)).sum())
    answer_started = time.time()
    with tqdm(total=len(shard), initial=len(shard) - todo, unit="q", desc=f"{args.mode}",
              disable=rank != 0) as progress:
        if args.mode == "score":
            score_rows(model, tokenizer, shard, args, batch_size, store, progress)
        else:
            generate_rows(model, tokenizer, shard, args, batch_size, store, progress)
            fill_unparsed(model, tokenizer, shard, args, batch_size, store)
    records, answered = store.records, todo
    if world > 1:
        (run_dir / f"rank{rank}-of-{world}.done.json").write_text(json.dumps({"answered": todo}))
        barrier()
        if rank != 0:
            return {"rank": rank, "rows": len(shard), "answered_this_run": todo}
        records, answered = merge_shards(run_dir, world, print_)
    seconds = time.time() - answer_started
    predictions = assemble_predictions(frame, records)
    write_atomic(predictions[["ID", "answer"]], Path(args.output_file))
    write_atomic(predictions, run_dir / "predictions.csv")
    report = build_report(frame, predictions, args, seconds, answered)
    report["total_seconds"] = round(time.time() - started, 1)
    report["processes"] = world
    write_report(report, predictions, frame, run_dir)
    logger.info("wrote %s (%d answers)%s", args.output_file, len(predictions),
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
    print(json.dumps({k: report[k] for k in ("rows", "questions_per_second", "accuracy") if k in report}))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
