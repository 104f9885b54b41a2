"""The folder layout of a k-fold training run, shared by the driver that writes it (train/folds.py) and the
commands that read it (infer's ``--model_path`` of a k-fold folder).

    <output_dir>/fold-<i>/            one complete training run per fold (adapter/, training_summary.json, ...)
    <output_dir>/oof_predictions.csv  every training row once, answered by the fold that did not train on it
"""

from __future__ import annotations

import json
from pathlib import Path


CV_OUTPUTS = ("oof_predictions.csv", "cv_summary.json", "cv_report.md")


def fold_dir(output_dir: str | Path, fold: int) -> Path:
    return Path(output_dir) / f"fold-{fold}"


def fold_adapters(output_dir: str | Path) -> list[Path]:
    """The adapters of a k-fold run's finished folds, in fold order ([] when it is not a k-fold run)."""
    folders = sorted(Path(output_dir).glob("fold-*/adapter/adapter_config.json"),
                     key=lambda p: (int(p.parent.parent.name.split("-")[1])
                                    if p.parent.parent.name[5:].isdigit() else -1))
    return [p.parent for p in folders]


def fold_finished(folder: Path, identity: dict) -> bool:
    """A fold counts as done only when its run finished with exactly this identity."""
    summary, predictions = folder / "training_summary.json", folder / "validation_predictions.csv"
    if not (summary.is_file() and predictions.is_file()):
        return False
    try:
        return json.loads(summary.read_text(encoding="utf-8")).get("run_identity") == identity
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
