"""ensemble/report.py: each member's accuracy, the weights, agreement and answer distributions, in JSON and Markdown."""

import json

import pandas as pd
import pytest

from tests.helpers import fitted_setup, run_ensemble


def test_reports_list_each_members_accuracy_weights_agreement_and_distribution(tmp_path, capsys):
    truth = "ABCDAB"
    args = fitted_setup(tmp_path, truth) + ["--output_file", tmp_path / "sub.csv", "--report_dir", tmp_path / "rep"]
    status, captured = run_ensemble(args, capsys)
    assert status == 0, captured.err
    report = json.loads((tmp_path / "rep" / "ensemble_report.json").read_text())
    markdown = (tmp_path / "rep" / "ensemble_report.md").read_text()
    assert report["method"] == "mean" and list(report["weights"].values()) == [0.5, 0.5]
    for member, name in zip(report["members"], ("test_good", "test_bad")):
        answers = pd.read_csv(tmp_path / name / "predictions.csv", dtype=str)["answer"]
        right = int((answers == pd.Series(list(truth))).sum())
        assert member["accuracy"] == {"accuracy": right / 6, "correct": right, "labelled": 6}
        assert f"{right}/6" in markdown and member["test_file"] == "test.csv"
        assert sum(member["answer_distribution"].values()) == 6
    assert [v["accuracy"]["labelled"] for v in report["validation"]["members"]] == [200, 200]
    good, bad = report["validation"]["members"]
    assert good["accuracy"]["accuracy"] > bad["accuracy"]["accuracy"]
    assert f"{good['accuracy']['correct']}/200" in markdown
    (pair,) = report["pairwise_agreement"]
    answers = [pd.read_csv(tmp_path / n / "predictions.csv", dtype=str)["answer"] for n in ("test_good", "test_bad")]
    assert pair["agreement"] == pytest.approx((answers[0] == answers[1]).mean())
    assert sum(report["ensemble"]["answer_distribution"].values()) == 6 and "ensemble accuracy" in markdown
    assert "Pairwise agreement" in markdown and str(tmp_path / "test_good") in markdown
    assert (tmp_path / "sub.csv").is_file() and not (tmp_path / "sub_ensemble").exists()
