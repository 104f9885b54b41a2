"""Pseudo-labels: the test questions that runs of that very file answered confidently join the training rows (never
validation) with the letter they chose, under IDs of their own; runs of another file, a labelled file and options
without their partner are refused in one line."""

import json

import numpy as np
import pandas as pd
import pytest

from mcqtune.data.overlap import question_keys
from mcqtune.data.questions import LETTERS, OPTION_COLUMNS
from mcqtune.errors import ConfigError, DataError
from mcqtune.runs.identity import csv_identity
from mcqtune.runs.provenance import ProvenanceError
from mcqtune.train.data import build_datasets, load_splits
from mcqtune.train.options import check_config
from mcqtune.train.pseudo_labels import PSEUDO_SOURCE
from tests.helpers import train_args


def fake_run(folder, test_file, probs: np.ndarray, ids):
    """What infer.py leaves in a score-mode run folder, as far as pseudo-labels read it."""
    folder.mkdir()
    frame = pd.DataFrame(probs, columns=[f"p_{x}" for x in LETTERS]).assign(ID=list(ids))
    frame.assign(answer=[LETTERS[i] for i in probs.argmax(1)]).to_csv(folder / "predictions.csv", index=False)
    (folder / "report.json").write_text(json.dumps({
        "test_file": str(test_file), "test_file_sha256": csv_identity(test_file, None)["bytes_sha256"]}))
    return folder


@pytest.fixture
def two_runs(sample_dir, tmp_path):
    test_file = sample_dir / "test_no_answer.csv"
    ids = pd.read_csv(test_file, dtype=str)["ID"]
    rng = np.random.default_rng(0)
    runs = [fake_run(tmp_path / f"run{k}", test_file, rng.dirichlet([0.3] * 4, len(ids)), ids) for k in range(2)]
    return test_file, ids, runs


def test_confident_test_rows_join_training_with_the_averaged_letter_and_never_validation(
        two_runs, sample_dir, tmp_path, qwen_tokenizer):
    test_file, ids, runs = two_runs
    script_args, _ = train_args("m", sample_dir / "train.csv", tmp_path / "out", "--pseudo_label_from", *runs,
                                "--pseudo_label_file", test_file, "--pseudo_label_threshold", 0.6)
    plain_train, plain_val = load_splits(train_args("m", sample_dir / "train.csv", tmp_path / "o2")[0], 42)
    train, val = load_splits(script_args, 42)
    mean = np.mean([pd.read_csv(r / "predictions.csv")[[f"p_{x}" for x in LETTERS]].to_numpy() for r in runs], 0)
    labelled = set(question_keys(plain_val, OPTION_COLUMNS)) | set(question_keys(plain_train, OPTION_COLUMNS))
    unlabelled = np.array([key not in labelled for key in question_keys(pd.read_csv(test_file, dtype=str),
                                                                          OPTION_COLUMNS)])
    confident = (mean.max(1) >= 0.6) & unlabelled
    assert 0 < confident.sum() < len(ids)
    pseudo = train[train["source"] == PSEUDO_SOURCE]
    assert list(pseudo["ID"]) == [f"{PSEUDO_SOURCE}:{id_}" for id_ in ids[confident]]  # apart from training IDs
    assert list(pseudo["answer"]) == [LETTERS[i] for i in mean[confident].argmax(1)]
    assert len(train) == len(plain_train) + confident.sum() and val.equals(plain_val)  # validation untouched
    counts = {}
    build_datasets(qwen_tokenizer, train, val, script_args, counts)
    letters = pd.Series([LETTERS[i] for i in mean[confident].argmax(1)]).value_counts()
    assert counts["train"]["pseudo_label_letters"] == {x: int(letters.get(x, 0)) for x in LETTERS}
    assert counts["train"]["by_source"][PSEUDO_SOURCE] == confident.sum()
    assert "pseudo_label_letters" not in counts["validation"]


