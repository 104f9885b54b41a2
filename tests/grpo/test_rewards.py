"""GRPO's rewards: the parser's letter against the label, in the direct and the reasoning reply forms; hedges,
several letters, empty and unfinished replies earn nothing; the format reward; the shuffled prompts."""

import pandas as pd
import pytest

from mcqtune.data.questions import ANSWER_PREFIX, LETTERS, OPTION_COLUMNS, PromptStyle
from mcqtune.grpo.data import prompt_records, rounds_needed, shuffled_round, shuffled_rounds
from mcqtune.grpo.rewards import ReplyReader, correct_rewards, reward_functions
from tests.helpers import ROW

OPTIONS = [ROW[c] for c in OPTION_COLUMNS]


@pytest.fixture(scope="module")
def im_end(qwen_tokenizer):
    return qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")


def reply(tokenizer, text, stop):
    """A completion as TRL hands it over: the reply's ids, then the stop token when it finished."""
    return tokenizer.encode(text, add_special_tokens=False) + ([stop] if stop is not None else [])


DIRECT = [  # (reply, finished, label, reward)
    ("A", True, "A", 1.0),
    ("B", True, "A", 0.0),
    ("A或B", True, "A", 0.0),           # a hedge commits to nothing
    ("A、B、C、D都对", True, "A", 0.0),   # every letter
    ("", True, "A", 0.0),               # empty
    ("A", False, "A", 0.0),             # never finished within max_completion_length
    ("答案是A", True, "A", 1.0),
    ("北京", True, "A", 1.0),            # the option's text names it
]


@pytest.mark.parametrize("text,finished,label,expected", DIRECT)
def test_direct_replies_earn_one_only_for_the_labelled_letter(qwen_tokenizer, im_end, text, finished, label,
                                                              expected):
    reader = ReplyReader(qwen_tokenizer, frozenset({im_end}))
    ids = reply(qwen_tokenizer, text, im_end if finished else None)
    rewards, silent = correct_rewards(reader, [ids], [OPTIONS], [label])
    assert rewards == [expected]
    assert silent == (reader.read(ids, OPTIONS).letter is None)


REASONED = [  # reasoning replies: the letter is read after the reasoning, never from inside it
    ("北京是首都。\n\n" + ANSWER_PREFIX + "A", True, False, 1.0),
    ("先看A，其实是B。\n\n" + ANSWER_PREFIX + "B", True, False, 0.0),    # label A, committed to B
    ("A看起来对", False, False, 0.0),                                    # budget spent
    ("<think>\n答案是A\n", True, True, 0.0),                              # thinking never closed
    ("<think>\n想一想\n</think>\n\n" + ANSWER_PREFIX + "A", True, True, 1.0),
    ("<think>\n是A\n</think>\n\nA或B都有可能", True, True, 0.0),          # a hedge after thinking
    ("分析……\n\n" + ANSWER_PREFIX + "A或C", True, False, 0.0),
]


@pytest.mark.parametrize("text,finished,thinking,expected", REASONED)
def test_reasoning_replies_are_read_after_the_reasoning(qwen_tokenizer, im_end, text, finished, thinking, expected):
    reader = ReplyReader(qwen_tokenizer, frozenset({im_end}), reasoning=True)
    rewards, _ = correct_rewards(reader, [reply(qwen_tokenizer, text, im_end if finished else None)], [OPTIONS],
                                 ["A"])
    assert rewards == [expected]


@pytest.mark.parametrize("text,reasoning,expected", [
    ("A", False, True), (" B ", False, True), ("答案是A", False, False), ("A或B", False, False),
    ("分析\n\n" + ANSWER_PREFIX + "C", True, True), ("分析\n\n答案是C", True, False),
    ("<think>\n嗯\n</think>\n\n" + ANSWER_PREFIX + "D", True, True),
    ("<think>\n嗯\n" + ANSWER_PREFIX + "D", True, False),
])
def test_the_format_reward_asks_for_the_trained_reply_form(qwen_tokenizer, im_end, text, reasoning, expected):
    reader = ReplyReader(qwen_tokenizer, frozenset({im_end}), reasoning=reasoning)
    assert reader.well_formed(reply(qwen_tokenizer, text, im_end)) is expected
    assert reader.well_formed(reply(qwen_tokenizer, text, None)) is False  # unfinished: never well formed


