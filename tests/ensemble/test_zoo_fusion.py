"""Fusing several Chinese LLMs (README, "Fuse several model families"): two families of different tokenizers and
templates (Qwen2.5 and GLM-4), each trained k-fold, answer the same labelled file; ensemble.py fuses them by the
mean and by weights fitted on their out-of-fold predictions, and its report gives each member's accuracy and the
fusion's."""

import json

import numpy as np
import pandas as pd
import pytest

from mcqtune import errors as cli
from mcqtune.infer import run as infer
from mcqtune.cli import ensemble as ensemble_cli
from mcqtune.runs.predictions import PROB_COLUMNS
from mcqtune.tiny.families import write_tiny_family
from mcqtune.train import sft as train_sft
from tests.helpers import train_args

FOLD_RUN = ["--max_steps", 2, "--save_steps", 2, "--eval_steps", 2, "--logging_steps", 1]


@pytest.mark.slow
def test_two_families_fuse_by_mean_and_by_weights_fitted_out_of_fold(tiny_model_dir, sample_dir, tmp_path):
    rows = pd.read_csv(sample_dir / "train.csv", dtype=str)
    train, labelled = tmp_path / "train.csv", tmp_path / "labelled.csv"
    rows.head(48).to_csv(train, index=False)
    rows.iloc[48:88].to_csv(labelled, index=False)  # questions neither family trained on, with their answers
    families = {"qwen": tiny_model_dir, "glm4": write_tiny_family(tmp_path / "glm4", "glm4")}
    for name, model in families.items():  # the recipe: k-fold training, then the fold folder answers the file
        train_sft.run(*train_args(model, train, tmp_path / f"cv_{name}", *FOLD_RUN, "--folds", 2))
        infer.run(infer.InferArguments(test_file=str(labelled), model_path=str(tmp_path / f"cv_{name}"),
                                        output_file=str(tmp_path / f"{name}.csv"), batch_size=16))
    members = [str(tmp_path / f"{name}_run") for name in families]
    oof = [str(tmp_path / f"cv_{name}" / "oof_predictions.csv") for name in families]

    assert cli.run_cli(ensemble_cli.main, [*members, "--output_file", str(tmp_path / "mean.csv")]) == 0
    report = json.loads((tmp_path / "mean_ensemble" / "ensemble_report.json").read_text())
    truth = rows.iloc[48:88]["answer"].to_numpy()
    probs = [pd.read_csv(tmp_path / f"{name}_run" / "predictions.csv")[list(PROB_COLUMNS)].to_numpy()
             for name in families]
    for member, p in zip(report["members"], probs):
        assert member["accuracy"]["accuracy"] == pytest.approx((np.array(list("ABCD"))[p.argmax(1)] == truth).mean())
    fused = np.array(list("ABCD"))[np.mean(probs, axis=0).argmax(1)]
    assert report["ensemble"]["accuracy"]["accuracy"] == pytest.approx((fused == truth).mean())
    assert list(pd.read_csv(tmp_path / "mean.csv", dtype=str)["answer"]) == list(fused)

    fitted = ["--method", "fitted", "--validation", *oof, "--output_file", str(tmp_path / "fitted.csv")]
    assert cli.run_cli(ensemble_cli.main, [*members, *fitted]) == 0
    report = json.loads((tmp_path / "fitted_ensemble" / "ensemble_report.json").read_text())
    assert set(report["weights"]) == set(members) and sum(report["weights"].values()) == pytest.approx(1)
    assert [m["accuracy"] for m in report["validation"]["members"]] and report["ensemble"]["accuracy"]
    # each family's out-of-fold predictions validate that family's member only: swapped, they are refused
    swapped = ["--method", "fitted", "--validation", *oof[::-1], "--output_file", str(tmp_path / "swapped.csv")]
    assert cli.run_cli(ensemble_cli.main, [*members, *swapped]) == 1 and not (tmp_path / "swapped.csv").exists()
