"""k-fold training: K adapters, each validated on its own fold; out-of-fold predictions and a CV report.

    python train_sft.py --config configs/qwen2.5-14b-4090.yaml --train_file train.csv --folds 5
    python train_sft.py --config configs/qwen2.5-14b-4090.yaml --train_file train.csv --folds 5 --fold 2  # one fold

The folds of train_file are stratified by answer letter (and by subject where the file has one) and seeded.
Fold i trains on the other folds into ``<output_dir>/fold-<i>/`` (a complete training run: adapter, checkpoints,
summary, ``validation_predictions.csv`` for its own fold). A fold whose finished run has this run's identity is
not trained again; an interrupted fold resumes with ``--resume true`` under the sealed-checkpoint rules. When
every fold is done, ``<output_dir>/oof_predictions.csv`` holds every training row exactly once, and
``cv_summary.json`` / ``cv_report.md`` give per-fold and out-of-fold accuracy (overall, per subject, per letter)
with its standard error. Answer the test file with every fold at once:
``python infer.py --model_path <output_dir> ...`` averages the folds' probabilities.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from mcqtune.data.questions import ANSWER_COLUMN, LETTERS, SUBJECT_COLUMN
from mcqtune.errors import ConfigError, UserError
from mcqtune.runs.folder import set_aside
from mcqtune.runs.folds import CV_OUTPUTS, fold_dir, fold_finished, write_fold_plan
from mcqtune.runs.identity import same_json
from mcqtune.runs.provenance import FOLD_PLAN, read_json
from mcqtune.train.run import train_locked, training_run_identity

logger = logging.getLogger(__name__)


class FoldFailed(UserError):
    """A fold's child process failed; what it printed says why, the finished folds are kept."""


def assign_folds(frame: pd.DataFrame, folds: int, seed: int = 42) -> list[int]:
    """Fold 0..folds-1 for each row, stratified by answer letter (and by subject where the file has one) and
    seeded: rows of each stratum are shuffled and dealt round-robin, continuing from one stratum to the next, so
    every fold gets each letter's share and the folds differ in size by at most one row."""
    import random

    if folds < 2 or folds > len(frame):
        raise ValueError(f"folds must be between 2 and the number of rows ({len(frame)}), got {folds}")
    rng = random.Random(seed)
    keys = frame[ANSWER_COLUMN].astype(str)
    if SUBJECT_COLUMN in frame:
        keys = keys + "|" + frame[SUBJECT_COLUMN].astype(str)
    assignment, dealt = [0] * len(frame), 0
    for key in sorted(set(keys)):
        rows = [i for i, k in enumerate(keys) if k == key]
        rng.shuffle(rows)
        for row in rows:
            assignment[row] = dealt % folds
            dealt += 1
    return assignment


def train_folds(script_args, training_args, backend: str) -> dict:
    """Train the asked-for folds, skipping finished ones, and write the CV outputs when all are done. With
    ``--fold i`` this process trains fold i itself; without it each unfinished fold runs in a child process of its
    own (run_fold_process), so every fold starts from an empty card and a crash in one fold cannot take the
    finished ones with it."""
    from mcqtune.train.data import load_training_file

    frame = load_training_file(script_args)
    if script_args.folds > len(frame):
        raise ConfigError(f"--folds {script_args.folds} needs at least {script_args.folds} training rows; "
                          f"{script_args.train_file} has {len(frame)}")
    assignment = pd.Series(assign_folds(frame, script_args.folds, training_args.seed), index=frame.index)
    if training_args.should_save:
        write_plan(script_args, training_args)
    if script_args.fold is not None:
        train_fold(script_args, training_args, backend, frame, assignment, script_args.fold)
    else:
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise ConfigError("under torchrun / accelerate launch, --folds K trains one fold per launch: add "
                              "--fold i (0..K-1) and launch once per fold")
        trained = False
        for fold in range(script_args.folds):
            fold_script, fold_training = fold_arguments(script_args, training_args, fold)
            if fold_finished(Path(fold_training.output_dir), training_run_identity(fold_script, fold_training)):
                logger.info("fold %d of %d is already trained with these settings: kept", fold, script_args.folds)
                continue
            if not trained:  # the report of the earlier folds is kept, not overwritten
                set_aside(training_args.output_dir, CV_OUTPUTS, "out-of-fold outputs of earlier folds")
            trained = True
            run_fold_process(fold_script, training_args, backend)
    if not training_args.should_save:
        return {"rank": training_args.process_index}
    return write_cv_outputs(Path(training_args.output_dir), frame, script_args.folds, oof_provenance(script_args,
                                                                                                 training_args))


