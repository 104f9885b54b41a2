"""mcq-tune shift: the cross-validated AUC tells files drawn alike from files that are not, the training rows that look
like the test rank first, and train_sft.py --val_test_like validates on them (only for the file they rank)."""

import json

import pandas as pd
import pytest

from mcqtune import errors as cli
from mcqtune.errors import DataError
from mcqtune.cli import shift as shift_command
from mcqtune.reporting import shift
from mcqtune.runs.provenance import ProvenanceError
from mcqtune.train.data import load_splits
from tests.helpers import train_args

STYLE = "阅读下面的材料并作答。"  # a way of asking that only the shifted test file (and the planted rows) use


@pytest.fixture
def files(sample_dir, tmp_path):
    train = pd.read_csv(sample_dir / "train.csv", dtype=str)
    planted = train.index[::48][:10]  # ten training rows asked the test file's way
    train.loc[planted, "question"] = STYLE + train.loc[planted, "question"]
    train.to_csv(tmp_path / "train.csv", index=False)
    test = pd.read_csv(sample_dir / "test_no_answer.csv", dtype=str)
    test.to_csv(tmp_path / "alike.csv", index=False)
    test.assign(question=STYLE + test["question"]).to_csv(tmp_path / "shifted.csv", index=False)
    return tmp_path, list(train.loc[planted, "ID"])


def run_shift(folder, test_name):
    assert cli.run_cli(shift_command.main, ["--train_file", str(folder / "train.csv"), "--test_file",
                                    str(folder / test_name), "--out_dir", str(folder / test_name) + "_shift"]) == 0
    return json.loads((folder / f"{test_name}_shift" / shift.REPORT_FILE).read_text())


def test_the_auc_separates_a_shifted_test_file_and_ranks_the_test_like_rows_first(files):
    folder, planted = files
    alike, shifted = run_shift(folder, "alike.csv"), run_shift(folder, "shifted.csv")
    assert alike["auc"] < 0.7 and "fair proxy" in alike["reading"]
    assert shifted["auc"] > 0.9 and "overstate" in shifted["reading"]
    ranked = pd.read_csv(folder / "shifted.csv_shift" / shift.LIKENESS_FILE, dtype={"ID": str})
    assert set(ranked["ID"].head(10)) == set(planted)
    assert len(ranked) == len(pd.read_csv(folder / "train.csv")) and "AUC" in (
        folder / "shifted.csv_shift" / "shift_report.md").read_text()


def test_val_test_like_validates_on_the_most_test_like_rows_of_its_own_train_file(files, sample_dir):
    folder, planted = files
    run_shift(folder, "shifted.csv")
    likeness = str(folder / "shifted.csv_shift" / shift.LIKENESS_FILE)
    script_args, _ = train_args("m", folder / "train.csv", folder / "out", "--val_test_like", likeness,
                                "--val_fraction", 10 / 480)
    train, val = load_splits(script_args, 42)
    assert set(val["ID"]) == set(planted) and not set(train["ID"]) & set(planted)
    other, _ = train_args("m", sample_dir / "train.csv", folder / "out", "--val_test_like", likeness)
    with pytest.raises(ProvenanceError, match="ranks another training file"):
        load_splits(other, 42)


def test_a_test_file_equal_to_the_training_file_is_read_as_leakage_not_as_drawn_alike(sample_dir, tmp_path, capsys):
    """The same questions on both sides: the AUC falls below 0.5, which is explained, and every test question is
    counted as standing in the training data."""
    train = pd.read_csv(sample_dir / "train.csv", dtype=str)
    train.to_csv(tmp_path / "train.csv", index=False)
    train.drop(columns=["answer"]).to_csv(tmp_path / "same.csv", index=False)
    report = run_shift(tmp_path, "same.csv")
    assert report["overlap"]["exact"] == report["overlap"]["normalised"] == len(train)
    assert "stand in the training data" in capsys.readouterr().out
    if report["auc"] < 0.5:
        assert "below 0.5 is no more than chance's noise, or the same questions on both sides" in report["reading"]
    assert "| test ID | training ID | match |" in (tmp_path / "same.csv_shift" / "shift_report.md").read_text()


def test_too_few_rows_name_the_file_that_has_them(files, tmp_path):
    folder, _ = files
    pd.read_csv(folder / "train.csv", dtype=str).head(2).to_csv(tmp_path / "tiny.csv", index=False)
    with pytest.raises(DataError, match=r"tiny\.csv: 2 rows: too few for 5-fold"):
        shift_command.main(["--train_file", str(tmp_path / "tiny.csv"), "--test_file", str(folder / "alike.csv")])
