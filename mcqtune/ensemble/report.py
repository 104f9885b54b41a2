"""ensemble_report.json and ensemble_report.md: each member's accuracy (where true answers are known), the
ensemble's, the weights, pairwise agreement between members, the answer distribution and, with validation
runs, both on those (in-sample for fitted weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mcqtune.ensemble.combine import choose_most_confident, combine, log_likelihood
from mcqtune.ensemble.members import Member, true_labels
from mcqtune.data.questions import LETTERS


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
    report = {"method": args.method, "rows": len(probs), "output_file": str(Path(args.output_file).resolve()),
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