def oof_provenance(script_args, training_args) -> dict:
    """What the out-of-fold predictions answered and with which models, in cv_summary.json (runs/provenance.py
    reads it as the record of oof_predictions.csv, e.g. for ensemble.py --validation)."""
    from mcqtune.runs.identity import csv_identity

    return {"test_file": script_args.train_file,
            "test_file_sha256": csv_identity(script_args.train_file, script_args.encoding)["bytes_sha256"],
            "base_model": script_args.model_name_or_path,
            "adapters": [str((fold_dir(training_args.output_dir, fold) / "adapter").resolve())
                         for fold in range(script_args.folds)]}


def write_plan(script_args, training_args) -> None:
    """fold_plan.json: the folds, their seed, the training file and each fold's identity (runs/folds.py), which is
    what a reader of the k-fold folder checks. A plan of other settings is replaced, and the folds it had beyond
    the new plan's are set aside (a reader never finds a fold of another plan); with --fold i it is refused while
    any of its folds is finished."""
    identities = {fold: training_run_identity(*fold_arguments(script_args, training_args, fold))
                  for fold in range(script_args.folds)}
    train_file = next(iter(identities.values())).get("train_file")
    earlier = read_json(Path(training_args.output_dir) / FOLD_PLAN)
    planned = {str(k): v for k, v in same_json(identities).items()}
    if earlier and earlier.get("fold_identities") != planned:
        kept = [int(k) for k, identity in (earlier.get("fold_identities") or {}).items()
                if fold_finished(fold_dir(training_args.output_dir, int(k)), identity)]
        changed = plan_changes(earlier, planned, script_args.folds)
        if script_args.fold is not None and kept:
            raise ConfigError(f"{training_args.output_dir} holds a k-fold run of other settings (differing: "
                              f"{', '.join(changed)}; folds {earlier.get('folds')}, seed {earlier.get('seed')}, "
                              f"finished folds {kept}); train "
                              f"--fold {script_args.fold} "
                              "with that run's settings, into another --output_dir, or run every fold without --fold "
                              "to replace it")
        set_aside_other_plan(training_args.output_dir, earlier, changed, script_args.folds)
    write_fold_plan(training_args.output_dir, script_args.folds, training_args.seed, train_file, identities)


def plan_changes(earlier: dict, planned: dict, folds: int) -> list[str]:
    """The settings in which an earlier k-fold plan differs from this one (keys of the fold identities)."""
    from mcqtune.runs.identity import changed_keys

    old = earlier.get("fold_identities") or {}
    changed = {key for k in set(old) & set(planned) for key in changed_keys(old[k], planned[k])}
    changed = sorted(changed | ({"folds"} if earlier.get("folds") != folds else set())) or ["fold identities"]
    return changed if len(changed) <= 6 else [*changed[:6], f"{len(changed) - 6} more"]


def set_aside_other_plan(output_dir: str, earlier: dict, changed: list[str], folds: int) -> None:
    """The folds of an earlier plan that the new one does not have, moved aside, naming what changed (the folds it
    shares are retrained, each setting its own earlier outputs aside, unless finished with the same identity)."""
    old = earlier.get("fold_identities") or {}
    stale = [fold_dir(output_dir, int(k)).name for k in old if k.isdigit() and int(k) >= folds]
    logger.warning("%s: the k-fold plan changed (%s): folds of other settings are trained again", output_dir,
                   ", ".join(changed))
    set_aside(output_dir, stale, f"folds of an earlier {earlier.get('folds')}-fold plan that this "
                                 f"{folds}-fold plan does not have")


