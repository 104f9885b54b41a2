"""ensemble/fuse.py (ensemble.py): members checked against each other, combined as defined, weights fitted on validation
only, reports."""

import json

import numpy as np
import pandas as pd
import pytest

from mcqtune.ensemble import fuse as ensemble
from tests.helpers import IDS, fitted_setup, random_probs, read_predictions, run_ensemble, write_member


@pytest.mark.parametrize("method", ["mean", "logmean", "max"])
def test_an_ensemble_of_identical_members_is_the_member(tmp_path, capsys, method):
    probs = random_probs(0)
    a = write_member(tmp_path / "a_run", probs, truth="ABCDAB", subject=["s"] * len(IDS))
    b = write_member(tmp_path / "b_run", probs, truth="ABCDAB", subject=["s"] * len(IDS))
    out = tmp_path / "sub.csv"
    status, _ = run_ensemble([a, b / "predictions.csv", "--output_file", out, "--method", method], capsys)
    assert status == 0
    member = read_predictions(a / "predictions.csv")
    submission = pd.read_csv(out, dtype=str)
    assert list(submission.columns) == ["ID", "answer"]
    assert list(submission["ID"]) == IDS and list(submission["answer"]) == list(member["answer"])
    combined = read_predictions(tmp_path / "sub_ensemble" / "predictions.csv")
    assert list(combined.columns) == ["ID", "answer", "p_A", "p_B", "p_C", "p_D", "true_answer", "subject"]
    assert np.allclose(combined[list(ensemble.PROB_COLUMNS)], member[list(ensemble.PROB_COLUMNS)], atol=2e-6)
    assert list(combined["true_answer"]) == list("ABCDAB")


def test_fitted_weights_come_from_validation_only_and_favour_the_better_member(tmp_path, capsys):
    reports = []
    for n, truth in enumerate(["ABCDAB", "DCBADC"]):  # the test members' true answers must not matter
        folder = tmp_path / f"case{n}"
        folder.mkdir()
        status, captured = run_ensemble(fitted_setup(folder, truth) + ["--method", "fitted", "--output_file",
                                                              folder / "sub.csv"], capsys)
        assert status == 0, captured.err
        reports.append(json.loads((folder / "sub_ensemble" / "ensemble_report.json").read_text()))
    weights = [list(r["weights"].values()) for r in reports]
    assert np.allclose(weights[0], weights[1], atol=0) and np.isclose(sum(weights[0]), 1)
    assert weights[0][0] > 0.8 and min(weights[0]) >= 0
    assert [r["ensemble"]["accuracy"]["labelled"] for r in reports] == [6, 6]  # the test truth was there, unused


def test_fitted_pairs_each_validation_run_with_the_member_of_its_model(tmp_path, capsys):
    test_good, test_bad, flag, good, bad = fitted_setup(tmp_path, "ABCDAB")
    status, captured = run_ensemble([test_good, test_bad, flag, bad, good, "--method", "fitted", "--output_file",
                                     tmp_path / "sub.csv"], capsys)  # the validation runs in the wrong order
    assert status == 1 and "answered by bad but its member" in captured.err and "good" in captured.err
    assert not (tmp_path / "sub.csv").exists()
    (bad / "report.json").unlink()  # a validation run that cannot say which model made it
    status, captured = run_ensemble([test_good, test_bad, flag, good, bad, "--method", "fitted", "--output_file",
                                     tmp_path / "sub.csv"], capsys)
    assert status == 1 and "--allow_bare_predictions true" in captured.err
    status, _ = run_ensemble([test_good, test_bad, flag, good, bad, "--method", "fitted", "--output_file",
                              tmp_path / "sub.csv", "--allow_bare_predictions", "true"], capsys)
    assert status == 0


def test_fitted_pairs_runs_by_their_models_content_not_their_paths(tmp_path, capsys):
    """The same adapter path, retrained (another seed, another plan) between the validation and the test run: the
    paths agree, the weights do not, and the pairing is refused; the same weights pass."""
    import json

    test_good, test_bad, flag, good, bad = fitted_setup(tmp_path, "ABCDAB")
    for run, sha in ((test_good, "aa"), (test_bad, "bb"), (good, "aa"), (bad, "bb")):
        report = json.loads((run / "report.json").read_text())
        content = [{"adapter_model.safetensors_sha256": sha, "adapter_config.json_sha256": "cc"}]
        (run / "report.json").write_text(json.dumps({**report, "base_model": "base", "adapters": ["out/adapter"],
                                                     "models_by_content": content}))
    status, _ = run_ensemble([test_good, test_bad, flag, good, bad, "--method", "fitted", "--output_file",
                              tmp_path / "sub.csv"], capsys)
    assert status == 0
    report = json.loads((bad / "report.json").read_text())
    report["models_by_content"][0]["adapter_model.safetensors_sha256"] = "dd"  # retrained in place
    (bad / "report.json").write_text(json.dumps(report))
    status, captured = run_ensemble([test_good, test_bad, flag, good, bad, "--method", "fitted", "--output_file",
                                     tmp_path / "sub2.csv"], capsys)
    assert status == 1 and "were answered by models whose weights differ" in captured.err
    assert not (tmp_path / "sub2.csv").exists()


