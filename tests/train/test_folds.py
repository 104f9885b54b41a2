"""train/folds.py: stratified folds, out-of-fold predictions covering every row once, finished folds kept."""

import json

import pandas as pd
import pytest

from mcqtune.train import sft as train_sft
from tests.helpers import train_args
from mcqtune.train import folds
from mcqtune.train.folds import assign_folds
from mcqtune.data.questions import load_mcq_csv

FOLD_RUN = ["--max_steps", 2, "--save_steps", 2, "--eval_steps", 2, "--logging_steps", 1]


def test_folds_are_stratified_seeded_and_cover_every_row_once(sample_dir):
    frame = load_mcq_csv(sample_dir / "train.csv", require_answer=True)
    folds = assign_folds(frame, 5, seed=3)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4] and len(folds) == len(frame)
    sizes = pd.Series(folds).value_counts()
    assert sizes.max() - sizes.min() <= 1
    shares = pd.crosstab(pd.Series(folds), frame["answer"].values, normalize="index")
    overall = frame["answer"].value_counts(normalize=True)
    assert (shares.sub(overall, axis=1).abs() < 0.05).all().all()  # every fold keeps each letter's share
    assert assign_folds(frame, 5, seed=3) == folds and assign_folds(frame, 5, seed=4) != folds
    with pytest.raises(ValueError):
        assign_folds(frame, 1)


@pytest.mark.slow
def test_kfold_run_writes_out_of_fold_predictions_and_keeps_finished_folds(tiny_model_dir, sample_dir, tmp_path,
                                                                           monkeypatch):
    small = tmp_path / "train.csv"
    pd.read_csv(sample_dir / "train.csv", dtype=str).head(64).to_csv(small, index=False)
    out = tmp_path / "cv"
    only_fold_1 = train_sft.run(*train_args(tiny_model_dir, small, out, *FOLD_RUN, "--folds", 2, "--fold", 1))
    assert only_fold_1["folds_missing"] == [0] and not (out / "fold-0").exists()
    summary = train_sft.run(*train_args(tiny_model_dir, small, out, *FOLD_RUN, "--folds", 2))
    oof = pd.read_csv(out / "oof_predictions.csv", dtype=str)
    assert list(oof["ID"]) == list(pd.read_csv(small, dtype=str)["ID"])  # every row once, in file order
    assert set(oof["fold"]) == {"0", "1"}
    assert summary["out_of_fold"]["rows"] == 64 and 0 <= summary["out_of_fold"]["accuracy"] <= 1
    assert json.loads((out / "cv_summary.json").read_text())["per_fold"]["0"]["rows"] == 32
    assert "out-of-fold accuracy" in (out / "cv_report.md").read_text()

    trained = []  # a rerun launches no fold: both folds finished with the same identity
    monkeypatch.setattr(folds, "run_fold_process", lambda fold_script, *a, **k: trained.append(fold_script.fold))
    train_sft.run(*train_args(tiny_model_dir, small, out, *FOLD_RUN, "--folds", 2))
    assert trained == []
    train_sft.run(*train_args(tiny_model_dir, small, out, *FOLD_RUN, "--folds", 2, "--learning_rate", 0.05))
    assert trained == [0, 1]  # other settings: both folds are trained again, each in a child process


