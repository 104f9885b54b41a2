"""answer_parser: realistic Chinese and English replies -> letter (or None, never a guess)."""

import subprocess
import sys

import pytest

from answer_parser import parse_answer, parse_answer_with_rule

CASES = [
    # bare and leading letters
    ("A", "A"), ("B", "B"), (" C\n", "C"), ("D。", "D"), ("A.", "A"), ("B、", "B"), ("(C)", "C"), ("[D]", "D"),
    ("A. 北京", "A"), ("B：长江是中国最长的河流。", "B"), ("C\n解析：根据题意……", "C"), ("d", "D"), ("b.", "B"),
    # full-width letters and brackets (NFKC)
    ("Ｃ", "C"), ("（Ｂ）", "B"), ("答案：Ａ", "A"),
    # explicit Chinese answer phrases
    ("答案是C", "C"), ("答案为：B", "B"), ("正确答案是 D。", "D"), ("答案：选A", "A"), ("故选C。", "C"),
    ("所以选 B", "B"), ("我选择D，因为其余选项都不符合题意。", "D"), ("正确的选项是A", "A"),
    ("经过分析，正确答案应该是（Ｃ）。", "C"), ("本题答案为b", "B"),
    # a phrase outranks letters merely mentioned; the last conclusion wins
    ("A选项错误，B选项错误，D选项也不对，故选C。", "C"), ("选项A：错误；选项B：错误；所以答案是D", "D"),
    ("A. 北京\nB. 上海\n答案是B", "B"), ("首先排除A，再看B和C，最终答案：C", "C"),
    # negation
    ("不是A，而是C", "C"), ("答案不是B，而是D。", "D"), ("The answer is not A but C.", "C"),
    # English
    ("The answer is B.", "B"), ("The correct answer is (D)", "D"), ("Answer: C", "C"), ("I would choose A.", "A"),
    ("the answer is c", "C"), ("Option B is correct.", "B"), ("Final answer: D", "D"),
    # Markdown and LaTeX
    ("**B**", "B"), ("**答案：C**", "C"), ("### 答案\n\n**D**. 正确", "D"), ("\\boxed{A}", "A"), ("$\\boxed{C}$", "C"),
    ("\\boxed{\\text{B}}", "B"),
    # chat special tokens and reasoning blocks
    ("C<|im_end|>", "C"), ("<|im_start|>assistant\nB<|im_end|>", "B"),
    ("<think>可能是A？不对，应该看选项B。</think>答案是D", "D"), ("先想一想。</think>\n\nB", "B"),
    # "is correct" and single mentions
    ("我认为C项正确。", "C"), ("显然，D是正确的。", "D"), ("根据题意，可以确定是B", "B"),
    ("A不对，B错误，应该是C", "C"),
]

UNPARSEABLE = [
    "", "   ", None, "我不知道。", "这道题没有正确答案。", "A和C都有道理", "The answer is a tricky one.",
    "<think>A还是B？", "AB", "Both A and B are plausible.", "\\boxed{A} or \\boxed{B}",
]


@pytest.mark.parametrize("text,expected", CASES)
def test_parses_realistic_replies(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize("text", UNPARSEABLE)
def test_returns_none_instead_of_guessing(text):
    parsed = parse_answer_with_rule(text)
    assert parsed.letter is None
    assert parsed.rule.startswith("unparsed:")


@pytest.mark.parametrize("text,rule", [
    ("\\boxed{B}", "boxed"), ("不是A，而是C", "negation"), ("答案是C", "answer_phrase"), ("B. 上海", "leading_letter"),
    ("我认为C项正确。", "is_correct"), ("根据题意，可以确定是B", "single_mention"), ("", "unparsed:empty"),
    ("A和C都有道理", "unparsed:several_letters"), ("我不知道", "unparsed:no_letter"),
])
def test_reports_which_rule_decided(text, rule):
    assert parse_answer_with_rule(text).rule == rule


def test_option_text_is_used_only_when_options_are_given():
    options = ["北京", "上海", "广州", "深圳"]
    assert parse_answer("我觉得是上海。") is None
    parsed = parse_answer_with_rule("我觉得是上海。", options)
    assert (parsed.letter, parsed.rule) == ("B", "option_text")
    assert parse_answer("北京和上海都可以", options) is None  # two options named: no guess


def test_imports_only_the_standard_library():
    code = "import sys, answer_parser; bad = {'torch', 'transformers', 'pandas', 'numpy'} & set(sys.modules); print(sorted(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_prints_letter_and_rule():
    out = subprocess.run([sys.executable, "answer_parser.py", "正确答案是（Ｃ）"], capture_output=True, text=True,
                         check=True).stdout
    assert out.split()[0] == "C" and "answer_phrase" in out
