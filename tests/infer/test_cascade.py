"""infer/cascade.py: only the least confident rows of a finished run are answered again, the rest keep its answers;
a first run of other questions or without probabilities is refused."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from mcqtune.runs.provenance import ProvenanceError

from mcqtune.infer import run as infer
from mcqtune.infer.cascade import CascadeError, Rescore, margins
from tests.helpers import infer_args
from mcqtune.errors import ConfigError
from mcqtune.runs.predictions import assemble_predictions, score_record


def first_run(folder, probs, ids=("a", "b", "c", "d")):
    """A finished score-mode run's predictions.csv, as infer.py writes it."""
    frame = pd.DataFrame({"ID": list(ids)})
    records = {id_: score_record(id_, np.asarray(p)) for id_, p in zip(ids, probs)}
    folder.mkdir()
    assemble_predictions(frame, records).to_csv(folder / "predictions.csv", index=False)
    return folder


def test_the_rows_with_the_smallest_margins_are_answered_again_and_merged_back(tmp_path):
    probs = [[0.9, 0.05, 0.03, 0.02], [0.4, 0.38, 0.12, 0.1], [0.3, 0.3, 0.2, 0.2], [0.6, 0.2, 0.1, 0.1]]
    assert np.allclose(margins(np.array(probs)), [0.85, 0.02, 0.0, 0.4])
    frame = pd.DataFrame({"ID": ["a", "b", "c", "d"], "question": list("qqqq")})
    plan = Rescore.plan(str(first_run(tmp_path / "first", probs)), frame, 0.5, allow_bare=True)
    assert plan.ids == ["b", "c"] and list(plan.rows()["ID"]) == ["b", "c"]  # file order
    again = pd.DataFrame({"ID": ["b", "c"], "answer": ["B", "C"], "source": ["score", "score"],
                          "p_A": [0.1, 0.1], "p_B": [0.7, 0.1], "p_C": [0.1, 0.7], "p_D": [0.1, 0.1]})
    merged, info = plan.merge(again)
    assert list(merged["answer"]) == ["A", "B", "C", "A"] and list(merged["answer_before"]) == ["A", "A", "A", "A"]
    assert list(merged["rescored"]) == [False, True, True, False]
    assert info["rescore"]["rows"] == 2 and info["rescore"]["answers_changed"] == 2 and info["rescore"]["of"] == 4
    predictions = tmp_path / "first" / "predictions.csv"  # the first run recorded by absolute path and content
    assert info["rescore"]["first_run"] == {"path": str(predictions.resolve()),
                                            "sha256": hashlib.sha256(predictions.read_bytes()).hexdigest()}


def test_reasoning_on_the_least_confident_rows_keeps_the_replies_and_claims_no_probabilities(tmp_path):
    probs = [[0.9, 0.05, 0.03, 0.02], [0.4, 0.38, 0.12, 0.1], [0.3, 0.3, 0.2, 0.2], [0.6, 0.2, 0.1, 0.1]]
    frame = pd.DataFrame({"ID": ["a", "b", "c", "d"], "question": list("qqqq")})
    plan = Rescore.plan(str(first_run(tmp_path / "first", probs)), frame, 0.5, allow_bare=True)
    again = pd.DataFrame({"ID": ["b", "c"], "answer": ["D", "C"], "source": ["reason", "reason_closed"],
                          "p_A": [None, 0.1], "p_B": [None, 0.1], "p_C": [None, 0.7], "p_D": [None, 0.1],
                          "raw": ["……\n答案：D", "想到一半"], "rule": ["last_line:answer_phrase", "unfinished:budget"],
                          "reasoning_tokens": [40, 64]})
    merged, _ = plan.merge(again)
    assert list(merged["answer"]) == ["A", "D", "C", "A"] and list(merged["source"][1:3]) == ["reason", "reason_closed"]
    assert merged["p_A"].isna().tolist() == [False, True, False, False]  # a reasoned letter has no probabilities
    assert list(merged["reasoning_tokens"][1:3]) == [40, 64] and merged["raw"].isna().tolist() == [True, False,
                                                                                                 False, True]


