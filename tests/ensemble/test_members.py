"""ensemble/members.py: members that answered other questions, in another order, with unusable probabilities or
named twice are refused in one line (through ensemble.py's command line, as a user meets them)."""

import numpy as np
import pandas as pd
import pytest

from tests.helpers import IDS, random_probs, run_ensemble, write_member
from mcqtune.runs.predictions import PROB_COLUMNS


def test_members_that_answered_other_questions_are_refused_in_one_line(tmp_path, capsys):
    a = write_member(tmp_path / "a_run", random_probs(0))
    other_ids = IDS[:-2] + ["new1", "new2"]
    b = write_member(tmp_path / "b_run", random_probs(1), ids=other_ids)
    status, captured = run_ensemble([a, b, "--output_file", tmp_path / "sub.csv"], capsys)
    lines = captured.err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and lines[0].startswith("error: ")
    assert str(b) in lines[0] and "4 IDs differ" in lines[0] and "'new1' is only in" in lines[0]
    assert "Traceback" not in captured.err and not (tmp_path / "sub.csv").exists()

    c = write_member(tmp_path / "c_run", random_probs(1), ids=IDS[::-1])  # same questions, another order
    status, captured = run_ensemble([a, c, "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and "another order" in captured.err and len(captured.err.strip().splitlines()) == 1


def break_probabilities(frame, how):
    if how == "missing":  # a generate-mode row answered from the reply: no probabilities
        frame.loc[1, list(PROB_COLUMNS)] = np.nan
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
    status, captured = run_ensemble([a, b, "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and len(captured.err.strip().splitlines()) == 1
    assert str(b) in captured.err and expected in captured.err


def test_a_member_named_twice_is_refused(tmp_path, capsys):
    a = write_member(tmp_path / "a_run", random_probs(1))
    status, out = run_ensemble([a, a / "predictions.csv", "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and "are the same predictions" in out.err and not (tmp_path / "sub.csv").exists()
