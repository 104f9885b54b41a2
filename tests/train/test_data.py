"""train/data.py: the stratified, seeded train/validation split, and a split that leaves no validation row."""

import pandas as pd
import pytest

from mcqtune.training.data import split_train_val
from tests.helpers import train_args


def make_frame(n_per_letter=50):
    rows = [{"ID": str(i), "question": f"q{i}", "option_A": "a", "option_B": "b", "option_C": "c",
             "option_D": "d", "answer": "ABCD"[i % 4]} for i in range(4 * n_per_letter)]
    return pd.DataFrame(rows)


def test_split_is_stratified_seeded_and_disjoint():
    frame = make_frame()
    train, val = split_train_val(frame, 0.1, seed=42)
    assert len(val) == 20 and len(train) == 180
    assert val["answer"].value_counts().to_dict() == {"A": 5, "B": 5, "C": 5, "D": 5}
    assert not set(train["ID"]) & set(val["ID"])
    again_train, again_val = split_train_val(frame, 0.1, seed=42)
    assert list(again_val["ID"]) == list(val["ID"])
    assert list(split_train_val(frame, 0.1, seed=1)[1]["ID"]) != list(val["ID"])


def test_a_reasoning_column_must_exist_and_be_filled_on_every_row(tmp_path):
    import pytest

    from mcqtune.errors import DataError
    from mcqtune.train.data import with_reasoning

    frame = make_frame(2).assign(ID=[str(i) for i in range(8)])
    with pytest.raises(DataError, match="no column 'why'"):
        with_reasoning(frame, "why", "t.csv")
    frame["why"] = ["因为"] * 7 + ["  "]
    with pytest.raises(DataError, match="1 rows have no text in 'why' \\(first: ID 7\\)"):
        with_reasoning(frame, "why", "t.csv")
    frame.loc[7, "why"] = "所以"
    assert list(with_reasoning(frame, "why", "t.csv")["reasoning"]) == ["因为"] * 7 + ["所以"]


@pytest.mark.parametrize("job", ["sft", "grpo"])
def test_a_split_without_validation_rows_is_refused_before_loading(job, tmp_path, monkeypatch):
    """Eight rows at --val_fraction 0.1 leave no validation row; a run that keeps its best checkpoint by validation
    accuracy is refused before any model loads (it would train, then fail looking for that accuracy)."""
    import mcqtune.model.loading as loading
    from mcqtune.errors import DataError

    rows = "".join(f"{i},问题{i},a,b,c,d,{'ABCD'[i % 4]}\n" for i in range(8))
    train = tmp_path / "train.csv"
    train.write_text("ID,question,option_A,option_B,option_C,option_D,answer\n" + rows, encoding="utf-8")
    monkeypatch.setattr(loading, "load_base_model", lambda *a, **k: pytest.fail("the model was loaded"))
    if job == "sft":
        from mcqtune.train import sft

        script_args, training_args = train_args("no-model", train, tmp_path / "out")
        run = sft.run
    else:
        from mcqtune.grpo import run as grpo
        from tests.grpo.test_grpo import grpo_args

        script_args, training_args = grpo_args("no-model", train, tmp_path / "out")
        run = grpo.run
    with pytest.raises(DataError, match=r"train\.csv: leaves no validation rows .* --val_file, raise --val_fraction"):
        run(script_args, training_args, "hf")


def test_a_validation_file_the_training_file_holds_is_refused_and_a_partial_overlap_counted(tmp_path, caplog):
    """--val_file equal to --train_file (or a copy) would choose the best checkpoint on training questions."""
    import dataclasses

    from mcqtune.errors import DataError
    from mcqtune.train.data import load_splits

    header = "ID,question,option_A,option_B,option_C,option_D,answer\n"
    train = tmp_path / "train.csv"
    train.write_text(header + "".join(f"{i},问题{i},a,b,c,d,{'ABCD'[i % 4]}\n" for i in range(12)), encoding="utf-8")
    script_args, _ = train_args("no-model", train, tmp_path / "out")
    with pytest.raises(DataError, match=r"train\.csv: every one of its 12 questions also stands in the training file"):
        load_splits(dataclasses.replace(script_args, val_file=str(train)), seed=0)
    val = tmp_path / "val.csv"
    val.write_text(header + "100,问题3,a,b,c,d,D\n101,新问题,a,b,c,d,A\n", encoding="utf-8")
    got_train, got_val = load_splits(dataclasses.replace(script_args, val_file=str(val)), seed=0)
    assert len(got_train) == 12 and len(got_val) == 2
    assert "--val_file: 1 of its 2 questions also stand in the training file (1 exactly)" in caplog.text
