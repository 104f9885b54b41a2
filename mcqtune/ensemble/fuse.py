"""Combine the letter probabilities of several inference runs into one submission, with a report.

    python ensemble.py runs/a_run runs/b_run --output_file submission.csv
    python ensemble.py runs/a_run runs/b_run --output_file submission.csv --method fitted \\
        --validation val/a_run val/b_run

A MEMBER is an ``infer.py`` run folder (holding ``predictions.csv``) or a ``predictions.csv`` path. Every
member must have answered the same questions, in the same order, with the four letter probabilities
``p_A..p_D`` on every row (score mode). Methods:

* ``mean`` (default): the mean of the members' probabilities.
* ``logmean``: the mean of their log-probabilities (a geometric mean), renormalised.
* ``max``: on each row, the member whose top probability is highest decides (its probabilities are kept).
* ``fitted``: a weighted mean whose non-negative weights (summing to 1) maximise the log-likelihood of the
  true answers of ``--validation`` predictions: one validation run per member, in the members' order, each
  with ``true_answer``. The weights never see the test members, even when those carry true answers.

``--debias_prior A,B,C,D`` divides the combined probabilities by a letter prior (see ``letter_bias.py``)
and renormalises, before the answers are chosen.

Writes the submission ``ID,answer`` and, in ``--report_dir`` (default ``<output stem>_ensemble/``),
``predictions.csv``, ``ensemble_report.json`` and ``ensemble_report.md``: each member's accuracy (where true
answers are known), the ensemble's, the weights, pairwise agreement between members and the answer
distribution. Every mistake in the inputs is one ``error:`` line and exit status 1 (``cli.run_cli``).

The members are read and checked in ``members.py``, combined in ``combine.py`` and described
in ``report.py``; this file is the command line and the outputs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mcqtune.ensemble.combine import METHODS, combine, fit_weights
from mcqtune.ensemble.members import EnsembleError, Member, load_members, load_validation, true_labels
from mcqtune.ensemble.report import build_report, render_markdown
from mcqtune.core.letter_bias import debias
from mcqtune.data.questions import LETTERS, SUBJECT_COLUMN
from mcqtune.runs.predictions import PROB_COLUMNS, TRUE_ANSWER_COLUMN
from mcqtune.runs.folder import same_file, set_aside, ownership_problem
from mcqtune.files import write_atomic, write_csv_atomic, write_json_atomic

logger = logging.getLogger("ensemble")


def parse_prior(text: str) -> np.ndarray:
    """'A,B,C,D' (four positive numbers) -> the normalised prior."""
    try:
        values = np.array([float(part) for part in text.split(",")])
    except ValueError:
        values = np.array([])
    if values.shape != (len(LETTERS),) or not np.isfinite(values).all() or (values <= 0).any():
        raise EnsembleError(f"--debias_prior must be four positive numbers A,B,C,D (e.g. 0.3,0.25,0.25,0.2), "
                            f"got '{text}'")
    return values / values.sum()


def build_predictions(first: Member, probs: np.ndarray) -> pd.DataFrame:
    """ID, answer, p_A..p_D (+ true_answer, subject when the first member has them), in the first member's order."""
    predictions = pd.DataFrame({"ID": first.frame["ID"], "answer": np.array(LETTERS)[probs.argmax(axis=1)]})
    for k, column in enumerate(PROB_COLUMNS):
        predictions[column] = np.round(probs[:, k], 6)
    for column in (TRUE_ANSWER_COLUMN, SUBJECT_COLUMN):
        if column in first.frame:
            predictions[column] = first.frame[column].to_numpy()
    return predictions


def report_dir_of(args) -> Path:
    if args.report_dir:
        return Path(args.report_dir)
    out = Path(args.output_file)
    return out.with_name(out.stem + "_ensemble")


REPORT_FILES = ("predictions.csv", "ensemble_report.json", "ensemble_report.md")