def test_a_first_run_of_other_questions_or_without_probabilities_is_refused(tmp_path):
    frame = pd.DataFrame({"ID": ["a", "b", "c", "d"]})
    with pytest.raises(CascadeError, match="no predictions.csv there"):
        Rescore.plan(str(tmp_path), frame, 0.5, allow_bare=True)
    other = first_run(tmp_path / "other", [[0.25] * 4] * 3, ids=("a", "b", "x"))
    with pytest.raises(CascadeError, match="answered other questions"):
        Rescore.plan(str(other), frame, 0.5, allow_bare=True)
    generated = tmp_path / "generated.csv"
    pd.DataFrame({"ID": list("abcd"), "answer": list("ABCD")}).to_csv(generated, index=False)
    with pytest.raises(CascadeError, match="no p_A, p_B, p_C, p_D column"):
        Rescore.plan(str(generated), frame, 0.5, allow_bare=True)
    reasoned = tmp_path / "reasoned.csv"  # a reasoning run: a committed reply has no probabilities, a closed one has
    pd.DataFrame({"ID": list("abcd"), "answer": list("ABCD"), "p_A": [None, 0.1, 0.1, 0.1],
                  "p_B": [None, 0.7, 0.1, 0.1], "p_C": [None, 0.1, 0.7, 0.1],
                  "p_D": [None, 0.1, 0.1, 0.7]}).to_csv(reasoned, index=False)
    with pytest.raises(CascadeError, match=r"1 rows have no letter probabilities \(answers read from a generated or "
                                           r"reasoning reply\).*give a score-mode run"):
        Rescore.plan(str(reasoned), frame, 0.5, allow_bare=True)


@pytest.mark.slow
def test_cascade_answers_only_the_least_confident_rows_again(trained_run, tmp_path):
    test_file = str(trained_run["sample_dir"] / "test.csv")
    probs = ["p_A", "p_B", "p_C", "p_D"]
    infer.run(infer_args(trained_run, tmp_path / "a", output_dir=str(tmp_path / "a"), test_file=test_file))
    infer.run(infer_args(trained_run, tmp_path / "c", output_dir=str(tmp_path / "c"), test_file=test_file,
                          permutations=4))
    report = infer.run(infer_args(trained_run, tmp_path / "b", output_dir=str(tmp_path / "b"), test_file=test_file,
                                   permutations=4, rescore=str(tmp_path / "a"), rescore_fraction=0.25))
    first, full, merged = (pd.read_csv(tmp_path / n / "predictions.csv", dtype={"ID": str}) for n in "acb")
    chosen = merged["rescored"].to_numpy()
    assert chosen.sum() == report["rescore"]["rows"] == 40 == report["answered_this_run"]
    smallest = np.argsort(margins(first[probs].to_numpy()), kind="stable")[:40]
    assert set(first["ID"].iloc[smallest]) == set(merged["ID"][chosen])  # the least confident ones
    assert (merged["answer"][~chosen] == first["answer"][~chosen]).all()  # the others keep the first answers
    assert np.allclose(merged[probs][~chosen], first[probs][~chosen])
    assert np.allclose(merged[probs][chosen], full[probs][chosen], atol=1e-3)  # answered as the second run would
    assert report["rescore"]["answers_changed"] == int((merged["answer"] != first["answer"]).sum())
    assert (merged["answer_before"] == first["answer"]).all()
    other = tmp_path / "other.csv"
    pd.read_csv(test_file, dtype=str).head(20).to_csv(other, index=False)
    with pytest.raises(ProvenanceError, match="answered another test file"):  # its report.json says so
        infer.run(infer_args(trained_run, tmp_path / "d", output_dir=str(tmp_path / "d"), test_file=str(other),
                              rescore=str(tmp_path / "a")))
    with pytest.raises(ConfigError, match="would overwrite the input"):
        infer.run(infer_args(trained_run, tmp_path / "a", output_dir=str(tmp_path / "a"), test_file=test_file,
                              rescore=str(tmp_path / "a")))


