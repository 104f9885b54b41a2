"""ensemble: members checked against each other, combined as defined, weights fitted on validation only, reports."""

import json

import numpy as np
import pandas as pd
import pytest

import cli
import ensemble
import prediction_store
from mcq_dataset import LETTERS
from run_folder import write_csv_atomic, write_json_atomic

IDS = ["007", "10", "2", "x-1", "3", "1"]  # text IDs, not sorted: order and leading zeros must survive


def softmax(logits):
    logits = np.asarray(logits, dtype=float)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def write_member(folder, probs, ids=IDS, truth=None, subject=None, test_file="test.csv"):
    """A run folder as infer.py leaves it: predictions.csv (assemble_predictions' layout) and report.json."""
    frame = pd.DataFrame({"ID": list(ids)})
    if truth is not None:
        frame["answer"] = list(truth)
    if subject is not None:
        frame["subject"] = list(subject)
    records = {id_: prediction_store.score_record(id_, np.asarray(p)) for id_, p in zip(ids, probs)}
    write_csv_atomic(prediction_store.assemble_predictions(frame, records), folder / "predictions.csv")
    write_json_atomic({"test_file": test_file, "rows": len(ids)}, folder / "report.json")
    return folder


def random_probs(seed, n=len(IDS), sharpness=1.0):
    return softmax(sharpness * np.random.default_rng(seed).normal(size=(n, 4)))


def run(argv, capsys):
    status = cli.run_cli(ensemble.main, [str(a) for a in argv])
    return status, capsys.readouterr()


def read_predictions(path):
    return pd.read_csv(path, dtype={"ID": str, "answer": str, "true_answer": str})


@pytest.mark.parametrize("method", ["mean", "logmean", "max"])
def test_an_ensemble_of_identical_members_is_the_member(tmp_path, capsys, method):
    probs = random_probs(0)
    a = write_member(tmp_path / "a_run", probs, truth="ABCDAB", subject=["s"] * len(IDS))
    b = write_member(tmp_path / "b_run", probs, truth="ABCDAB", subject=["s"] * len(IDS))
    out = tmp_path / "sub.csv"
    status, _ = run([a, b / "predictions.csv", "--output_file", out, "--method", method], capsys)
    assert status == 0
    member = read_predictions(a / "predictions.csv")
    submission = pd.read_csv(out, dtype=str)
    assert list(submission.columns) == ["ID", "answer"]
    assert list(submission["ID"]) == IDS and list(submission["answer"]) == list(member["answer"])
    combined = read_predictions(tmp_path / "sub_ensemble" / "predictions.csv")
    assert list(combined.columns) == ["ID", "answer", "p_A", "p_B", "p_C", "p_D", "true_answer", "subject"]
    assert np.allclose(combined[list(ensemble.PROB_COLUMNS)], member[list(ensemble.PROB_COLUMNS)], atol=2e-6)
    assert list(combined["true_answer"]) == list("ABCDAB")