def fold_arguments(script_args, training_args, fold: int):
    """The options of fold ``fold``: the same run, validated on its fold, into ``<output_dir>/fold-<i>/``."""
    fold_script = dataclasses.replace(script_args, fold=fold)
    fold_training = copy.deepcopy(training_args)
    fold_training.output_dir = str(fold_dir(training_args.output_dir, fold))
    return fold_script, fold_training


def train_fold(script_args, training_args, backend: str, frame: pd.DataFrame, assignment: pd.Series,
               fold: int) -> dict | None:
    """Fold ``fold`` in this process (unless it finished with these settings): train on the other folds."""
    from mcqtune.train.data import load_splits

    fold_script, fold_training = fold_arguments(script_args, training_args, fold)
    if fold_finished(Path(fold_training.output_dir), training_run_identity(fold_script, fold_training)):
        logger.info("fold %d of %d is already trained with these settings: kept", fold, script_args.folds)
        return None
    logger.info("fold %d of %d: %d training rows, %d validation rows", fold, script_args.folds,
                int((assignment != fold).sum()), int((assignment == fold).sum()))
    train, val = load_splits(fold_script, training_args.seed, frame[assignment != fold].reset_index(drop=True),
                             frame[assignment == fold].reset_index(drop=True))
    if training_args.should_save:  # the report of the earlier folds is kept, not overwritten
        set_aside(training_args.output_dir, CV_OUTPUTS, "out-of-fold outputs of earlier folds")
    return train_locked(fold_script, fold_training, backend, train, val)


PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder holding mcqtune/, for the child's imports
FOLD_WORKER = [sys.executable, "-m", "mcqtune.train.fold_worker"]


def run_fold_process(fold_script, training_args, backend: str) -> None:
    """Fold ``fold_script.fold`` as a child process (fold_worker.py) that runs ``train_folds`` with ``--fold i``
    over the k-fold run's own options (handed over on standard input as JSON); its log goes to this terminal. A
    fold that fails stops the k-fold run with one line; finished folds are kept."""
    payload = json.dumps({"script_args": dataclasses.asdict(fold_script),
                          "training_args": trainer_options(training_args), "backend": backend})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_PARENT),
                                                                     os.environ.get("PYTHONPATH")]))}
    logger.info("fold %d of %d: training in a child process", fold_script.fold, fold_script.folds)
    result = subprocess.run(FOLD_WORKER, input=payload, text=True, env=env)
    if result.returncode != 0:
        how = f"was killed by signal {-result.returncode}" if result.returncode < 0 else \
            f"stopped with exit status {result.returncode} (its message is above)"
        raise FoldFailed(f"fold {fold_script.fold} of {fold_script.folds} {how}; the finished folds are kept in "
                         f"{training_args.output_dir}: run the same command again to continue "
                         "(add --resume true to continue the fold from its last checkpoint)")


def trainer_options(training_args) -> dict:
    """The Trainer options that differ from SFTConfig's defaults, as JSON values (enums by value); the child
    builds its SFTConfig from them, so every option it runs with equals this process's."""
    from trl import SFTConfig

    # precision and device are always passed: SFTConfig's own default (bf16 where supported) is refused on a CPU
    # unless Unsloth is imported, which the hf backend does not do
    pinned = {"output_dir": training_args.output_dir, "bf16": training_args.bf16, "fp16": training_args.fp16,
              "use_cpu": training_args.use_cpu}
    default = SFTConfig(**pinned)
    options = dict(pinned)
    for item in dataclasses.fields(training_args):
        value = plain(getattr(training_args, item.name))
        if item.init and value != plain(getattr(default, item.name)):
            options[item.name] = value
    return options


def plain(value):
    """A JSON value for an option (enums by their value)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def read_fold_predictions(output_dir: Path, folds: int) -> tuple[list[pd.DataFrame], list[int]]:
    found, missing = [], []
    for fold in range(folds):
        path = fold_dir(output_dir, fold) / "validation_predictions.csv"
        if path.is_file():
            found.append(pd.read_csv(path, dtype={"ID": str, "answer": str, "true_answer": str}, keep_default_na=False)
                         .assign(fold=fold))
        else:
            missing.append(fold)
    return found, missing


def out_of_fold(frame: pd.DataFrame, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Every training row exactly once, in the training file's order (an error if the folds do not cover it)."""
    oof = pd.concat(parts, ignore_index=True)
    counts = oof["ID"].value_counts()
    if (counts > 1).any() or set(oof["ID"]) != set(frame["ID"]):
        raise UserError(f"the folds' validation predictions do not cover the training rows once each "
                        f"({int((counts > 1).sum())} repeated, {len(set(frame['ID']) - set(oof['ID']))} missing): "
                        "some folds were trained with other settings; run every fold again without --fold")
    return oof.set_index("ID").loc[frame["ID"]].reset_index()


