"""data/questions.py (mcq_dataset.py): the CSV contract and the one prompt builder."""

import subprocess
import sys

import pytest

from mcqtune.errors import DataError
from tests.helpers import GOOD_ROWS, HEADER, ROW, write
from mcqtune.data.questions import DEFAULT_SYSTEM_PROMPT, PromptStyle, describe, load_mcq_csv
from mcqtune.model.prompts import build_messages, render_prompt, to_prompt_completion


def test_reads_valid_file_keeps_extra_columns_and_normalises_answers(tmp_path):
    frame = load_mcq_csv(write(tmp_path, HEADER + GOOD_ROWS), require_answer=True)
    assert list(frame["ID"]) == ["1", "2", "3"]
    assert list(frame["answer"]) == ["A", "C", "B"]  # lower-case and full-width normalised
    assert frame.loc[1, "question"] == '含逗号，和"引号"的题目'
    assert list(frame["subject"]) == ["geo", "misc", "misc"]


@pytest.mark.parametrize("text,pattern", [
    ("", r"is empty"),
    ("ID,question,option_A,option_B,option_D,answer\n1,q,a,b,d,A\n", r"line 1: missing column\(s\) option_C"),
    (HEADER, r"has a header but no rows"),
    (HEADER + "1,,a,b,c,d,A,x\n", r"line 2, column 'question': is empty"),
    (HEADER + "1,q,a,b,c,d,A,x\n2,q,a,,c,d,A,x\n", r"line 3, column 'option_B': is empty"),
    (HEADER + "1,q,a,b,c,d,E,x\n", r"line 2, column 'answer': answer 'E' is not one of A, B, C, D"),
    (HEADER + "1,q,a,b,c,d,AB,x\n", r"line 2, column 'answer'"),
    (HEADER + "7,q,a,b,c,d,A,x\n8,q,a,b,c,d,B,x\n7,q,a,b,c,d,C,x\n",
     r"line 4, column 'ID': duplicate ID '7' \(first seen on line 2\)"),
    (HEADER + "1,q,a,b,c,d,A\n", r"line 2: has 7 fields, expected 8"),
    ('{"not": "a csv"}\n', r"does not look like a CSV"),
])
def test_bad_files_get_one_specific_message(tmp_path, text, pattern):
    with pytest.raises(DataError, match=pattern):
        load_mcq_csv(write(tmp_path, text), require_answer=True)


def test_options_of_the_same_text_are_accepted_and_named_in_the_summary(tmp_path):
    """Real files hold them (CMMLU's training file: 1/16 twice); the summary names the first such question."""
    frame = load_mcq_csv(write(tmp_path, HEADER + "1,q,a,b,c,d,A,x\n2,q,1/16,3/16, 1/16,1/8,B,x\n"
                                                  "3,q,Ａ,x,A,x,C,x\n"))
    assert describe(frame).endswith("; 2 with two options of the same text (first: ID 2, options A = C)")
    assert describe(frame.iloc[[2]]).endswith("(first: ID 3, options A = C, B = D)")  # Ａ is A once folded
    assert "same text" not in describe(load_mcq_csv(write(tmp_path, HEADER + GOOD_ROWS)))

def test_a_folder_or_a_missing_file_is_named_as_such(tmp_path):
    with pytest.raises(DataError, match="is a folder, not a CSV file: give the file inside it"):
        load_mcq_csv(tmp_path)
    with pytest.raises(DataError, match="absent.csv: no such file"):
        load_mcq_csv(tmp_path / "absent.csv")


def test_line_numbers_count_multiline_fields(tmp_path):
    text = HEADER + '1,"第一行\n第二行",a,b,c,d,A,x\n2,q,a,b,c,d,Z,x\n'
    with pytest.raises(DataError, match=r"line 4, column 'answer'"):
        load_mcq_csv(write(tmp_path, text))


def test_answer_column_required_only_when_asked(tmp_path):
    text = "ID,question,option_A,option_B,option_C,option_D\n1,q,a,b,c,d\n"
    assert len(load_mcq_csv(write(tmp_path, text))) == 1
    with pytest.raises(DataError, match=r"missing column\(s\) answer"):
        load_mcq_csv(write(tmp_path, text), require_answer=True)


def test_blank_answers_allowed_in_test_files_but_not_training(tmp_path):
    text = HEADER + "1,q,a,b,c,d,,x\n2,q,a,b,c,d,B,x\n"
    assert "1 without answer" in describe(load_mcq_csv(write(tmp_path, text)))
    with pytest.raises(DataError, match=r"line 2, column 'answer'"):
        load_mcq_csv(write(tmp_path, text), require_answer=True)


def test_missing_id_column_is_refused_unless_row_numbers_are_asked_for(tmp_path, caplog):
    text = "编号,question,option_A,option_B,option_C,option_D\n7,q1,a,b,c,d\n9,q2,a,b,c,d\n"
    with pytest.raises(DataError, match=r"line 1: has no 'ID' column \(found: 编号, .*--number_rows true"):
        load_mcq_csv(write(tmp_path, text))
    frame = load_mcq_csv(write(tmp_path, text), number_rows=True)
    assert list(frame["ID"]) == ["0", "1"]
    assert "no 'ID' column" in caplog.text


