"""Provenance: what one run hands another carries the identity it was made with, and every consumer that combines
runs checks it here, in one place, refusing in one line that names both sides.

    run folder / predictions.csv   report.json beside it: the test file's bytes (sha256), mode, models
    k-fold folder                  fold_plan.json: the folds, their seed, the training file, each fold's identity
    adapter/                       mcq_provenance.json: the base model, the prompt settings it was trained with

A bare predictions.csv (no report.json beside it) cannot say what it answered; it is refused unless the user
says so (``--allow_bare_predictions true``).
"""

from __future__ import annotations

import json
from pathlib import Path

from mcqtune.errors import UserError

PREDICTIONS_RECORD = "report.json"  # written by infer.py beside predictions.csv
FOLD_PLAN = "fold_plan.json"  # written by the k-fold driver at the k-fold folder's root
ALLOW_BARE_HINT = "--allow_bare_predictions true"


class ProvenanceError(UserError):
    """Two artifacts that are being combined were not made for each other."""


def read_json(path: Path) -> dict | None:
    """A JSON record, or None when it is missing or unreadable (a damaged record proves nothing)."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def predictions_record(predictions: str | Path) -> dict | None:
    """The provenance of a predictions.csv: its run's report.json (None for a bare file)."""
    return read_json(Path(predictions).with_name(PREDICTIONS_RECORD))


def answered_sha(record: dict | None) -> str | None:
    return (record or {}).get("test_file_sha256")


def check_answered(predictions: str | Path, test_sha: str | None, *, consumer: str, test_name: str,
                   allow_bare: bool = False) -> dict | None:
    """``predictions`` must have answered the test file whose bytes hash to ``test_sha``. A file without a record
    is refused unless ``allow_bare``; a record of another test file is always refused."""
    record = predictions_record(predictions)
    found = answered_sha(record)
    if found is None:
        if allow_bare:
            return None
        raise ProvenanceError(f"{consumer}: {predictions} has no report.json beside it, so what it answered cannot "
                              f"be checked; give its infer.py run folder, or pass {ALLOW_BARE_HINT} if you are sure "
                              f"it answered {test_name}")
    if test_sha is not None and found != test_sha:
        raise ProvenanceError(f"{consumer}: {predictions} answered another test file ({record.get('test_file')}, "
                              f"sha256 {found[:12]}) than {test_name} (sha256 {test_sha[:12]}); the same IDs "
                              "need not be the same questions: use a run of this very file")
    return record


def check_same_answered(paths: list[Path], *, consumer: str, allow_bare: bool = False) -> str | None:
    """All ``paths`` (predictions.csv files) answered one test file, by their records; the test file's sha256."""
    shas = {}
    for path in paths:
        record = predictions_record(path)
        sha = answered_sha(record)
        if sha is None and not allow_bare:
            raise ProvenanceError(f"{consumer}: {path} has no report.json beside it, so what it answered cannot be "
                                  f"checked; give its infer.py run folder, or pass {ALLOW_BARE_HINT}")
        if sha is not None:
            shas.setdefault(sha, path)
    if len(shas) > 1:
        (a, first), (b, second) = list(shas.items())[:2]
        raise ProvenanceError(f"{consumer}: {first} and {second} answered different test files (sha256 {a[:12]} and "
                              f"{b[:12]}, by their report.json); combine runs of one test file only")
    return next(iter(shas), None)


def base_fingerprint(name_or_path: str) -> dict:
    """A base model as adapters record it, comparable across copies: its config and its weight files by name and
    size (a hub id by id and cached revision)."""
    from mcqtune.runs.identity import model_identity

    found = model_identity(name_or_path)
    if "hub_id" in found:
        return found
    return {"config_sha256": found["config_sha256"],
            "weights": [{"name": w["name"], "size": w["size"]} for w in found["weights"]]}


def check_same_base(base: str, member_base: str, member: str, *, consumer: str) -> None:
    """An adapter combined with others must have been trained on the base model the run loads."""
    if base == member_base or base_fingerprint(base) == base_fingerprint(member_base):
        return
    raise ProvenanceError(f"{consumer}: the adapter {member} was trained on {member_base}, another model than the "
                          f"run's base {base}; only adapters of one base model can be averaged (answer with each "
                          "model apart and combine the runs with ensemble.py)")
