"""Self-taught reasoning traces: a model reasons over the labelled training rows, and the traces whose answer
matches the label become a training file with a reasoning column.

    mcq-tune traces --model_path MODEL_OR_ADAPTER --train_file train.csv --output_file traces.csv \
        --max_reasoning_tokens 1024
    mcq-tune train --config qwen2.5-14b-4090.yaml --train_file traces.csv --reasoning_column reasoning ...

The reasoning is ``infer.py --mode reason`` on the training file (so it is resumable, batched and reported like
any run: its run folder is ``<output stem>_run/``). A trace is kept only when its reply committed to a letter
after its reasoning (not closed and scored) and that letter is the label; the reasoning kept is the reply without
its committed answer (the thinking block's text, or the reply less its last line), which training then follows
with the answer prefix and the label. ``<output stem>_summary.json`` counts kept / tried overall and per subject.
One greedy trace per question by default; ``--samples N --temperature T`` samples N replies per question (sample
k seeded by ``--seed`` + k, each in ``<stem>_run/sample-<k>/``) and keeps every distinct one that reaches the label
(``--mode`` is always reason here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from mcqtune.core.reasoning import THINK_CLOSE
from mcqtune.data.questions import ANSWER_COLUMN, REASONING_COLUMN, SUBJECT_COLUMN
from mcqtune.errors import ConfigError, parse_with
from mcqtune.model.prompts import THINK_OPEN



def reasoning_of(reply: str) -> str:
    """The reasoning of a reply that committed to its answer: inside the thinking block, or all but its last line."""
    if THINK_CLOSE in reply:
        return reply.rsplit(THINK_CLOSE, 1)[0].replace(THINK_OPEN, "").strip()
    lines = reply.strip().splitlines()
    return "\n".join(lines[:-1]).strip()


def keep_traces(frame: pd.DataFrame, predictions: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The training rows whose reasoning reply committed to the label (with that reasoning), and the counts."""
    answered = predictions.set_index("ID").loc[frame["ID"]]
    reasoning = answered["raw"].fillna("").astype(str).map(reasoning_of).to_numpy()
    committed = (answered["source"] == "reason").to_numpy()
    right = answered["answer"].to_numpy() == frame[ANSWER_COLUMN].to_numpy()
    kept = committed & right & (reasoning != "")
    out = frame.assign(**{REASONING_COLUMN: reasoning})[kept].reset_index(drop=True)
    # every reply not kept is counted under one reason: tried = kept + the three
    summary = {"tried": len(frame), "kept": int(kept.sum()),
               "closed_and_scored": int((answered["source"] == "reason_closed").sum()),
               "wrong_answer": int((committed & ~right).sum()),
               "no_reasoning": int((committed & right & (reasoning == "")).sum())}
    if SUBJECT_COLUMN in frame:
        summary["by_subject"] = {str(s): {"tried": int((frame[SUBJECT_COLUMN] == s).sum()),
                                          "kept": int(((frame[SUBJECT_COLUMN] == s).to_numpy() & kept).sum())}
                                 for s in sorted(frame[SUBJECT_COLUMN].unique())}
    return out, summary


def merge_samples(parts: list[tuple[pd.DataFrame, dict]]) -> tuple[pd.DataFrame, dict]:
    """The kept traces of every sample, each distinct reasoning of a question once; the counts added up."""
    kept = pd.concat([p for p, _ in parts], ignore_index=True).drop_duplicates(["ID", REASONING_COLUMN])
    summary = {key: sum(s[key] for _, s in parts)
               for key in ("tried", "kept", "closed_and_scored", "wrong_answer", "no_reasoning")}
    summary.update(kept=len(kept), samples=len(parts), questions_with_a_trace=int(kept["ID"].nunique()))
    if "by_subject" in parts[0][1]:
        summary["by_subject"] = {subject: {"tried": sum(s["by_subject"][subject]["tried"] for _, s in parts),
                                           "kept": int((kept[SUBJECT_COLUMN] == subject).sum())}
                                 for subject in parts[0][1]["by_subject"]}
    return kept, summary


def make_parser():
    from trl import TrlParser

    from mcqtune.infer.options import InferArguments

    parser = TrlParser((InferArguments,))
    parser.set_defaults(mode="reason")  # so that any other mode, on the command line or in --config, was asked for
    parser.description = ("Reason over a labelled training CSV and keep the traces that reach its labels. The "
                          "options are infer.py's: --train_file (the CSV reasoned over) stands for --test_file, "
                          "--output_file is the training CSV written (with a reasoning column), and --mode is always "
                          "reason.")
    return parser


def check_output(args) -> Path:
    """The traces file never replaces the training file, nor a file (traces or their summary) that an earlier
    traces run did not write."""
    from mcqtune.runs.folder import lies_within, ownership_problem

    out = Path(args.output_file)
    if Path(args.test_file).exists() and lies_within(out, args.test_file):
        raise ConfigError(f"--output_file {out} is the training file itself; write the traces elsewhere")
    problem = ownership_problem([out, summary_path(out)], summary_path(out), "--output_file")
    if problem:
        raise ConfigError(problem)
    return out


def summary_path(out: Path) -> Path:
    return out.with_name(out.stem + "_summary.json")


def parse_args(argv: Sequence[str] | None):
    """infer.py's options, with --train_file for the file reasoned over and --output_file required."""
    from mcqtune.infer.options import InferArguments

    argv = ["--test_file" if item == "--train_file" else item.replace("--train_file=", "--test_file=", 1)
            for item in (argv or [])]  # the training file is what the reasoning answers
    (args,) = parse_with(make_parser(), argv, ConfigError)
    if args.output_file == InferArguments.output_file:
        raise ConfigError("traces needs --output_file: the training CSV (with a reasoning column) to write")
    if args.mode != "reason":
        raise ConfigError(f"traces are reasoning replies: leave out --mode {args.mode} (it is always reason here)")
    if args.samples < 1 or (args.samples > 1 and args.temperature <= 0):
        raise ConfigError(f"--samples {args.samples}: give 1, or more than 1 with --temperature above 0 (greedy "
                          "replies would all be the same)")
    return args, args.samples
