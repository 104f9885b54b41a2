"""The folder layout of a k-fold training run, shared by the driver that writes it (train/folds.py) and the
commands that read it (infer's ``--model_path`` of a k-fold folder).

    <output_dir>/fold_plan.json       the plan: how many folds, their seed, the training file, each fold's identity
    <output_dir>/fold-<i>/            one complete training run per fold (adapter/, training_summary.json, ...)
    <output_dir>/oof_predictions.csv  every training row once, answered by the fold that did not train on it

A reader uses exactly the folds of the recorded plan, each finished with the identity the plan gives it: a fold
folder left from another plan (``--folds 3`` then ``--folds 2`` into one folder) is never averaged in.
"""

from __future__ import annotations

import json
from pathlib import Path

from mcqtune.files import write_json_atomic
from mcqtune.runs.provenance import FOLD_PLAN, ProvenanceError, read_json


CV_OUTPUTS = ("oof_predictions.csv", "cv_summary.json", "cv_report.md")


def fold_dir(output_dir: str | Path, fold: int) -> Path:
    return Path(output_dir) / f"fold-{fold}"


def fold_adapters(output_dir: str | Path) -> list[Path]:
    """The adapters of a k-fold run's finished folds, in fold order ([] when it is not a k-fold run)."""
    folders = sorted(Path(output_dir).glob("fold-*/adapter/adapter_config.json"),
                     key=lambda p: (int(p.parent.parent.name.split("-")[1])
                                    if p.parent.parent.name[5:].isdigit() else -1))
    return [p.parent for p in folders]


def fold_finished(folder: Path, identity: dict | None) -> bool:
    """A fold counts as done only when its run finished with exactly this identity."""
    summary, predictions = folder / "training_summary.json", folder / "validation_predictions.csv"
    if not (summary.is_file() and predictions.is_file()):
        return False
    try:
        return json.loads(summary.read_text(encoding="utf-8")).get("run_identity") == identity
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def write_fold_plan(output_dir: str | Path, folds: int, seed: int, train_file: dict | None,
                    identities: dict[int, dict]) -> Path:
    """The k-fold run's plan, written before any fold trains (the same content from every fold's process)."""
    plan = {"folds": folds, "seed": seed, "train_file": train_file,
            "fold_identities": {str(fold): identity for fold, identity in identities.items()}}
    return write_json_atomic(plan, Path(output_dir) / FOLD_PLAN)


def planned_folds(output_dir: str | Path, partial: bool = False) -> tuple[list[Path], dict]:
    """The adapters of a k-fold run's recorded plan, in fold order, and what was used (for the report). Every
    planned fold must have finished with its planned identity; with ``partial`` the finished ones are used."""
    folder = Path(output_dir)
    plan = read_json(folder / FOLD_PLAN)
    if plan is None or not isinstance(plan.get("fold_identities"), dict):
        raise ProvenanceError(f"{folder} holds fold-*/ folders but no readable {FOLD_PLAN}, so which folds belong "
                              "to the run cannot be checked: run its training command again (finished folds are kept "
                              "and the plan is written), or name the adapters with --model_path and --ensemble")
    folds = int(plan["folds"])
    finished = [fold for fold in range(folds)
                if fold_finished(fold_dir(folder, fold), plan["fold_identities"].get(str(fold)))]
    missing = [fold for fold in range(folds) if fold not in finished]
    if missing and not (partial and finished):
        raise ProvenanceError(f"{folder}: folds {', '.join(map(str, missing))} of its {folds}-fold plan are missing or "
                              "were trained with other settings; finish them with the training command, or pass "
                              f"--partial_folds true to answer with the {len(finished)} finished folds")
    used = {"plan": str(folder / FOLD_PLAN), "folds": folds, "used": finished, "missing": missing}
    return [fold_dir(folder, fold) / "adapter" for fold in finished], used