def accuracy_with_error(correct: pd.Series) -> dict:
    n = len(correct)
    share = float(correct.mean()) if n else float("nan")
    return {"rows": n, "accuracy": round(share, 4),
            "standard_error": round(math.sqrt(share * (1 - share) / n), 4) if n else None}


def cv_summary(oof: pd.DataFrame, folds: int) -> dict:
    correct = oof["answer"] == oof[f"true_{ANSWER_COLUMN}"]
    summary = {"folds": folds, "out_of_fold": accuracy_with_error(correct),
               "per_fold": {int(f): accuracy_with_error(correct[oof["fold"] == f])
                            for f in sorted(oof["fold"].unique())},
               "per_letter": {letter: accuracy_with_error(correct[oof[f"true_{ANSWER_COLUMN}"] == letter])
                              for letter in LETTERS},
               "predicted_letters": {letter: int((oof["answer"] == letter).sum()) for letter in LETTERS}}
    if SUBJECT_COLUMN in oof:
        summary["per_subject"] = {str(s): accuracy_with_error(correct[oof[SUBJECT_COLUMN] == s])
                                  for s in sorted(oof[SUBJECT_COLUMN].unique())}
    return summary


def render_cv_report(summary: dict) -> str:
    oof = summary["out_of_fold"]
    lines = [f"# Cross-validation: {summary['folds']} folds", "",
             f"- **out-of-fold accuracy: {oof['accuracy']:.2%} ± {oof['standard_error']:.2%}** (standard error, "
             f"{oof['rows']} questions; each fold's best checkpoint was chosen on that fold, so this is slightly "
             "optimistic)", "", "| fold | questions | accuracy |", "| --- | --- | --- |"]
    lines += [f"| {f} | {v['rows']} | {v['accuracy']:.2%} |" for f, v in summary["per_fold"].items()]
    lines += ["", "| true letter | questions | accuracy | predicted as this letter |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {v['rows']} | {v['accuracy']:.2%} | {summary['predicted_letters'][k]} |"
              for k, v in summary["per_letter"].items()]
    if "per_subject" in summary:
        lines += ["", "| subject | questions | accuracy |", "| --- | --- | --- |"]
        lines += [f"| {s} | {v['rows']} | {v['accuracy']:.2%} |" for s, v in summary["per_subject"].items()]
    return "\n".join(lines) + "\n"


def write_cv_outputs(output_dir: Path, frame: pd.DataFrame, folds: int, provenance: dict | None = None) -> dict:
    """oof_predictions.csv, cv_summary.json (with the ``provenance`` of the predictions) and cv_report.md once
    every fold is done; else what is missing."""
    from mcqtune.files import write_atomic, write_csv_atomic, write_json_atomic

    parts, missing = read_fold_predictions(output_dir, folds)
    if missing:
        logger.info("folds %s are not trained yet: the out-of-fold report is written when they are",
                    ", ".join(map(str, missing)))
        return {"folds": folds, "folds_missing": missing}
    oof = out_of_fold(frame, parts)
    write_csv_atomic(oof, output_dir / "oof_predictions.csv")
    summary = {**cv_summary(oof, folds), **(provenance or {})}
    write_json_atomic(summary, output_dir / "cv_summary.json")
    write_atomic(output_dir / "cv_report.md", render_cv_report(summary))
    logger.info("out-of-fold accuracy %.2f%% ± %.2f%% over %d folds (%s)", 100 * summary["out_of_fold"]["accuracy"],
                100 * summary["out_of_fold"]["standard_error"], folds, output_dir / "cv_report.md")
    return summary
