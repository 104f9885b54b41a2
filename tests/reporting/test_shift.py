"""mcq-tune shift: the cross-validated AUC tells files drawn alike from files that are not, the training rows that look
like the test rank first, and train_sft.py --val_test_like validates on them (only for the file they rank)."""

import json

import pandas as pd
import pytest

from mcqtune import errors as cli
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
    assert cli.run_cli(shift.main, ["--train_file", str(folder / "train.csv"), "--test_file",
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
