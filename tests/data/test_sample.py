"""data/sample.py: the hard testbed's files are valid competition CSVs with the skew, noise and balance asked for."""

from collections import Counter

import pytest

from mcqtune.cli import sample as sample_command
from mcqtune.data import sample as sample_data
from mcqtune.data.questions import LETTERS, load_mcq_csv
from mcqtune.data.sample import NEAR_SUBJECT, SUBJECTS, HardSettings, write_sample


@pytest.fixture(scope="module")
def hard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("hard")
    write_sample(out, 200, 160, seed=3, hard=HardSettings(noise=0.25, a_share=0.4))
    return out


def subject_letter(frame):
    return frame["subject"].map(lambda s: SUBJECTS[s][0])


def test_hard_files_are_valid_competition_csvs(hard_dir):
    train = load_mcq_csv(hard_dir / "train.csv", require_answer=True)
    test = load_mcq_csv(hard_dir / "test.csv", require_answer=True)
    blind = load_mcq_csv(hard_dir / "test_no_answer.csv")
    assert (len(train), len(test), len(blind)) == (200, 160, 160)
    assert "answer" not in blind and list(blind["ID"]) == list(test["ID"])
    assert not set(train["ID"]) & set(test["ID"])
    assert set(train["answer"]) == set(test["answer"]) == set(LETTERS)


def test_training_answers_are_skewed_and_test_answers_balanced(hard_dir):
    train = load_mcq_csv(hard_dir / "train.csv", require_answer=True)
    test = load_mcq_csv(hard_dir / "test.csv", require_answer=True)
    clean = Counter(subject_letter(train))  # the letters before the label noise
    assert clean["A"] == 80 and all(clean[letter] == 40 for letter in "BCD")
    assert Counter(test["answer"]) == {letter: 40 for letter in LETTERS}
    assert (test["answer"] == subject_letter(test)).all()  # no noise in the test file
    assert Counter(train["answer"]).most_common(1)[0][0] == "A"


def test_label_noise_share_is_as_requested(hard_dir):
    train = load_mcq_csv(hard_dir / "train.csv", require_answer=True)
    replaced = train["answer"] != subject_letter(train)
    assert replaced.sum() == 50  # a quarter of 200 rows, each given another letter


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.5])
def test_label_noise_counts_for_other_shares(tmp_path, noise):
    write_sample(tmp_path, 120, 40, seed=1, hard=HardSettings(noise=noise))
    train = load_mcq_csv(tmp_path / "train.csv", require_answer=True)
    assert (train["answer"] != subject_letter(train)).sum() == round(noise * 120)


def test_the_right_option_is_in_the_subjects_words_and_distractors_borrow_a_neighbours(hard_dir):
    test = load_mcq_csv(hard_dir / "test.csv", require_answer=True)
    borrowed = total = 0
    for _, row in test.iterrows():
        own, near = SUBJECTS[row["subject"]][1], SUBJECTS[NEAR_SUBJECT[row["subject"]]][1]
        assert any(word in row[f"option_{row['answer']}"] for word in own)
        for letter in LETTERS:
            if letter != row["answer"]:
                total += 1
                borrowed += any(word in row[f"option_{letter}"] for word in near)
    assert 0.4 < borrowed / total < 0.9  # near_miss 0.67 by default
    assert all(SUBJECTS[NEAR_SUBJECT[s]][0] != SUBJECTS[s][0] for s in SUBJECTS)


def test_deterministic_for_a_seed(tmp_path):
    for name in ("a", "b", "c"):
        write_sample(tmp_path / name, 64, 32, seed=11 if name != "c" else 12, hard=HardSettings())
    same = [(tmp_path / n / "train.csv").read_bytes() for n in ("a", "b", "c")]
    assert same[0] == same[1] != same[2]
    assert (tmp_path / "a" / "test.csv").read_bytes() == (tmp_path / "b" / "test.csv").read_bytes()


def test_easy_sample_is_unchanged_by_the_hard_mode(tmp_path):
    write_sample(tmp_path, 48, 16, seed=7)
    train = load_mcq_csv(tmp_path / "train.csv", require_answer=True)
    assert (train["answer"] == subject_letter(train)).all()
    assert Counter(train["answer"]) == {letter: 12 for letter in LETTERS}


def test_cli_hard_defaults_and_refusals(tmp_path, capsys):
    assert sample_command.main([str(tmp_path), "--hard"]) == 0
    train = load_mcq_csv(tmp_path / "train.csv", require_answer=True)
    assert len(train) == sample_data.HARD_ROWS[0]
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sample_command.main([str(tmp_path), "--hard", "--noise", "1.5"])


def test_a_file_of_yours_is_never_replaced_and_the_same_sample_may_be_written_again(tmp_path, capsys):
    from mcqtune.errors import EXIT_USER_ERROR, run_cli

    assert run_cli(sample_command.main, [str(tmp_path / "s")]) == 0
    again = run_cli(sample_command.main, [str(tmp_path / "s")])  # the same bytes: written again
    assert again == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "test.csv").write_text("my precious\n")
    capsys.readouterr()
    assert run_cli(sample_command.main, [str(mine)]) == EXIT_USER_ERROR
    assert "test.csv already exists and is not this sample" in capsys.readouterr().err
    assert (mine / "test.csv").read_text() == "my precious\n" and not (mine / "train.csv").exists()
    assert run_cli(sample_command.main, [str(tmp_path / "s"), "--seed", "8"]) == EXIT_USER_ERROR  # another sample