def check_outputs(args, inputs: Sequence[Path]) -> None:
    """The submission and the report must never overwrite an input."""
    out, report_dir = Path(args.output_file), report_dir_of(args)
    if out.is_dir():
        raise EnsembleError(f"--output_file {out} is a folder; name a .csv file")
    if report_dir.exists() and not report_dir.is_dir():
        raise EnsembleError(f"--report_dir {report_dir} is a file; name a folder")
    written = [out] + [report_dir / name for name in REPORT_FILES]
    for source in inputs:
        if any(same_file(target, source) for target in written):
            raise EnsembleError(f"--output_file / --report_dir would overwrite the input {source}; write elsewhere")
    owner = ownership_problem(out, report_dir / "ensemble_report.json", "--output_file")
    if owner:
        raise EnsembleError(owner)


def write_outputs(args, predictions: pd.DataFrame, report: dict) -> Path:
    """Report folder first, submission last: the submission exists only when everything else was written."""
    report_dir = report_dir_of(args)
    set_aside(report_dir, [Path(args.output_file).resolve(), *REPORT_FILES], "outputs of an earlier ensemble")
    write_csv_atomic(predictions, report_dir / "predictions.csv")
    write_json_atomic(report, report_dir / "ensemble_report.json")
    write_atomic(report_dir / "ensemble_report.md", render_markdown(report))
    write_csv_atomic(predictions[["ID", "answer"]], Path(args.output_file))
    return report_dir


# ------------------------------------------------------------------------------------------ CLI


class EnsembleParser(argparse.ArgumentParser):
    """argparse whose mistakes are one EnsembleError line (run_cli), not usage text and exit 2."""

    def error(self, message: str):
        raise EnsembleError(f"{message}; see --help")


def make_parser() -> argparse.ArgumentParser:
    parser = EnsembleParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("members", nargs="+", metavar="MEMBER", help="infer.py run folder or predictions.csv")
    parser.add_argument("--output_file", required=True, help="where the submission ID,answer goes")
    parser.add_argument("--method", default="mean", choices=METHODS,
                        help="how the members' probabilities combine: mean (the default), logmean (their geometric "
                             "mean, renormalised), max (each question from its most confident member), fitted (a "
                             "weighted mean, the weights fitted on --validation)")
    parser.add_argument("--validation", nargs="+", default=[], metavar="VMEMBER",
                        help="validation runs (with true_answer), one per member in the same order: each "
                             "member's and the ensemble's accuracy on them goes in the report, and --method fitted "
                             "fits its weights on them")
    parser.add_argument("--report_dir", default=None, help="default: <output_file stem>_ensemble/")
    parser.add_argument("--allow_bare_predictions", type=lambda v: v.lower() in ("1", "true", "yes"), default=False,
                        metavar="BOOL", help="accept a member predictions.csv without its run's report.json (what it "
                                             "answered cannot be checked)")
    parser.add_argument("--debias_prior", default=None, metavar="A,B,C,D",
                        help="divide the combined probabilities by this letter prior before answering")
    return parser


def ensemble(args: argparse.Namespace) -> dict:
    """Load and check, fit the weights on validation if asked, combine, write; returns the report."""
    members = load_members(args.members, allow_bare=args.allow_bare_predictions)
    validation = load_validation(args.validation, members, args.allow_bare_predictions) if args.validation else []
    check_outputs(args, [m.path for m in members + validation] + [Path(m.test_file) for m in members if m.test_file])
    weights = None if args.method == "max" else np.full(len(members), 1 / len(members))  # logmean: exponents
    if args.method == "fitted":
        weights = fit_weights(np.stack([v.probs for v in validation]), true_labels(validation[0]))
    probs = combine(np.stack([m.probs for m in members]), args.method, weights)
    if args.prior is not None:
        probs = debias(probs, args.prior)
    report = build_report(members, validation, args, weights, probs)
    report_dir = write_outputs(args, build_predictions(members[0], probs), report)
    logger.info("wrote %s (%d answers, %s) and %s", args.output_file, len(probs), args.method, report_dir)
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = make_parser().parse_args(argv)
    if args.method == "fitted" and not args.validation:
        raise EnsembleError("--method fitted needs --validation (one validation run per member): weights are "
                            "never fitted on the test predictions")
    args.prior = None if args.debias_prior is None else parse_prior(args.debias_prior)
    return args
