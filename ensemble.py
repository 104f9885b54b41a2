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
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cli import UserError, run_cli
from letter_bias import debias
from mcq_dataset import LETTERS
from run_folder import same_file, set_aside, write_atomic, write_csv_atomic, write_json_atomic

logger = logging.getLogger("ensemble")

METHODS = ("mean", "logmean", "max", "fitted")
PROB_COLUMNS = tuple(f"p_{letter}" for letter in LETTERS)
TRUE_COLUMN = "true_answer"
SUBJECT_COLUMN = "subject"
SUM_TOLERANCE = 1e-3  # infer.py rounds each probability to 6 decimals
LOG_FLOOR = 1e-12  # a probability of 0 is read as this in log space


class EnsembleError(UserError):
    """A member, a validation file or an option that cannot be ensembled as given."""


@dataclass
class Member:
    """One run's predictions: its name as given, the rows in file order and their (n, 4) probabilities."""

    name: str
    path: Path
    frame: pd.DataFrame
    probs: np.ndarray
    test_file: str | None = None

    @property
    def ids(self) -> list[str]:
        return self.frame["ID"].tolist()

    @property
    def answers(self) -> np.ndarray:
        return np.array(LETTERS)[self.probs.argmax(axis=1)]


# ------------------------------------------------------------------------------------------ reading


def find_predictions(member: str) -> Path:
    """A run folder -> its predictions.csv; a file -> itself."""
    path = Path(member)
    if path.is_dir():
        path = path / "predictions.csv"
        if not path.is_file():
            raise EnsembleError(f"{member}: the folder has no predictions.csv; give an infer.py run folder or a "
                                "predictions.csv path")
    elif not path.is_file():
        raise EnsembleError(f"{member}: no such file or folder; give an infer.py run folder or a predictions.csv")
    return path


def read_test_file(predictions: Path) -> str | None:
    """The ``test_file`` recorded in the run's report.json beside the predictions, when there is one."""
    return read_report(predictions).get("test_file")


def read_report(predictions: Path) -> dict:
    report = predictions.with_name("report.json")
    try:
        found = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def test_file_identity(member: "Member") -> str | None:
    """What the member answered: the test file's hash recorded at answering time, else its recorded path."""
    report = read_report(member.path)
    return report.get("test_file_sha256") or report.get("test_file")


def check_ids(frame: pd.DataFrame, name: str) -> None:
    """Every row has an ID, and no ID appears twice."""
    if "ID" not in frame:
        raise EnsembleError(f"{name}: no ID column; give predictions.csv as infer.py writes it")
    if frame.empty:
        raise EnsembleError(f"{name}: no rows; give the predictions.csv of a finished run")
    empty = frame["ID"].str.strip() == ""
    if empty.any():
        raise EnsembleError(f"{name}: {int(empty.sum())} rows have no ID (first at row {int(empty.idxmax()) + 1})")
    repeated = frame["ID"][frame["ID"].duplicated()]
    if len(repeated):
        raise EnsembleError(f"{name}: {len(repeated)} duplicate IDs (e.g. '{repeated.iloc[0]}'); each question "
                            "must appear once")