@pytest.mark.parametrize("text,letter,formed", [
    ("想一想。\n</think>\n\n" + ANSWER_PREFIX + "A", "A", True),
    ("想一想，答案是A", None, False),                                     # still inside the opened block
    ("想。\n</think>\n再想。\n</think>\n\n" + ANSWER_PREFIX + "A", "A", False),  # two closings: not the form
])
def test_a_prompt_that_opened_thinking_is_read_as_inside_it(qwen_tokenizer, im_end, text, letter, formed):
    reader = ReplyReader(qwen_tokenizer, frozenset({im_end}), reasoning=True, opened=True)
    ids = reply(qwen_tokenizer, text, im_end)
    assert reader.read(ids, OPTIONS).letter == letter
    assert reader.well_formed(ids) is formed


def test_reward_functions_read_each_rows_own_shuffled_options_and_log_silence(qwen_tokenizer, im_end):
    reader = ReplyReader(qwen_tokenizer, frozenset({im_end}))
    correct, form = reward_functions(reader, with_format=True)
    assert (correct.__name__, form.__name__) == ("correct", "format")  # TRL logs rewards/<name>/mean
    columns = {c: [ROW[c], "上海"] for c in OPTION_COLUMNS}
    columns["option_A"] = ["北京", "上海"]
    logged = {}
    ids = [reply(qwen_tokenizer, "北京", im_end), reply(qwen_tokenizer, "北京", im_end)]
    got = correct(prompts=["p", "q"], completions=["", ""], completion_ids=ids, answer=["A", "A"],
                  log_metric=logged.__setitem__, **columns)
    assert got == [1.0, 0.0]  # "北京" is option A of the first row only (the second row's options are all 上海)
    assert logged == {"replies/no_letter": 0.5}
    assert form(prompts=["p"], completions=[""], completion_ids=[reply(qwen_tokenizer, "A", im_end)]) == [1.0]


def frame(n=10, answer="A"):
    return pd.DataFrame([{"ID": str(i), "question": f"问题{i}", "option_A": f"甲{i}", "option_B": f"乙{i}",
                          "option_C": f"丙{i}", "option_D": f"丁{i}", "answer": answer} for i in range(n)])


def test_shuffling_keeps_the_label_with_its_text_and_spreads_the_letters():
    original = frame(40, answer="C")  # every label C: the file's own letter shares carry over nothing
    shuffled = shuffled_round(original, 0, seed=1)
    assert list(shuffled["ID"]) == list(original["ID"])
    for (_, before), (_, after) in zip(original.iterrows(), shuffled.iterrows()):
        assert after[f"option_{after['answer']}"] == before["option_C"]
        assert sorted(after[c] for c in OPTION_COLUMNS) == sorted(before[c] for c in OPTION_COLUMNS)
    assert shuffled["answer"].value_counts().to_dict() == {letter: 10 for letter in LETTERS}
    again = shuffled_round(original, 0, seed=1)
    assert again.equals(shuffled)  # seeded: a resumed run sees the same prompts
    assert not shuffled_round(original, 1, seed=1)["order"].equals(shuffled["order"])  # each round its own order


def test_rounds_cover_the_training_length_asked_for():
    assert rounds_needed(rows=100, epochs=3, max_steps=0, prompts_per_step=4) == 3
    assert rounds_needed(rows=100, epochs=1, max_steps=60, prompts_per_step=4) == 3  # 240 prompts
    assert len(shuffled_rounds(frame(8), 3, seed=0)) == 24


def test_prompts_are_infer_py_s_token_ids(qwen_tokenizer):
    from mcqtune.model.prompts import encode_prompt

    data = frame(3)
    records, ids, shortened = prompt_records(qwen_tokenizer, data, PromptStyle(), 512)
    assert shortened == 0 and len(records) == 3
    for record, (_, row) in zip(records, data.iterrows()):
        assert ids[record["prompt"]] == encode_prompt(qwen_tokenizer, row, PromptStyle(), 512)
        assert record["answer"] == row["answer"] and record["option_B"] == row["option_B"]
