"""What an inference run writes, and where: the run folder's files, the submission last.

Each process keeps its own answer checkpoint in the run folder (``checkpoint_path``); rank 0 gathers every
answer over the process group, assembles ``predictions.csv`` in input order (a cascade's rows merged with the
first run's), writes ``report.json`` / ``report.md`` with their charts, and only then the submission, so a
submission exists only when everything else was written. A run that does not continue the checkpoint first
sets the earlier outputs aside; nothing written here ever overwrites an input.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mcqtune.runs.distributed import gather_to_first
from mcqtune.data.questions import LETTERS
from mcqtune.runs.identity import sha256_file
from mcqtune.runs.predictions import assemble_predictions
from mcqtune.runs.provenance import PREDICTIONS_HASH, PREDICTIONS_RECORD, read_json
from mcqtune.runs.folder import RunLock, lies_within, set_aside, ownership_problem
from mcqtune.files import write_csv_atomic

if TYPE_CHECKING:
    from mcqtune.infer.options import InferArguments

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "predictions.partial.jsonl"
# What a run writes into its folder besides the checkpoint: set aside together when a run starts over.
RUN_OUTPUTS = ("predictions.csv", "report.json", "report.md", "answer_distribution.png", "confusion_matrix.png",
               "accuracy_by_subject.png")


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
    overwritten = []
    for source in [args.test_file, args.model_path, args.base_model_id, *adapter_bases(args), *args.ensemble,
                   *rescored]:
        if source and Path(source).exists() and any(lies_within(target, source) for target in written):
            overwritten.append(source)
            problems.append(f"output_file / output_dir would overwrite the input {source} (or write inside it); "
                            "write elsewhere")
    if out.is_dir() or any(lies_within(out, source) for source in overwritten):
        return problems  # who wrote an input is beside the point
    owner = ownership_problem(out, args.run_dir / "report.json", "output_file")
    return problems + ([owner] if owner else []) + shared_folder_problems(args)


def shared_folder_problems(args: InferArguments) -> list[str]:
    """A run folder describes one output file: a run for another one (submission.csv and submission.txt share
    submission_run/; so do two output files given one --output_dir) would set aside the record of a submission
    that stays, which then has none. Refused while that submission is still there."""
    other = (read_json(args.run_dir / PREDICTIONS_RECORD) or {}).get("output_file")
    if not isinstance(other, str) or not other or Path(other).resolve() == Path(args.output_file).resolve() \
            or not Path(other).is_file():
        return []
    return [f"the run folder {args.run_dir} holds the record of another output file, {other}; this run would set "
            "that record aside and leave the file without one: give this run its own --output_dir (or an "
            "output_file of another name), or move that file away first"]


def adapter_bases(args: InferArguments) -> list[str]:
    """The base models the adapters name (folders that exist here): the run reads them, so it writes nothing there."""
    from mcqtune.model.loading import read_adapter_base

    bases = []
    for adapter in [args.model_path, *args.ensemble]:
        if adapter and Path(adapter, "adapter_config.json").is_file():
            try:
                base = read_adapter_base(adapter)
            except Exception:  # noqa: BLE001  (an unreadable config is reported where the adapter is loaded)
                continue
            if base and Path(base).is_dir():
                bases.append(base)
    return bases


def checkpoint_path(run_dir: Path, rank: int, world: int) -> Path:
    return run_dir / (CHECKPOINT_NAME if world == 1 else f"predictions.partial.rank{rank}-of-{world}.jsonl")


def set_aside_earlier_outputs(args: InferArguments, store) -> None:
    """A run that does not continue the checkpoint moves the earlier submission and report out of the way first."""
    if not store.resumed:
        set_aside(args.run_dir, [Path(args.output_file).resolve(), *RUN_OUTPUTS],
                  "outputs of an earlier run (this run does not continue its answers)")


def lock_output_file(output_file: str, rank: int):
    """The submission is locked too: two runs with their own folders never write one submission file."""
    if rank != 0:
        return contextlib.nullcontext()
    out = Path(output_file).resolve()
    return RunLock(out.parent, f".{out.name}.lock", what=out).acquire()


def gather_answers(store, answered: int, world: int) -> tuple[dict[str, dict] | None, int]:
    """Rank 0 receives every rank's answers over the process group (no shared filesystem needed)."""
    parts = gather_to_first((store.records, answered), world)
    if parts is None:
        return None, answered
    records = {}
    for part, _ in parts:
        records.update(part)
    return records, sum(n for _, n in parts)


def letter_distributions(records: dict[str, dict], prior) -> dict:
    """For report.json: the prior and the answers' letters without the correction (the corrected ones are the
    report's answer_distribution)."""
    if prior is None:
        return {}
    uncorrected = [LETTERS[max(range(4), key=r["probs_uncorrected"].__getitem__)] for r in records.values()]
    return {"letter_prior": prior,
            "answer_distribution_uncorrected": {k: uncorrected.count(k) for k in LETTERS}}


def write_outputs(args: InferArguments, frame, records: dict[str, dict], run: dict, *, answered: int, host,
                  started: float, loaded: float, plan=None) -> dict:
    """Rank 0's last step: ``predictions.csv`` in input order (with a cascade ``plan``, merged with the first
    run's answers), the report with its charts, and the submission last; returns the report."""
    from mcqtune.reporting.report import inference_report, write_inference_report

    seconds = time.time() - loaded
    predictions = assemble_predictions(frame, records)
    cascade_info = {}
    if plan is not None:
        predictions, cascade_info = plan.merge(predictions)
        frame = plan.frame
    report = inference_report(frame, predictions, {**run, **cascade_info, **host.summary()}, seconds, answered)
    report["total_seconds"] = round(time.time() - started, 1)
    write_csv_atomic(predictions, args.run_dir / "predictions.csv")
    report[PREDICTIONS_HASH] = sha256_file(args.run_dir / "predictions.csv")  # an edit later is refused where read
    write_inference_report(report, predictions, frame, args.run_dir)
    write_csv_atomic(predictions[["ID", "answer"]], Path(args.output_file))  # last: it exists only when all is done
    part = report.get("accuracy_on_labelled_rows")
    logger.info("wrote %s (%d answers, %s)%s", args.output_file, len(predictions), run["precision"],
                f"; accuracy {report['accuracy']:.2%}" if "accuracy" in report else
                f"; accuracy {part['accuracy']:.2%} on the {part['rows']} labelled rows" if part else "")
    return report
