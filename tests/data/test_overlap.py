"""data/overlap.py: test questions that also stand in the training data are counted exactly and after normalising
whitespace, punctuation, width, case and option order; other questions are not."""

import pandas as pd

from mcqtune.data.overlap import describe_overlap, normalised, overlap
from mcqtune.data.questions import OPTION_COLUMNS

HEADER = ["ID", "question", "option_A", "option_B", "option_C", "option_D"]


def frame(rows):
    return pd.DataFrame(rows, columns=HEADER)


def test_exact_and_normalised_copies_are_counted_and_others_are_not():
    train = frame([["t1", "中国的首都是哪里？", "北京", "上海", "广州", "深圳"],
                   ["t2", "Which is prime?", "4", "6", "7", "9"],
                   ["t3", "一加一等于几", "1", "2", "3", "4"]])
    test = frame([["q1", "中国的首都是哪里？", "北京", "上海", "广州", "深圳"],       # exact
                  ["q2", " which IS prime ", "７", "4", "9", "6"],               # case, spaces, width, order
                  ["q3", "一加一等于几。", "1", "2", "3", "5"],                      # one option differs
                  ["q4", "中国的首都是哪里", "北京", "上海", "广州", "深圳"]])        # punctuation only
    found = overlap(train, test, OPTION_COLUMNS)
    assert found["exact"] == 1 and found["normalised"] == 3 and found["test_rows"] == 4
    assert found["pairs"] == [{"test_ID": "q1", "train_ID": "t1", "match": "exact"},
                              {"test_ID": "q2", "train_ID": "t2", "match": "normalised"},
                              {"test_ID": "q4", "train_ID": "t1", "match": "normalised"}]
    assert describe_overlap(found).startswith("3 of the 4 test questions also stand in the training data (1 exactly")
    none = describe_overlap(overlap(train, test.iloc[[2]], OPTION_COLUMNS))
    assert none == "none of the 1 test questions stands in the training data"


def test_normalising_keeps_the_words():
    assert normalised("Ｈｅｌｌｏ，  World！") == "helloworld"
    assert normalised("北京 。") == "北京" and normalised("A-B") != normalised("AB C")


def test_validate_with_a_training_and_a_test_file_counts_their_overlap(tmp_path, capsys):
    from mcqtune.cli.validate import main

    (tmp_path / "train.csv").write_text("ID,question,option_A,option_B,option_C,option_D,answer\n"
                                        "1,中国的首都是哪里？,北京,上海,广州,深圳,A\n2,一加一,1,2,3,4,B\n",
                                        encoding="utf-8")
    (tmp_path / "test.csv").write_text("ID,question,option_A,option_B,option_C,option_D\n"
                                       "9,中国的首都是哪里,上海,北京,广州,深圳\n10,新问题,a,b,c,d\n", encoding="utf-8")
    assert main([str(tmp_path / "train.csv"), str(tmp_path / "test.csv")]) == 0
    out = capsys.readouterr().out
    assert "1 of the 2 test questions also stand in the training data (0 exactly, 1 more after normalising" in out
    assert "test 9 = training 1 (normalised)" in out