def test_no_confident_row_is_still_counted_by_source(two_runs, sample_dir, tmp_path, qwen_tokenizer):
    test_file, _, runs = two_runs
    script_args, _ = train_args("m", sample_dir / "train.csv", tmp_path / "out", "--pseudo_label_from", *runs,
                                "--pseudo_label_file", test_file, "--pseudo_label_threshold", 1.0)
    train, val = load_splits(script_args, 42)
    counts = {}
    build_datasets(qwen_tokenizer, train, val, script_args, counts)
    assert counts["train"]["by_source"] == {str(sample_dir / "train.csv"): len(train), PSEUDO_SOURCE: 0}


def test_a_run_of_another_file_and_a_labelled_file_are_refused(two_runs, sample_dir, tmp_path):
    test_file, ids, runs = two_runs
    edited = tmp_path / "edited.csv"
    edited.write_text(test_file.read_text(encoding="utf-8").replace("下列", "以下", 1), encoding="utf-8")
    other, _ = train_args("m", sample_dir / "train.csv", tmp_path / "out", "--pseudo_label_from", *runs,
                          "--pseudo_label_file", edited)
    with pytest.raises(ProvenanceError, match="answered another test file"):
        load_splits(other, 42)
    labelled, _ = train_args("m", sample_dir / "train.csv", tmp_path / "out", "--pseudo_label_from", *runs,
                             "--pseudo_label_file", sample_dir / "train.csv")
    with pytest.raises(DataError, match="every one of its .* questions is a training or validation question"):
        load_splits(labelled, 42)


@pytest.mark.parametrize("extra,message", [
    (["--pseudo_label_from", "run"], "needs --pseudo_label_file"),
    (["--pseudo_label_file", "test.csv"], "used with --pseudo_label_from"),
    (["--pseudo_label_from", "run", "--pseudo_label_file", "t.csv", "--pseudo_label_threshold", 0.2], r"\(0.25, 1\]"),
])
def test_pseudo_label_options_without_their_partner_are_one_line(sample_dir, tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        check_config(*train_args("m", sample_dir / "train.csv", tmp_path / "out", *extra))


def test_test_ids_that_are_also_training_ids_join_under_their_own_and_labelled_questions_stay_out(tmp_path):
    """CMMLU's files both number their rows 0..N-1: the same ID is not the same question. A test question that is
    also a validation question would leak into training, one that is a training question could contradict its
    label: both left out, and counted."""
    from mcqtune.train.pseudo_labels import add_pseudo_labels

    train_file = tmp_path / "train.csv"
    header = "ID,question,option_A,option_B,option_C,option_D,answer\n"
    train_file.write_text(header + "".join(f"{i},训练{i},a,b,c,d,{'ABCD'[i % 4]}\n" for i in range(40)),
                          encoding="utf-8")
    test_file = tmp_path / "test.csv"
    test_file.write_text(header.replace(",answer", "") + "0,测试 0,b,a,c,d\n1,训练7,a,b,c,d\n"
                         + "".join(f"{i},测试{i},a,b,c,d\n" for i in range(2, 6)), encoding="utf-8")
    val_file = tmp_path / "val.csv"  # 测试0 with its options in another order is the same question
    val_file.write_text(header + "100,测试0,a,b,c,d,A\n101,验证,a,b,c,d,B\n", encoding="utf-8")
    run = fake_run(tmp_path / "run", test_file, np.tile([0.97, 0.01, 0.01, 0.01], (6, 1)), [str(i) for i in range(6)])
    script_args, _ = train_args("m", train_file, tmp_path / "out", "--pseudo_label_from", run,
                                "--pseudo_label_file", test_file, "--val_file", val_file)
    train, val = load_splits(script_args, 42)
    pseudo = train[train["source"] == PSEUDO_SOURCE]
    assert list(pseudo["ID"]) == [f"{PSEUDO_SOURCE}:{i}" for i in range(2, 6)]
    assert train["ID"].is_unique and len(val) == 2
    _, summary = add_pseudo_labels(train[train["source"] != PSEUDO_SOURCE].drop(columns="source"), val, script_args)
    assert summary["left_out_as_labelled"] == {"validation": 1, "training": 1} and summary["rows"] == 4