@pytest.mark.slow
def test_infer_on_a_kfold_folder_averages_the_folds(tiny_model_dir, sample_dir, tmp_path):
    import numpy as np

    from mcqtune.infer import run as infer
    small = tmp_path / "train.csv"
    pd.read_csv(sample_dir / "train.csv", dtype=str).head(48).to_csv(small, index=False)
    out = tmp_path / "cv"
    train_sft.run(*train_args(tiny_model_dir, small, out, *FOLD_RUN, "--folds", 2))
    test_file = str(sample_dir / "test.csv")

    def answer(name, model_path, ensemble=()):
        args = infer.InferArguments(test_file=test_file, model_path=str(model_path),
                                    ensemble=[str(e) for e in ensemble],
                                    output_file=str(tmp_path / f"{name}.csv"), batch_size=16)
        report = infer.run(args)
        return report, pd.read_csv(args.run_dir / "predictions.csv")[["p_A", "p_B", "p_C", "p_D"]].to_numpy()

    report, folds = answer("folds", out)
    assert report["adapters"] == [str(out / "fold-0" / "adapter"), str(out / "fold-1" / "adapter")]
    assert report["kfold"]["used"] == [0, 1] and report["kfold"]["missing"] == []  # the plan's folds, recorded
    plan = json.loads((out / "fold_plan.json").read_text())
    assert plan["folds"] == 2 and sorted(plan["fold_identities"]) == ["0", "1"]
    _, listed = answer("listed", out / "fold-0" / "adapter", [out / "fold-1" / "adapter"])
    assert np.allclose(folds, listed, atol=1e-6)
    # the README's fitted ensemble: the out-of-fold predictions validate the run of the same fold adapters
    from mcqtune import errors as cli
    from mcqtune.cli import ensemble as ensemble_cli

    fitted = ["--method", "fitted", "--validation", str(out / "oof_predictions.csv")]
    assert cli.run_cli(ensemble_cli.main, [str(tmp_path / "folds_run"), *fitted, "--output_file",
                                       str(tmp_path / "e.csv")]) == 0
    answer("one", out / "fold-0" / "adapter")  # not the models of the out-of-fold predictions: refused
    assert cli.run_cli(ensemble_cli.main, [str(tmp_path / "one_run"), *fitted, "--output_file",
                                       str(tmp_path / "e2.csv")]) == 1 and not (tmp_path / "e2.csv").exists()


def test_a_fold_is_handed_to_its_process_with_every_option(tiny_model_dir, sample_dir, tmp_path):
    """The child builds its SFTConfig from trainer_options: every option equals the parent's, so the fold trains
    exactly as it would have in the parent (and its run identity is the same)."""
    import dataclasses

    from trl import SFTConfig

    script_args, training_args = train_args(tiny_model_dir, sample_dir / "train.csv", tmp_path / "cv", "--folds", 3,
                                            "--learning_rate", 0.003, "--lr_scheduler_type", "linear",
                                            "--eval_strategy", "steps", "--eval_steps", 7, "--save_steps", 14)
    rebuilt = SFTConfig(**json.loads(json.dumps(folds.trainer_options(training_args))))
    differ = [f.name for f in dataclasses.fields(training_args)
              if f.init and folds.plain(getattr(rebuilt, f.name)) != folds.plain(getattr(training_args, f.name))]
    assert differ == []
    fold_script, fold_training = folds.fold_arguments(script_args, rebuilt, 1)
    assert fold_training.output_dir == str(tmp_path / "cv" / "fold-1")
    assert folds.training_run_identity(fold_script, fold_training) == \
        folds.training_run_identity(*folds.fold_arguments(script_args, training_args, 1))


@pytest.mark.slow
def test_kfold_on_the_hf_backend_on_a_cpu_hands_its_precision_to_the_fold(tiny_model_dir, sample_dir, tmp_path):
    """Without Unsloth imported, SFTConfig's own default precision is refused on a CPU: the fold's options must
    carry the run's (bf16 false from the demo config), in the parent and in the fold's process."""
    from tests.helpers import run_script

    result = run_script("train_sft.py", "--config", "demo-cpu.yaml", "--model_name_or_path", tiny_model_dir,
                        "--train_file", sample_dir / "train.csv", "--output_dir", tmp_path / "cv", "--backend", "hf",
                        "--load_in_4bit", "false", "--folds", 2, "--fold", 0, "--max_steps", 1, "--eval_steps", 1,
                        "--save_steps", 1)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "cv" / "fold-0" / "adapter" / "adapter_model.safetensors").is_file()