def test_members_that_answered_other_questions_are_refused_in_one_line(tmp_path, capsys):
    a = write_member(tmp_path / "a_run", random_probs(0))
    other_ids = IDS[:-2] + ["new1", "new2"]
    b = write_member(tmp_path / "b_run", random_probs(1), ids=other_ids)
    status, captured = run([a, b, "--output_file", tmp_path / "sub.csv"], capsys)
    lines = captured.err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and lines[0].startswith("error: ")
    assert str(b) in lines[0] and "4 IDs differ" in lines[0] and "'new1' is only in" in lines[0]
    assert "Traceback" not in captured.err and not (tmp_path / "sub.csv").exists()

    c = write_member(tmp_path / "c_run", random_probs(1), ids=IDS[::-1])  # same questions, another order
    status, captured = run([a, c, "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and "another order" in captured.err and len(captured.err.strip().splitlines()) == 1


def break_probabilities(frame, how):
    if how == "missing":  # a generate-mode row answered from the reply: no probabilities
        frame.loc[1, list(ensemble.PROB_COLUMNS)] = np.nan
    elif how == "negative":
        frame.loc[2, "p_A"] = -0.1
    elif how == "sum":
        frame.loc[3, "p_B"] = frame.loc[3, "p_B"] + 0.3
    elif how == "duplicate":
        frame.loc[4, "ID"] = frame.loc[0, "ID"]
    elif how == "no_columns":
        frame = frame.drop(columns=["p_D"])
    return frame


@pytest.mark.parametrize("how, expected", [("missing", "1 rows have no"), ("negative", "negative probability"),
                                           ("sum", "do not sum to 1"), ("duplicate", "duplicate IDs (e.g. '007')"),
                                           ("no_columns", "no p_D columns")])
def test_members_with_unusable_probabilities_are_refused(tmp_path, capsys, how, expected):
    a = write_member(tmp_path / "a_run", random_probs(0))
    b = write_member(tmp_path / "b_run", random_probs(1))
    frame = pd.read_csv(b / "predictions.csv", dtype={"ID": str})
    break_probabilities(frame, how).to_csv(b / "predictions.csv", index=False)
    status, captured = run([a, b, "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and len(captured.err.strip().splitlines()) == 1
    assert str(b) in captured.err and expected in captured.err


def test_logmean_and_max_on_a_hand_made_example():
    stack = np.array([[[0.7, 0.1, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1]],
                      [[0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]]])
    geometric = np.sqrt(stack[0] * stack[1])
    assert np.allclose(ensemble.combine_logmean(stack), geometric / geometric.sum(axis=1, keepdims=True))
    # row 0: member 0 is surest (0.7 > 0.6); row 1: member 0 again (0.4 > 0.25)
    assert list(ensemble.choose_most_confident(stack)) == [0, 0]
    assert np.allclose(ensemble.combine_max(stack), stack[0])
    stack[1, 1] = [0.05, 0.05, 0.05, 0.85]
    assert list(ensemble.choose_most_confident(stack)) == [0, 1]
    assert np.allclose(ensemble.combine_max(stack), [stack[0, 0], stack[1, 1]])
    assert np.allclose(ensemble.combine_mean(stack), stack.mean(axis=0))
    # one sure member carries the mean to A; the logmean follows the two that all but rule A out
    disagree = np.array([[[0.97, 0.01, 0.01, 0.01]], [[0.001, 0.4, 0.3, 0.299]], [[0.001, 0.4, 0.3, 0.299]]])
    assert ensemble.combine_mean(disagree).argmax() == 0 and ensemble.combine_logmean(disagree).argmax() == 1


def confident(truth, strength, seed):
    """Probabilities that put ``strength`` logits on the true letter, plus noise."""
    rng = np.random.default_rng(seed)
    onehot = np.eye(4)[[LETTERS.index(t) for t in truth]]
    return softmax(strength * onehot + rng.normal(size=onehot.shape))


def fitted_setup(tmp_path, test_truth):
    val_ids = [f"v{i}" for i in range(200)]
    val_truth = [LETTERS[i % 4] for i in range(200)]
    good = write_member(tmp_path / "val_good", confident(val_truth, 3.0, 1), ids=val_ids, truth=val_truth)
    bad = write_member(tmp_path / "val_bad", confident(val_truth, 0.0, 2), ids=val_ids, truth=val_truth)
    test_good = write_member(tmp_path / "test_good", random_probs(3), truth=test_truth)
    test_bad = write_member(tmp_path / "test_bad", random_probs(4), truth=test_truth)
    return [test_good, test_bad, "--validation", good, bad]


def test_fitted_weights_come_from_validation_only_and_favour_the_better_member(tmp_path, capsys):
    reports = []
    for n, truth in enumerate(["ABCDAB", "DCBADC"]):  # the test members' true answers must not matter
        folder = tmp_path / f"case{n}"
        folder.mkdir()
        status, captured = run(fitted_setup(folder, truth) + ["--method", "fitted", "--output_file",
                                                              folder / "sub.csv"], capsys)
        assert status == 0, captured.err
        reports.append(json.loads((folder / "sub_ensemble" / "ensemble_report.json").read_text()))
    weights = [list(r["weights"].values()) for r in reports]
    assert np.allclose(weights[0], weights[1], atol=0) and np.isclose(sum(weights[0]), 1)
    assert weights[0][0] > 0.8 and min(weights[0]) >= 0
    assert [r["ensemble"]["accuracy"]["labelled"] for r in reports] == [6, 6]  # the test truth was there, unused


def test_fit_weights_finds_the_best_mixture():
    truth = [LETTERS[i % 4] for i in range(120)]
    stack = np.stack([confident(truth, 1.5, 5), confident(truth, 1.0, 6)])
    weights = ensemble.fit_weights(stack, truth)
    best = max(ensemble.log_likelihood(ensemble.combine_mean(stack, [w, 1 - w]), truth)
               for w in np.linspace(0, 1, 1001))
    assert ensemble.log_likelihood(ensemble.combine_mean(stack, weights), truth) >= best - 1e-6


def test_fitted_without_usable_validation_is_refused(tmp_path, capsys):
    a = write_member(tmp_path / "a_run", random_probs(0), truth="ABCDAB")
    b = write_member(tmp_path / "b_run", random_probs(1), truth="ABCDAB")
    status, captured = run([a, b, "--method", "fitted", "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and "needs --validation" in captured.err  # never fitted on the test members' answers
    va = write_member(tmp_path / "va", random_probs(2))  # no true_answer
    vb = write_member(tmp_path / "vb", random_probs(3))
    status, captured = run([a, b, "--method", "fitted", "--validation", va, vb, "--output_file",
                            tmp_path / "sub.csv"], capsys)
    assert status == 1 and "needs a true_answer" in captured.err and str(va) in captured.err
    status, captured = run([a, b, "--method", "fitted", "--validation", va, "--output_file",
                            tmp_path / "sub.csv"], capsys)
    assert status == 1 and "1 files for 2 members" in captured.err
    status, captured = run([a, b, "--method", "fitted", "--validation", a, b, "--output_file",
                            tmp_path / "sub.csv"], capsys)
    assert status == 1 and "is the test member" in captured.err
    status, captured = run([a, b, "--method", "median", "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and captured.err.startswith("error: argument --method") and "Traceback" not in captured.err
    assert not (tmp_path / "sub.csv").exists()


def test_reports_list_each_members_accuracy_weights_agreement_and_distribution(tmp_path, capsys):
    truth = "ABCDAB"
    args = fitted_setup(tmp_path, truth) + ["--output_file", tmp_path / "sub.csv", "--report_dir", tmp_path / "rep"]
    status, captured = run(args, capsys)
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


def test_the_debias_prior_option_divides_the_combined_probabilities(tmp_path, capsys):
    probs = np.array([[0.4, 0.35, 0.15, 0.1]] * len(IDS))
    a = write_member(tmp_path / "a_run", probs)
    status, _ = run([a, "--output_file", tmp_path / "sub.csv", "--debias_prior", "0.4,0.2,0.2,0.2"], capsys)
    assert status == 0
    assert set(pd.read_csv(tmp_path / "sub.csv", dtype=str)["answer"]) == {"B"}
    status, captured = run([a, "--output_file", tmp_path / "sub.csv", "--debias_prior", "0.4,0.2,0.2"], capsys)
    assert status == 1 and "four positive numbers" in captured.err


def test_members_of_other_test_files_are_refused_and_inputs_and_earlier_outputs_are_kept(tmp_path, capsys):
    test_file = tmp_path / "test.csv"
    test_file.write_text("ID,question\n", encoding="utf-8")
    a = write_member(tmp_path / "a_run", random_probs(1), test_file=str(test_file))
    b = write_member(tmp_path / "b_run", random_probs(2), test_file=str(tmp_path / "swapped.csv"))
    status, out = run([a, b, "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and "answered different test files" in out.err and not (tmp_path / "sub.csv").exists()
    c = write_member(tmp_path / "c_run", random_probs(3), test_file=str(test_file))
    status, out = run([a, c, "--output_file", test_file], capsys)
    assert status == 1 and "would overwrite the input" in out.err and test_file.read_text() == "ID,question\n"
    assert run([a, c, "--output_file", tmp_path / "sub.csv"], capsys)[0] == 0
    first = (tmp_path / "sub.csv").read_text()
    assert run([a, "--output_file", tmp_path / "sub.csv"], capsys)[0] == 0  # another ensemble, same names
    (aside,) = (tmp_path / "sub_ensemble").glob("previous-*")
    assert (aside / "sub.csv").read_text() == first and (aside / "ensemble_report.json").is_file()


def test_a_member_named_twice_is_refused(tmp_path, capsys):
    a = write_member(tmp_path / "a_run", random_probs(1))
    status, out = run([a, a / "predictions.csv", "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and "are the same predictions" in out.err and not (tmp_path / "sub.csv").exists()