def test_fitted_without_usable_validation_is_refused(tmp_path, capsys):
    a = write_member(tmp_path / "a_run", random_probs(0), truth="ABCDAB")
    b = write_member(tmp_path / "b_run", random_probs(1), truth="ABCDAB")
    status, captured = run_ensemble([a, b, "--method", "fitted", "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and "needs --validation" in captured.err  # never fitted on the test members' answers
    va = write_member(tmp_path / "va", random_probs(2))  # no true_answer
    vb = write_member(tmp_path / "vb", random_probs(3))
    status, captured = run_ensemble([a, b, "--method", "fitted", "--validation", va, vb, "--output_file",
                            tmp_path / "sub.csv"], capsys)
    assert status == 1 and "needs a true_answer" in captured.err and str(va) in captured.err
    status, captured = run_ensemble([a, b, "--method", "fitted", "--validation", va, "--output_file",
                            tmp_path / "sub.csv"], capsys)
    assert status == 1 and "1 files for 2 members" in captured.err
    status, captured = run_ensemble([a, b, "--method", "fitted", "--validation", a, b, "--output_file",
                            tmp_path / "sub.csv"], capsys)
    assert status == 1 and "is the test member" in captured.err
    status, captured = run_ensemble([a, b, "--method", "median", "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and captured.err.startswith("error: argument --method") and "Traceback" not in captured.err
    assert not (tmp_path / "sub.csv").exists()


def test_the_debias_prior_option_divides_the_combined_probabilities(tmp_path, capsys):
    probs = np.array([[0.4, 0.35, 0.15, 0.1]] * len(IDS))
    a = write_member(tmp_path / "a_run", probs)
    status, _ = run_ensemble([a, "--output_file", tmp_path / "sub.csv", "--debias_prior", "0.4,0.2,0.2,0.2"], capsys)
    assert status == 0
    assert set(pd.read_csv(tmp_path / "sub.csv", dtype=str)["answer"]) == {"B"}
    status, captured = run_ensemble([a, "--output_file", tmp_path / "sub.csv", "--debias_prior", "0.4,0.2,0.2"], capsys)
    assert status == 1 and "four positive numbers" in captured.err


def test_members_of_other_test_files_are_refused_and_inputs_and_earlier_outputs_are_kept(tmp_path, capsys):
    test_file = tmp_path / "test.csv"
    test_file.write_text("ID,question\n", encoding="utf-8")
    a = write_member(tmp_path / "a_run", random_probs(1), test_file=str(test_file))
    b = write_member(tmp_path / "b_run", random_probs(2), test_file=str(tmp_path / "swapped.csv"))
    status, out = run_ensemble([a, b, "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and "answered different test files" in out.err and not (tmp_path / "sub.csv").exists()
    c = write_member(tmp_path / "c_run", random_probs(3), test_file=str(test_file))
    status, out = run_ensemble([a, c, "--output_file", test_file], capsys)
    assert status == 1 and "would overwrite the input" in out.err and test_file.read_text() == "ID,question\n"
    assert run_ensemble([a, c, "--output_file", tmp_path / "sub.csv"], capsys)[0] == 0
    first = (tmp_path / "sub.csv").read_text()
    assert run_ensemble([a, "--output_file", tmp_path / "sub.csv"], capsys)[0] == 0  # another ensemble, same names
    (aside,) = (tmp_path / "sub_ensemble").glob("previous-*")
    assert (aside / "sub.csv").read_text() == first and (aside / "ensemble_report.json").is_file()
    infer_submission = (tmp_path / "a_run" / "predictions.csv").with_name("sub.csv")  # an infer run's submission
    infer_submission.write_text("ID,answer\n")
    status, out = run_ensemble([a, c, "--output_file", infer_submission], capsys)
    assert status == 1 and "already exists and was not written by" in out.err
    assert infer_submission.read_text() == "ID,answer\n" and not (tmp_path / "a_run" / "sub_ensemble").exists()