def test_a_fold_process_that_dies_stops_the_run_in_one_line(tiny_model_dir, sample_dir, tmp_path, monkeypatch):
    import sys

    from mcqtune.errors import UserError

    monkeypatch.setattr(folds, "FOLD_WORKER", [sys.executable, "-c", "import os, signal; "
                                                                     "os.kill(os.getpid(), signal.SIGKILL)"])
    small = tmp_path / "train.csv"
    pd.read_csv(sample_dir / "train.csv", dtype=str).head(32).to_csv(small, index=False)
    with pytest.raises(UserError) as caught:
        train_sft.run(*train_args(tiny_model_dir, small, tmp_path / "cv", *FOLD_RUN, "--folds", 2))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("fold 0 of 2 was killed by signal 9")
    assert "run the same command again" in message


def test_folds_beyond_the_rows_and_a_fold_of_other_settings_are_one_line(tiny_model_dir, sample_dir, tmp_path,
                                                                        monkeypatch):
    from mcqtune.errors import ConfigError
    from mcqtune.runs.folds import write_fold_plan

    small = tmp_path / "train.csv"
    pd.read_csv(sample_dir / "train.csv", dtype=str).head(8).to_csv(small, index=False)
    with pytest.raises(ConfigError, match="--folds 9 needs at least 9 training rows"):
        train_sft.run(*train_args(tiny_model_dir, small, tmp_path / "cv", *FOLD_RUN, "--folds", 9))
    # a finished fold of a 3-fold plan with seed 42; then --fold 2 with seed 7 into the same folder
    out = tmp_path / "cv"
    (out / "fold-0").mkdir(parents=True)
    identity = {"seed": 42}
    (out / "fold-0" / "training_summary.json").write_text(json.dumps({"run_identity": identity}))
    (out / "fold-0" / "validation_predictions.csv").write_text("ID\n")
    write_fold_plan(out, 3, 42, None, {0: identity, 1: {"seed": 42, "f": 1}, 2: {"seed": 42, "f": 2}})
    monkeypatch.setattr(folds, "train_fold", lambda *a, **k: pytest.fail("no fold may train"))
    with pytest.raises(ConfigError, match="holds a k-fold run of other settings") as caught:
        train_sft.run(*train_args(tiny_model_dir, small, out, *FOLD_RUN, "--folds", 3, "--fold", 2, "--seed", 7))
    assert "\n" not in str(caught.value) and "differing: " in str(caught.value) and "seed" in str(caught.value)
    assert (out / "fold-0" / "training_summary.json").is_file()  # refused before anything was moved


def test_a_changed_plan_sets_aside_the_folds_it_no_longer_has(tiny_model_dir, sample_dir, tmp_path):
    """A 3-fold folder trained again with --folds 2: fold-2 of the old plan is moved aside before any fold
    trains, so nothing that reads the folder (infer, fold_adapters) finds a fold of the other plan."""
    from mcqtune.runs.folds import fold_adapters, write_fold_plan
    from mcqtune.runs.provenance import FOLD_PLAN

    out = tmp_path / "cv"
    for fold in range(3):
        (out / f"fold-{fold}" / "adapter").mkdir(parents=True)
        (out / f"fold-{fold}" / "adapter" / "adapter_config.json").write_text("{}")
    write_fold_plan(out, 3, 42, None, {k: {"seed": 42, "fold": k} for k in range(3)})
    script_args, training_args = train_args(tiny_model_dir, sample_dir / "train.csv", out, "--folds", 2)
    folds.write_plan(script_args, training_args)
    assert json.loads((out / FOLD_PLAN).read_text())["folds"] == 2
    assert not (out / "fold-2").exists() and [p.name for p in out.glob("previous-*/*")] == ["fold-2"]
    assert [p.parent.name for p in fold_adapters(out)] == ["fold-0", "fold-1"]


def test_a_rescore_fraction_of_no_row_is_one_line():
    from mcqtune.infer.cascade import CascadeError, least_confident

    first = pd.DataFrame({"ID": [str(i) for i in range(40)], **{f"p_{x}": [0.25] * 40 for x in "ABCD"}})
    with pytest.raises(CascadeError, match="is no question"):
        least_confident(first, 0.01)
    assert len(least_confident(first, 0.05)) == 2
