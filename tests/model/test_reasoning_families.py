"""Templates whose generation prompt opens a thinking block (DeepSeek-R1-Distill-Qwen's, on a tiny Qwen2): they
answer by reasoning only -- direct scoring is refused with what to do, reason mode reads the letter after the
thinking the prompt opened (or closes it and scores), and training on reasoning replies, which their assistant
turns drop, is refused."""

import pandas as pd
import pytest

from mcqtune.data.questions import ANSWER_PREFIX, PromptStyle
from mcqtune.model.prompts import render_prompt
from mcqtune.model.prompts import TemplateError, find_answer_slot, opens_thinking, stop_token_ids
from mcqtune.tiny.families import build_family_tokenizer, write_tiny_family

ROW = {"ID": "1", "question": "中国的首都是哪里？", "option_A": "北京", "option_B": "上海", "option_C": "广州",
       "option_D": "深圳", "answer": "A", "reasoning": "首都是北京。"}


@pytest.fixture(scope="module")
def r1_tokenizer():
    return build_family_tokenizer("r1distill")


@pytest.fixture(scope="module")
def r1_model(tmp_path_factory, r1_tokenizer):
    return write_tiny_family(tmp_path_factory.mktemp("r1distill"), "r1distill", tokenizer=r1_tokenizer)


def test_the_generation_prompt_opens_thinking_and_direct_answers_are_refused(r1_tokenizer):
    prompt = render_prompt(r1_tokenizer, ROW, PromptStyle(system_prompt=None))
    assert prompt.startswith("<｜begin▁of▁sentence｜><｜User｜>") and prompt.endswith("<｜Assistant｜><think>\n")
    assert opens_thinking(prompt)
    with pytest.raises(TemplateError, match="--mode reason"):
        find_answer_slot(r1_tokenizer, PromptStyle())


def test_the_reasoning_slot_ends_the_turn_where_the_template_does(r1_tokenizer):
    slot = find_answer_slot(r1_tokenizer, PromptStyle(reasoning=True))
    end = r1_tokenizer.convert_tokens_to_ids("<｜end▁of▁sentence｜>")
    assert slot.end_ids == (end,) and slot.end_from_template
    assert [r1_tokenizer.decode([t]) for t in slot.letter_ids] == ["A", "B", "C", "D"]
    assert end in stop_token_ids(r1_tokenizer, None, PromptStyle(reasoning=True))


def test_training_on_reasoning_is_refused_since_the_template_drops_it(r1_tokenizer):
    from mcqtune.model.prompts import encode_training_example

    with pytest.raises(TemplateError, match="cannot be trained on"):
        encode_training_example(r1_tokenizer, ROW, PromptStyle(reasoning=True), max_answer_tokens=200)


@pytest.mark.slow
def test_reason_mode_closes_the_thinking_the_prompt_opened_and_scores_there(r1_model, sample_dir, tmp_path):
    from mcqtune.infer import run as infer

    args = infer.InferArguments(test_file=str(sample_dir / "test.csv"), model_path=str(r1_model), mode="reason",
                                max_reasoning_tokens=6, batch_size=8, output_file=str(tmp_path / "s.csv"),
                                backend="hf", load_in_4bit=False)
    report = infer.run(args)
    predictions = pd.read_csv(args.run_dir / "predictions.csv", dtype=str)
    assert len(predictions) == report["rows"] and predictions["answer"].isin(list("ABCD")).all()
    # random weights never finish 6 tokens: every reply is closed (</think> then the answer prefix) and scored
    assert (predictions["rule"] == "unfinished:budget").all() and (predictions["source"] == "reason_closed").all()
    with pytest.raises(TemplateError, match="--mode reason"):
        infer.run(infer.InferArguments(test_file=str(sample_dir / "test.csv"), model_path=str(r1_model),
                                        output_file=str(tmp_path / "direct.csv"), backend="hf",
                                        load_in_4bit=False))


def test_closing_a_reply_inside_the_opened_thinking_writes_its_end_first():
    from mcqtune.core.reasoning import closing_text, read_reply

    assert closing_text("北京是首都", opened=True) == f"\n</think>\n\n{ANSWER_PREFIX}"
    assert read_reply("北京是首都。\n</think>\n\n答案：A", ["北京", "上海", "广州", "深圳"], finished=True,
                      opened=True).letter == "A"