def test_subject_column_spelling_is_forgiven(tmp_path):
    text = "ID,question,option_A,option_B,option_C,option_D,Subject\n1,q,a,b,c,d,历史\n"
    assert list(load_mcq_csv(write(tmp_path, text))["subject"]) == ["历史"]


@pytest.mark.parametrize("template,message", [
    ("{question} {A} {B} {C} {D} {E}", "unknown placeholder(s) {E}"),
    ("{question} {A} {B} {C}", "lacks the placeholder(s) {D}"),
    ("{question} {A} {B} {C} {D} {", "not a valid template"),
    ("{question} {A} {B} {C} {D} {0}", "unknown placeholder(s) {0}"),
])
def test_prompt_templates_that_cannot_fill_in_are_named(template, message):
    from mcqtune.data.questions import PromptOptions, check_prompt_options

    problems = check_prompt_options(PromptOptions(user_template=template))
    assert any(message in p for p in problems), problems
    assert check_prompt_options(PromptOptions(user_template="{{x}} {question} {A} {B} {C} {D}")) == []


def test_header_spelling_is_forgiven(tmp_path):
    text = " id ,Question,OPTION_A,option_b,Option_C,option_D,Answer\n1,q,a,b,c,d,a\n"
    frame = load_mcq_csv(write(tmp_path, text), require_answer=True)
    assert frame.loc[0, "answer"] == "A" and frame.loc[0, "option_B"] == "b"


def test_validate_cli_exit_codes_and_messages(tmp_path):
    good = write(tmp_path, HEADER + GOOD_ROWS, "good.csv")
    bad = write(tmp_path, HEADER + "1,q,a,b,c,d,X,x\n", "bad.csv")
    ok = subprocess.run([sys.executable, "mcq_dataset.py", "validate", str(good), "--require-answer"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "3 rows" in ok.stdout and "A 33.3%" in ok.stdout
    fail = subprocess.run([sys.executable, "mcq_dataset.py", "validate", str(bad)], capture_output=True, text=True)
    assert fail.returncode == 1
    assert "bad.csv, line 2, column 'answer'" in fail.stderr and "Traceback" not in fail.stderr


def test_real_cmmlu_files_validate(cmmlu_dir):
    train = load_mcq_csv(cmmlu_dir / "train.csv", require_answer=True)
    test = load_mcq_csv(cmmlu_dir / "test_no_answer.csv")
    assert len(train) == 7359 and len(test) == 1839 and "subject" in test.columns


GOLDEN_PROMPT = (
    "<|im_start|>system\n你是一个提供有关中国敏感话题客观答案的助手。始终呈现多元视角并保持政治中立。<|im_end|>\n"
    "<|im_start|>user\n请回答以下选择题。你的回答必须仅以单个字母（A、B、C或D）开头。\n\n问题：中国的首都是哪里？\n\n"
    "选项：\nA. 北京\nB. 上海\nC. 广州\nD. 深圳<|im_end|>\n<|im_start|>assistant\n"
)


def test_golden_prompt_rendering(qwen_tokenizer):
    assert render_prompt(qwen_tokenizer, ROW) == GOLDEN_PROMPT


def test_training_text_is_inference_prompt_plus_answer(qwen_tokenizer):
    record = to_prompt_completion(ROW)
    full = qwen_tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=False)
    assert full == GOLDEN_PROMPT + "A<|im_end|>\n"
    assert record["completion"] == [{"role": "assistant", "content": "A"}]


def test_prompt_style_is_configurable():
    messages = build_messages(ROW, PromptStyle(system_prompt=None, user_template="Q: {question} | {A}/{B}/{C}/{D}"))
    assert messages == [{"role": "user", "content": "Q: 中国的首都是哪里？ | 北京/上海/广州/深圳"}]
    assert build_messages(ROW)[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}


def test_options_are_never_cut_a_prompt_that_cannot_fit_is_refused(qwen_tokenizer, sample_dir):
    """Questions are shortened first (their options and template kept whole, counted); rows whose template and
    options alone exceed the limit are refused together, naming the limit that fits them all; a limit that fits
    no prompt is refused too."""
    from mcqtune.model.prompts import PromptTooLong, encode_prompts_checked

    frame = load_mcq_csv(sample_dir / "test.csv").head(6).reset_index(drop=True)
    frame.loc[0, "question"] = "很长的题目" * 200
    prompts, shortened = encode_prompts_checked(qwen_tokenizer, frame, max_prompt_tokens=160)
    assert shortened == 1 and max(map(len, prompts)) <= 160
    assert qwen_tokenizer.decode(prompts[0]).count("A. ") == 1  # the options survive the shortening
    frame.loc[2, "option_A"] = "很长的选项" * 100
    frame.loc[4, "option_B"] = "很长的选项" * 150
    with pytest.raises(PromptTooLong) as caught:
        encode_prompts_checked(qwen_tokenizer, frame, max_prompt_tokens=160)
    message = str(caught.value)
    assert "2 question(s) (first ID" in message and "--max_prompt_tokens 160" in message and "\n" not in message
    assert caught.value.limit == 160 and len(caught.value.needed) == 2
    fitting = max(tokens for _, tokens in caught.value.needed) + 16
    assert len(encode_prompts_checked(qwen_tokenizer, frame, max_prompt_tokens=fitting)[0]) == 6
    with pytest.raises(PromptTooLong, match="6 question"):  # a limit that would cut every prompt
        encode_prompts_checked(qwen_tokenizer, frame, max_prompt_tokens=40)
