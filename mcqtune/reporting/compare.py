"""Runs side by side on one labelled file: direct scoring, reasoning, the reasoning cascade, or any other runs.

    mcq-tune infer ... --test_file val.csv --output_file direct.csv                      # score mode
    mcq-tune infer ... --test_file val.csv --output_file reason.csv --mode reason
    mcq-tune infer ... --test_file val.csv --output_file cascade.csv --mode reason --rescore direct_run
    mcq-tune compare direct_run reason_run cascade_run --output_file compare.md

Each run folder's report.json and predictions.csv give: accuracy overall and per subject, seconds and generated
tokens per question, and the share of answers that came from a fallback (a reasoning reply closed and scored, a
generated reply answered by scoring). Every run must have answered the same labelled file (by the test file's
bytes their reports recorded: runs/provenance.py). Writes the Markdown table and ``<stem>.json`` beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mcqtune.errors import UserError
from mcqtune.runs.provenance import predictions_record

FALLBACK_SOURCES = ("reason_closed", "score_fallback")


def describe_run(folder: Path) -> dict:
    """One run's row of the comparison."""
    report = predictions_record(folder / "predictions.csv") or {}
    if "accuracy_on_labelled_rows" in report:
        raise UserError(f"{folder}: its test file is labelled on {report['accuracy_on_labelled_rows']['rows']} of "
                        f"{report.get('rows')} rows; compare runs of a file with an answer on every row")
    if "accuracy" not in report:
        raise UserError(f"{folder}: its report.json has no accuracy; compare runs of a labelled file (with an "
                        "answer column)")
    predictions = pd.read_csv(folder / "predictions.csv", dtype={"ID": str, "answer": str}, keep_default_na=False)
    rows = len(predictions)
    reasoning = report.get("reasoning") or {}
    tokens = (reasoning.get("votes") or reasoning).get("generated_tokens")
    mode = report.get("mode")
    if reasoning.get("votes"):
        mode = f"reason, vote of up to {report.get('samples')}"
    seconds, answered = report.get("seconds"), report.get("answered_this_run") or rows
    return {"run": str(folder), "mode": mode, "rows": rows, "accuracy": report["accuracy"],
            "accuracy_by_subject": report.get("accuracy_by_subject", {}),
            "seconds_per_question": round(seconds / answered, 3) if seconds and answered else None,
            "generated_tokens_per_question": round(tokens / rows, 1) if tokens is not None and rows else None,
            "fallback_share": fallback_share(predictions, reasoning.get("votes")),
            "rescored_rows": (report.get("rescore") or {}).get("rows")}


def fallback_share(predictions: pd.DataFrame, votes: dict | None) -> float:
    """The share of answers from a fallback; for a vote, the share of its replies closed and scored."""
    if votes:
        return round(votes["closed_and_scored_replies"] / votes["replies"], 4) if votes["replies"] else 0.0
    return round(float(predictions["source"].isin(FALLBACK_SOURCES).mean()), 4)


def shown(value) -> str:
    return "-" if value is None else str(value)


def render(rows: list[dict]) -> str:
    lines = ["# Runs compared on one labelled file", "",
             "| run | mode | accuracy | s / question | generated tokens / question | fallback share | rows answered "
             "again |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = [shown(r["seconds_per_question"]), shown(r["generated_tokens_per_question"])]
        lines.append(f"| `{r['run']}` | {r['mode']} | {r['accuracy']:.2%} | {cells[0]} | {cells[1]} | "
                     f"{r['fallback_share']:.1%} | {r['rescored_rows'] or '-'} |")
    subjects = sorted({s for r in rows for s in r["accuracy_by_subject"]})
    if subjects:
        lines += ["", "| subject | " + " | ".join(f"`{Path(r['run']).name}`" for r in rows) + " |",
                  "| --- |" + " --- |" * len(rows)]
        for subject in subjects:
            cells = [r["accuracy_by_subject"].get(subject) for r in rows]
            lines.append(f"| {subject} | " + " | ".join("-" if c is None else f"{c:.2%}" for c in cells) + " |")
    lines += ["", "Fallback share: answers from a reasoning reply closed and scored, or a generated reply answered by "
                  "scoring. Seconds: answering time of the run's last invocation (start-up excluded) per question it "
                  "answered; a cascade's excludes its first run."]
    return "\n".join(lines) + "\n"


def refuse_usage(message: str):
    """argparse's mistakes as one line (errors.run_cli), not a page of usage."""
    raise UserError(f"bad option: {message}; see --help")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="infer.py run folders (predictions.csv and report.json inside)")
    parser.add_argument("--output_file", default="compare.md", help="the table, in Markdown (default compare.md); "
                                                                    "its JSON goes beside it (compare.json)")
    parser.error = refuse_usage
    return parser