def check_probabilities(frame: pd.DataFrame, name: str) -> np.ndarray:
    """The (n, 4) probabilities: present and numeric on every row, non-negative, summing to 1."""
    missing = [c for c in PROB_COLUMNS if c not in frame]
    if missing:
        raise EnsembleError(f"{name}: no {', '.join(missing)} columns; ensembling needs the letter probabilities "
                            "of every row (run infer.py in score mode)")
    probs = frame[list(PROB_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    problems = [("have no (or a non-numeric) probability; run infer.py in score mode", np.isnan(probs).any(axis=1)),
                ("have a negative probability", (probs < 0).any(axis=1))]
    problems.append(("have probabilities that do not sum to 1",
                     ~np.isnan(probs).any(axis=1) & (np.abs(probs.sum(axis=1) - 1) > SUM_TOLERANCE)))
    for what, bad in problems:
        if bad.any():
            raise EnsembleError(f"{name}: {int(bad.sum())} rows {what} (e.g. ID '{frame['ID'].iloc[bad.argmax()]}')")
    return probs / probs.sum(axis=1, keepdims=True)


def load_member(member: str) -> Member:
    """Read one member (IDs and answers as text) and check its IDs and probabilities."""
    path = find_predictions(member)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise EnsembleError(f"{member}: not a readable predictions.csv ({err})") from None
    check_ids(frame, member)
    probs = check_probabilities(frame, member)
    return Member(name=member, path=path, frame=frame, probs=probs, test_file=read_test_file(path))


def check_same_questions(first: Member, other: Member) -> None:
    """``other`` answered the questions of ``first``, in the same order."""
    mine, theirs = set(first.ids), set(other.ids)
    if mine != theirs:
        only_other, only_first = sorted(theirs - mine), sorted(mine - theirs)
        example = (f"'{only_other[0]}' is only in {other.name}" if only_other
                   else f"'{only_first[0]}' is only in {first.name}")
        raise EnsembleError(f"{other.name} answered other questions than {first.name}: "
                            f"{len(only_other) + len(only_first)} IDs differ (e.g. {example}); every member "
                            "must answer the same test file")
    if first.ids != other.ids:
        row = next(i for i, (a, b) in enumerate(zip(first.ids, other.ids)) if a != b)
        raise EnsembleError(f"{other.name} lists the questions of {first.name} in another order (row {row + 1}: "
                            f"'{other.ids[row]}' instead of '{first.ids[row]}'); run both on the same test file")


def load_members(names: Sequence[str]) -> list[Member]:
    """Every member, checked against the first one."""
    members = [load_member(name) for name in names]
    for number, member in enumerate(members):  # a member named twice would silently count double
        twice = next((m for m in members[:number] if same_file(m.path, member.path)), None)
        if twice is not None:
            raise EnsembleError(f"{member.name} and {twice.name} are the same predictions; name each member once")
    for other in members[1:]:
        check_same_questions(members[0], other)
    answered = {test_file_identity(m) for m in members} - {None}
    if len(answered) > 1:  # the same IDs need not be the same questions (another file, options reordered)
        names = ", ".join(sorted({str(m.test_file) for m in members}))
        raise EnsembleError(f"the members answered different test files ({names}; by their report.json): combine "
                            "runs of one test file only")
    return members


def true_labels(member: Member) -> np.ndarray | None:
    """The true answers (letters, '' where unknown), or None when the file has none."""
    if TRUE_COLUMN not in member.frame:
        return None
    labels = member.frame[TRUE_COLUMN].str.strip().str.upper().to_numpy()
    return labels if np.isin(labels, LETTERS).any() else None


def load_validation(names: Sequence[str], members: Sequence[Member]) -> list[Member]:
    """One validation run per member, each with a true answer on every row, all on the same questions."""
    if len(names) != len(members):
        raise EnsembleError(f"--validation got {len(names)} files for {len(members)} members; give one validation "
                            "run per member, in the members' order")
    for name, member in zip(names, members):
        if same_file(find_predictions(name), member.path):
            raise EnsembleError(f"--validation {name} is the test member {member.name} itself; weights are fitted "
                                "on validation predictions only")
    validation = load_members(names)
    for run in validation:
        labels = true_labels(run)
        if labels is None or not np.isin(labels, LETTERS).all():
            raise EnsembleError(f"--validation {run.name}: every row needs a true_answer A-D (run infer.py on a "
                                "validation file that has answers)")
    return validation


# ------------------------------------------------------------------------------------------ combining


def combine_mean(stack: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(members, n, 4) -> (n, 4): the (weighted) mean of the probabilities."""
    weights = np.full(len(stack), 1 / len(stack)) if weights is None else np.asarray(weights, dtype=float)
    return np.tensordot(weights, stack, axes=1)


def combine_logmean(stack: np.ndarray) -> np.ndarray:
    """(members, n, 4) -> (n, 4): exp of the mean log-probability, renormalised on each row."""
    logs = np.log(np.clip(stack, LOG_FLOOR, None)).mean(axis=0)
    combined = np.exp(logs - logs.max(axis=1, keepdims=True))
    return combined / combined.sum(axis=1, keepdims=True)


def choose_most_confident(stack: np.ndarray) -> np.ndarray:
    """(members, n, 4) -> (n,): on each row the member with the highest top probability (the first on a tie)."""
    return stack.max(axis=2).argmax(axis=0)


def combine_max(stack: np.ndarray) -> np.ndarray:
    """(members, n, 4) -> (n, 4): each row's probabilities from its most confident member."""
    return stack[choose_most_confident(stack), np.arange(stack.shape[1])]


def fit_weights(stack: np.ndarray, labels: Sequence[str], iterations: int = 5000, tol: float = 1e-12) -> np.ndarray:
    """Mixture weights (non-negative, sum 1) maximising sum_i log(sum_m w_m * p_m[i, true_i]).

    The objective is concave in the weights; the EM update for mixture weights, w_m <- mean_i of member m's
    share of row i's likelihood, stays on the simplex and never lowers it, so it climbs to the maximum.
    """
    index = np.array([LETTERS.index(letter) for letter in labels])
    likelihood = np.clip(stack[:, np.arange(stack.shape[1]), index], LOG_FLOOR, None)  # (members, n)
    weights = np.full(len(stack), 1 / len(stack))
    for _ in range(iterations):
        shares = weights[:, None] * likelihood
        updated = (shares / shares.sum(axis=0, keepdims=True)).mean(axis=1)
        if np.abs(updated - weights).max() < tol:
            return updated
        weights = updated
    return weights


def log_likelihood(probs: np.ndarray, labels: Sequence[str]) -> float:
    """Mean log-probability of the true answers."""
    index = np.array([LETTERS.index(letter) for letter in labels])
    return float(np.log(np.clip(probs[np.arange(len(probs)), index], LOG_FLOOR, None)).mean())


def combine(stack: np.ndarray, method: str, weights: np.ndarray | None = None) -> np.ndarray:
    """The ensemble's (n, 4) probabilities by ``method`` (``fitted`` uses the given weights)."""
    if method == "logmean":
        return combine_logmean(stack)
    if method == "max":
        return combine_max(stack)
    return combine_mean(stack, weights if method == "fitted" else None)


# ------------------------------------------------------------------------------------------ letter bias


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


# ------------------------------------------------------------------------------------------ report


def accuracy(answers: np.ndarray, labels: np.ndarray | None) -> dict | None:
    """Share of right answers over the rows whose true answer is known (None when none is)."""
    if labels is None:
        return None
    known = np.isin(labels, LETTERS)
    right = int((answers[known] == labels[known]).sum())
    return {"accuracy": right / int(known.sum()), "correct": right, "labelled": int(known.sum())}


def pairwise_agreement(answers: dict[str, np.ndarray]) -> list[dict]:
    """For every pair of members, the share of questions they answer alike."""
    names = list(answers)
    return [{"a": a, "b": b, "agreement": float((answers[a] == answers[b]).mean())}
            for i, a in enumerate(names) for b in names[i + 1:]]


def answer_distribution(answers: np.ndarray) -> dict[str, int]:
    return {letter: int((answers == letter).sum()) for letter in LETTERS}


def describe_members(members: Sequence[Member], answers: np.ndarray, labels: np.ndarray | None) -> list[dict]:
    """Each member's file, accuracy (against ``labels``), answer distribution and agreement with the ensemble."""
    return [{"name": m.name, "predictions": str(m.path), "test_file": m.test_file,
             "accuracy": accuracy(m.answers, labels),
             "answer_distribution": answer_distribution(m.answers),
             "agreement_with_ensemble": float((m.answers == answers).mean())} for m in members]


def validation_section(validation: Sequence[Member], method: str, weights: np.ndarray | None) -> dict:
    """Members' and ensemble's accuracy on the validation runs (in-sample for the fitted weights)."""
    labels = true_labels(validation[0])
    stack = np.stack([v.probs for v in validation])
    probs = combine(stack, method, weights)
    ensemble = np.array(LETTERS)[probs.argmax(axis=1)]
    return {"members": [{"name": v.name, "accuracy": accuracy(v.answers, true_labels(v)),
                         "log_likelihood": log_likelihood(v.probs, true_labels(v))} for v in validation],
            "ensemble": {"accuracy": accuracy(ensemble, labels), "log_likelihood": log_likelihood(probs, labels)}}


def build_report(members, validation, args, weights, probs: np.ndarray) -> dict:
    """Everything ensemble_report.json holds."""
    answers = np.array(LETTERS)[probs.argmax(axis=1)]
    labels = next((true_labels(m) for m in members if true_labels(m) is not None), None)
    report = {"method": args.method, "rows": len(probs), "output_file": args.output_file,
              "weights": None if weights is None else dict(zip([m.name for m in members], map(float, weights))),
              "debias_prior": None if args.prior is None else dict(zip(LETTERS, map(float, args.prior))),
              "members": describe_members(members, answers, labels),
              "ensemble": {"accuracy": accuracy(answers, labels), "answer_distribution": answer_distribution(answers)},
              "pairwise_agreement": pairwise_agreement({m.name: m.answers for m in members})}
    if args.method == "max":
        chosen = choose_most_confident(np.stack([m.probs for m in members]))
        report["rows_decided"] = {m.name: int((chosen == k).sum()) for k, m in enumerate(members)}
    if validation:
        report["validation"] = validation_section(validation, args.method, weights)
    return report


def format_accuracy(result: dict | None) -> str:
    return "-" if result is None else f"{result['accuracy']:.2%} ({result['correct']}/{result['labelled']})"


def list_items(report: dict) -> list[str]:
    """The heading and the summary lines of ensemble_report.md."""
    lines = [f"# Ensemble of {len(report['members'])} runs ({report['method']})", "",
             f"- rows: {report['rows']}", f"- ensemble accuracy: {format_accuracy(report['ensemble']['accuracy'])}"]
    if report["debias_prior"]:
        prior = report["debias_prior"].items()
        lines.append("- letter prior divided out: " + ", ".join(f"{k} {v:.3f}" for k, v in prior))
    if "rows_decided" in report:
        decided = report["rows_decided"].items()
        lines.append("- rows decided by each member: " + ", ".join(f"{k} {v}" for k, v in decided))
    return lines


def tabulate_members(report: dict) -> list[str]:
    """Members and ensemble: weight, accuracy, agreement with the ensemble, answers per letter; then the pairs."""
    weights = report["weights"] or {}
    lines = ["", "| member | weight | accuracy | agrees with ensemble | " + " | ".join(LETTERS) + " |",
             "|---|---|---|---|" + "---|" * len(LETTERS)]
    for m in report["members"]:
        weight = f"{weights[m['name']]:.3f}" if m["name"] in weights else "-"
        counts = " | ".join(str(m["answer_distribution"][k]) for k in LETTERS)
        lines.append(f"| {m['name']} | {weight} | {format_accuracy(m['accuracy'])} | "
                     f"{m['agreement_with_ensemble']:.2%} | {counts} |")
    counts = " | ".join(str(report["ensemble"]["answer_distribution"][k]) for k in LETTERS)
    lines += [f"| **ensemble** | | {format_accuracy(report['ensemble']['accuracy'])} | | {counts} |", ""]
    lines += ["## Pairwise agreement (share of identical answers)", "", "| member | member | agreement |",
              "|---|---|---|"]
    return lines + [f"| {p['a']} | {p['b']} | {p['agreement']:.2%} |" for p in report["pairwise_agreement"]]


def tabulate_validation(report: dict) -> list[str]:
    """Accuracy and log-likelihood of each validation run and of the ensemble on them."""
    if "validation" not in report:
        return []
    section = report["validation"]
    lines = ["", "## Validation", "", "| member | accuracy | log-likelihood |", "|---|---|---|"]
    lines += [f"| {v['name']} | {format_accuracy(v['accuracy'])} | {v['log_likelihood']:.4f} |"
              for v in section["members"]]
    lines.append(f"| **ensemble** | {format_accuracy(section['ensemble']['accuracy'])} | "
                 f"{section['ensemble']['log_likelihood']:.4f} |")
    if report["method"] == "fitted":
        lines += ["", "The weights were fitted on these rows: the ensemble's validation figures are in-sample."]
    return lines


def render_markdown(report: dict) -> str:
    """ensemble_report.md: the same facts as the JSON, as tables."""
    return "\n".join(list_items(report) + tabulate_members(report) + tabulate_validation(report)) + "\n"


# ------------------------------------------------------------------------------------------ writing


def build_predictions(first: Member, probs: np.ndarray) -> pd.DataFrame:
    """ID, answer, p_A..p_D (+ true_answer, subject when the first member has them), in the first member's order."""
    predictions = pd.DataFrame({"ID": first.frame["ID"], "answer": np.array(LETTERS)[probs.argmax(axis=1)]})
    for k, column in enumerate(PROB_COLUMNS):
        predictions[column] = np.round(probs[:, k], 6)
    for column in (TRUE_COLUMN, SUBJECT_COLUMN):
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
    parser.add_argument("--method", default="mean", choices=METHODS)
    parser.add_argument("--validation", nargs="+", default=[], metavar="VMEMBER",
                        help="validation runs (with true_answer), one per member in the same order")
    parser.add_argument("--report_dir", default=None, help="default: <output_file stem>_ensemble/")
    parser.add_argument("--debias_prior", default=None, metavar="A,B,C,D",
                        help="divide the combined probabilities by this letter prior before answering")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = make_parser().parse_args(argv)
    if args.method == "fitted" and not args.validation:
        raise EnsembleError("--method fitted needs --validation (one validation run per member): weights are "
                            "never fitted on the test predictions")
    args.prior = None if args.debias_prior is None else parse_prior(args.debias_prior)
    return args


def ensemble(args: argparse.Namespace) -> dict:
    """Load and check, fit the weights on validation if asked, combine, write; returns the report."""
    members = load_members(args.members)
    validation = load_validation(args.validation, members) if args.validation else []
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


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = ensemble(parse_args(argv))
    summary = {"rows": report["rows"], "method": report["method"], "weights": report["weights"]}
    if report["ensemble"]["accuracy"]:
        summary["accuracy"] = report["ensemble"]["accuracy"]["accuracy"]
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