def test_a_first_run_that_was_itself_a_cascade_is_rescored_again(tmp_path):
    """A cascade's predictions (its rows answered again by reasoning, with their reply columns empty elsewhere) can be
    the first run of another cascade: the new replies go into those columns."""
    folder = tmp_path / "cascade_run"
    folder.mkdir()
    (folder / "predictions.csv").write_text(
        "ID,answer,source,p_A,p_B,p_C,p_D,rescored,answer_before,raw,rule,reasoning_tokens\n"
        "a,A,score,0.9,0.05,0.03,0.02,False,A,,,\n"
        "b,B,reason_closed,0.1,0.5,0.2,0.2,True,A,想到一半,unfinished:budget,8\n"
        "c,A,score,0.4,0.35,0.15,0.1,False,A,,,\n", encoding="utf-8")
    frame = pd.DataFrame({"ID": ["a", "b", "c"], "question": list("qqq")})
    plan = Rescore.plan(str(folder), frame, 0.34, allow_bare=True)
    assert plan.ids == ["c"]
    nan = float("nan")
    again = pd.DataFrame({"ID": ["c"], "answer": ["B"], "source": ["reason"], "p_A": [nan], "p_B": [nan],
                          "p_C": [nan], "p_D": [nan], "raw": ["……\n答案：B"], "rule": ["last_line:answer_phrase"],
                          "reasoning_tokens": [12]})
    merged, info = plan.merge(again)
    assert list(merged["answer"]) == ["A", "B", "B"] and list(merged["rescored"]) == [False, False, True]
    assert merged["reasoning_tokens"].tolist()[1:] == [8, 12] and pd.isna(merged["reasoning_tokens"][0])
    assert merged["raw"].tolist()[1:] == ["想到一半", "……\n答案：B"] and info["rescore"]["answers_changed"] == 1


def test_a_vote_on_the_least_confident_rows_keeps_its_counts(tmp_path):
    """--samples on the rows answered again: each vote and its closed replies are kept on those rows (the first
    run has no such columns), so the report sums the vote, not an empty reasoning."""
    from mcqtune.reporting.report import reasoning_summary

    probs = [[0.9, 0.05, 0.03, 0.02], [0.4, 0.38, 0.12, 0.1], [0.3, 0.3, 0.2, 0.2], [0.6, 0.2, 0.1, 0.1]]
    frame = pd.DataFrame({"ID": ["a", "b", "c", "d"], "question": list("qqqq")})
    plan = Rescore.plan(str(first_run(tmp_path / "first", probs)), frame, 0.5, allow_bare=True)
    again = pd.DataFrame({"ID": ["b", "c"], "answer": ["B", "C"], "source": ["vote", "vote"],
                          "raw": ["……答案：B", "……答案：C"], "rule": ["vote", "vote"],
                          "reasoning_tokens": [30, 50], "vote": ["A:0 B:2 C:0 D:0", "A:1 B:0 C:2 D:0"],
                          "closed_replies": [0, 1]})
    merged, _ = plan.merge(again)
    assert merged["vote"].tolist()[1:3] == ["A:0 B:2 C:0 D:0", "A:1 B:0 C:2 D:0"]
    assert merged["vote"].isna().tolist() == [True, False, False, True]
    assert merged["closed_replies"].tolist()[1:3] == [0, 1] and merged["p_B"].isna().tolist() == [False, True, True,
                                                                                                 False]
    votes = reasoning_summary(merged)["votes"]
    assert votes["questions"] == 2 and votes["replies"] == 5 and votes["generated_tokens"] == 80
    merged.to_csv(tmp_path / "cascade.csv", index=False)  # a cascade of this cascade reads the counts back whole
    assert (tmp_path / "cascade.csv").read_text().splitlines()[2].endswith(",A:0 B:2 C:0 D:0,0")
