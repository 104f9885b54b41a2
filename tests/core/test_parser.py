"""core/parser.py (answer_parser.py): realistic Chinese and English replies -> letter (or None, never a guess).

Example lists first (kept as strict as they were when written), then rejections, Traditional Chinese,
metamorphic properties drawn by Hypothesis, and the command line. The Traditional->Simplified table itself is
tested in test_grammar.py.
"""

import re
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcqtune.core import parser as answer_parser
from mcqtune.core.parser import parse_answer, parse_answer_with_rule
from tests.helpers import TO_TRADITIONAL, needs_opencc, run_script


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
    # --- committed replies as chat models write them (added with the "never guesses" rules) ---
    ("答案：C。维生素C缺乏会导致坏血病。", "C"),  # a name with a letter later does not undo the answer
    ("这题考查C语言的指针运算，正确答案是B。", "B"),
    ("B超利用的是超声波，故选D。", "D"),
    ("A股市场的交易时间是上午9:30开始，所以答案是A。", "A"),
    ("正确答案是C。如果你还有其他问题，欢迎继续提问！", "C"),  # a polite question after the answer
    ("C\n\n解析：维生素C又称抗坏血酸。", "C"),
    ("选项C：坏血病", "C"), ("Option D: none of the others", "D"),
    ("我的答案是：B", "B"), ("最终答案：（A）", "A"), ("答案应选D", "D"), ("应选C，因为其余三项均与题意不符。", "C"),
    ("综上所述，本题选B。", "B"), ("因此，正确的一项是D。", "D"), ("正确选项为A。", "A"),
    ("A项错误，B项错误，C项正确，D项错误。", "C"),  # exactly one option declared correct
    ("A、B、D三项说法均有误，C项正确。", "C"),
    ("分析各选项：A说法片面；B与史实不符；D混淆了概念。所以是C。", "C"),
    ("The correct answer is C. Vitamin C deficiency causes scurvy.", "C"),
    ("Answer: B, because the other options contradict the passage.", "B"),
    ("I'll go with option A.", "A"), ("B is the correct answer.", "B"),
    ("Looking at each option, A and B are wrong and D is unrelated. So the answer is C.", "C"),
    ("After eliminating A, B and D, it's C.", "C"),
    ("答案是C，这一点可以确定。", "C"),
    ("（D）", "D"), ("D\n", "D"), ("答：B", "B"),
    ("C选项。", "C"), ("正确的是：B", "B"), ("The correct option is B.", "B"), ("B is the answer.", "B"),
    ("选项B正确。", "B"), ("正确答案为D项。", "D"), ("The right choice is (A).", "A"), ("b) Paris", "B"),
    ("C) Vitamin C", "C"),
    # the letter in quotation marks, and a distractor named as such
    ('答案是"C"', "C"), ("答案是“C”。", "C"), ("答案是「C」", "C"), ("答案是『B』", "B"), ("答案是'D'", "D"),
    ('The answer is "B".', "B"), ("故选“A”。", "A"), ("答案是B，C是干扰项。", "B"), ("选C，A、B、D都是干扰项。", "C"),
    ("C++ is fast here, so the answer is B.", "B"),
    # a quoted letter is read as a bracketed one by every rule: rejected, listed, corrected
    ("故选“A”，不选“B”。", "A"), ('The answer is "A", which is wrong; it is C.', "C"), ("答案是“A”。等等，是“C”", "C"),
    ("“A”", "A"),
]

UNPARSEABLE = [
    "", "   ", None, "我不知道。", "这道题没有正确答案。", "A和C都有道理", "The answer is a tricky one.",
    "<think>A还是B？", "AB", "Both A and B are plausible.", "\\boxed{A} or \\boxed{B}",
    # --- a letter inside a word or a name is no answer ---
    "这题考查维生素C的作用，我无法确定。", "This question is about Vitamin C.", "C语言是一种编程语言。",
    "A股市场今天上涨了。", "B超检查没有辐射。", "DNA的双螺旋结构由沃森和克里克提出。", "乙型肝炎即Hepatitis B。",
    "Type A personalities are competitive.", "The answer is C++.", "答案是“C语言”",
    # --- quoted letters rejected, listed or refuted, as bracketed ones are ---
    "我不选“A”。", "答案是“A”或“B”", 'The answer is "A" or "B".', "答案应该是「B」、「D」中的一个",
    "有人说答案是“A”，这是错的", "答案是“A”以外的选项", "答案：“A”项错误",
    # --- a question back ---
    "答案是A还是B？", "是C吗？", "The answer is C?", "你是想问C选项的含义吗？", "Is it B?",
    # --- several letters without a commitment ---
    "A、B、C、D都有道理。", "A和B都对。", "The answer is A or B.", "答案：A、C", "B和C都正确。", "Either A or D.",
    "A or B, depending on the context.",
    # --- hedges ---
    "答案可能是C。", "可能是A，也可能是B。", "我猜是D吧。", "应该是B吧。", "Maybe the answer is C.",
    "I'm not sure, but it could be A.", "It might be D.", "I think it's probably B.", "这题我不确定，也许选A。",
    "题目信息不足，无法判断。", "I don't know.",
    # --- letters only mentioned ---
    "A项错误。", "Option A is wrong.", "我们来分析一下选项B的说法。", "C项错误。", "Is B the answer?", "A is wrong and so is B.",
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
    ("我认为C项正确。", "is_correct"), ("根据题意，可以确定是B", "conclusion"), ("", "unparsed:empty"),
    ("A和C都有道理", "unparsed:several_letters"), ("我不知道", "unparsed:hedge"), ("今天天气很好", "unparsed:no_letter"),
    ("答案可能是C。", "unparsed:hedge"), ("是C吗？", "unparsed:no_commitment"), ("The answer is C?", "unparsed:question"),
    ("A、B、C、D都有道理。", "unparsed:several_letters"), ("This question is about Vitamin C.", "unparsed:no_letter"),
    ("A项错误。", "unparsed:no_commitment"), ("C项正确。", "is_correct"), ("所以是C。", "conclusion"),
])
def test_reports_which_rule_decided(text, rule):
    assert parse_answer_with_rule(text).rule == rule


def test_option_text_is_used_only_when_options_are_given():
    options = ["北京", "上海", "广州", "深圳"]
    assert parse_answer("我觉得是上海。") is None
    parsed = parse_answer_with_rule("我觉得是上海。", options)
    assert (parsed.letter, parsed.rule) == ("B", "option_text")
    assert parse_answer("北京和上海都可以", options) is None  # two options named: no guess
    assert parse_answer("可能是上海", options) is None  # a hedge
    assert parse_answer_with_rule("上海", options) == parse_answer_with_rule("上海。", options)


def test_imports_only_the_standard_library():
    code = "import sys, answer_parser; bad = {'torch', 'transformers', 'pandas', 'numpy'} & set(sys.modules); print(sorted(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_prints_letter_and_rule():
    out = subprocess.run([sys.executable, "answer_parser.py", "正确答案是（Ｃ）"], capture_output=True, text=True,
                         check=True).stdout
    assert out.split()[0] == "C" and "answer_phrase" in out
    out = subprocess.run([sys.executable, "answer_parser.py", "这题考查维生素C的作用，我无法确定。"], capture_output=True,
                         text=True, check=True).stdout
    assert out.split()[0] == "-" and "hedge" in out


# --- rejected letters are never the answer ---------------------------------------------------------------

COMMITTED_AND_REJECTED = [
    ("答案是C，不是A", "C"), ("不是A，答案是C", "C"), ("排除A和B，选C", "C"), ("The answer is C, not A.", "C"),
    ("It is not A. The answer is D.", "D"), ("答案不是B，而是D。", "D"), ("不应选A，应选B。", "B"),
    ("所以是C，不是A。", "C"), ("所以是C，而不是A。", "C"), ("应该选C，而不是A", "C"), ("答案是C而不是A", "C"),
    ("It's C rather than A.", "C"), ("It's C, not A.", "C"), ("So it's B (not D).", "B"), ("B, not D", "B"),
    ("答案为C。A错误。", "C"), ("A和B都不对，选C", "C"), ("A、B、D三项说法均有误，故选C。", "C"),
    ("我认为答案不是A，是B", "B"), ("The answer isn't A, it's B.", "B"), ("It's neither A nor B, so C.", "C"),
    ("Not A or B. The answer is C.", "C"), ("It can't be A, so it must be B.", "B"),
    ("I wouldn't pick A; I'd pick C.", "C"), ("A is wrong. The answer is B.", "B"),
    ("除了A以外，其余选项都与题意不符，故选A。", "A"),  # an exclusion before a later commitment: the commitment stands
    ("答案：A。解析：A项说法错误，B项正确……本题要求选出错误的一项。", "A"),  # a judgement after the answer
    ("答案是A。不对，答案不是A，应该是C。", "C"),  # a later denial takes the first answer back
    ("首先排除A和D，B与题意不符，所以正确答案是C。", "C"), ("不可能是A，答案是C", "C"),
    ("不是\\boxed{A}，而是\\boxed{C}", "C"), ("答案无非是A", "A"),
    ("Not A, but C.", "C"), ("I don't think it's A. I choose B.", "B"), ("neither A nor B; the answer is C", "C"),
]

ONLY_REJECTED = [  # every letter is denied or excluded: None, reason "rejected"
    "答案不是A", "不选B", "答案并非C。", "我不会选D。", "不应选A", "不能选B", "不可能是C", "排除A和B。", "除了A", "没有选C",
    "别选D", "非A", "答案不为B", "The answer is not A.", "It isn't B.", "It's not C.", "Never D.", "Definitely not A.",
    "It can't be B.", "It cannot be C.", "I don't choose D.", "I won't choose A.", "except B", "other than C",
    "instead of D", "rather than A", "excluding B", "neither A nor B", "不是A，也不是B。", "答案不是\\boxed{A}",
    "答案：不是A", "Answer: not B",
]

JUDGED_WRONG = [  # letters judged wrong are never the answer
    "A错误", "A is wrong", "A不正确", "A不对。", "A是错的。", "B项说法错误。", "C is incorrect.", "A and B are wrong.",
    "D is not correct.", "C. 错误", "A、B均不正确", "B can be ruled out.", "A，错。", "A ✗", "A, wrong.", "B: incorrect",
    "A、B、D三项均错误，C也不对。", "答案：A，错误。",
]

# The one letter left once the reply has ruled the other three out, or named as what remains; never a rejected one.
ELIMINATED = [
    ("A、B、D均不正确", "C"), ("A、B、D三项均错误。", "C"), ("排除A、B、D。", "C"), ("A错，B错，C错。", "D"),
    ("A is wrong, B is wrong and D is incorrect.", "C"), ("A和B都错，C也错，剩下D", "D"), ("只有C是对的", "C"),
    ("排除A和B后，只剩下C", "C"), ("A、B、C都可以排除，剩下的是D", "D"), ("唯有B正确", "B"),
    ("A错误，B错误，D错误。C呢？", None), ("A错，B错，D错，所以C也不一定对", None), ("剩下C和D", None),
    ("A错误，B错误。", None),
]


# A letter named only to set it aside (after it: A以外, A之外, A的反面) or to report a claim that is then refuted
# ("有人说答案是A，这是错的", "…, which is wrong") is never the answer; what the reply does commit to still is.
NAMED_TO_BE_SET_ASIDE = [
    ("答案是A以外的选项", None), ("答案应为A以外的选项", None), ("答案是A的反面", None), ("答案在A之外", None),
    ("有人说答案是A，这是错的", None), ("有人认为选B，但这是错误的。", None), ("我认为是（C），但这不对", None),
    ("Someone says A, which is wrong.", None), ("Some would pick B, but that is incorrect.", None),
    ("有人说选B，这是不对的，应该选D", "D"), ("Someone might say A, which is wrong. The answer is C.", "C"),
    ("答案是A，这是正确的", "A"), ("除A之外都错，答案是A", "A"),
]


@pytest.mark.parametrize("text,expected", NAMED_TO_BE_SET_ASIDE)
def test_a_letter_named_only_to_be_set_aside_is_never_returned(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize("text,expected", COMMITTED_AND_REJECTED)
def test_commitment_wins_over_rejected_letters(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize("text", ONLY_REJECTED)
def test_only_rejected_letters_give_none(text):
    assert parse_answer_with_rule(text) == answer_parser.ParsedAnswer(None, "unparsed:rejected")


@pytest.mark.parametrize("text", JUDGED_WRONG)
def test_letters_judged_wrong_are_not_answers(text):
    parsed = parse_answer_with_rule(text)
    assert parsed.letter is None and parsed.rule.startswith("unparsed:")


@pytest.mark.parametrize("text,expected", ELIMINATED)
def test_the_letter_left_after_eliminating_the_others(text, expected):
    parsed = parse_answer_with_rule(text)
    assert parsed.letter == expected, parsed


@pytest.mark.parametrize("text", ["非A即B", "不是A就是B"])
def test_either_or_idioms_are_several_letters(text):
    assert parse_answer_with_rule(text).rule == "unparsed:several_letters"


def test_negated_option_text_is_not_the_answer():
    options = ["北京", "上海", "广州", "深圳"]
    assert parse_answer_with_rule("我觉得不是上海。", options) == answer_parser.ParsedAnswer(None, "unparsed:rejected")
    assert parse_answer("是上海，不是北京。", options) == "B"
    assert parse_answer("不是北京，是上海", options) == "B"


# --- Traditional Chinese and full-width forms ------------------------------------------------------------

TRADITIONAL_CASES = [
    ("選B。", "B"), ("答案為B", "B"), ("答案爲B", "B"), ("【答案】A", "A"), ("【答案】：B", "B"), ("正確答案是C", "C"),
    ("應選D", "D"), ("正確選項為：Ｃ", "C"), ("我選擇B", "B"), ("這題選A", "A"), ("答案應該是B", "B"),
    ("綜上所述，本題選B。", "B"), ("因此，正確的一項是D。", "D"), ("A項錯誤，B項錯誤，C項正確，D項錯誤。", "C"),
    ("答案是C，不是A", "C"), ("並非A，而是C", "C"), ("答案為C，並非A", "C"), ("排除A與B，選C", "C"),
    ("不選A，選C", "C"), ("這題考查C語言的指針運算，正確答案是B。", "B"), ("答案：C。維生素C缺乏會導致壞血病。", "C"),
]
TRADITIONAL_UNPARSEABLE = [  # (Traditional, Simplified): the same None and the same reason
    ("可能是A吧", "可能是A吧"), ("無法確定", "无法确定"), ("不確定", "不确定"), ("答案可能是C。", "答案可能是C。"),
    ("答案是A還是B？", "答案是A还是B？"), ("是C嗎？", "是C吗？"), ("答案不是A", "答案不是A"), ("並非A", "并非A"),
    ("不選B", "不选B"), ("排除C", "排除C"), ("除了D", "除了D"), ("沒有選A", "没有选A"), ("別選B", "别选B"),
    ("不應選C", "不应选C"), ("不會選D", "不会选D"), ("A錯誤", "A错误"), ("A不正確", "A不正确"), ("維生素C", "维生素C"),
    ("這題考查維生素C的作用，我無法確定。", "这题考查维生素C的作用，我无法确定。"), ("C語言是一種程式語言。", "C语言是一种编程语言。"),
    ("A股市場今天上漲了。", "A股市场今天上涨了。"), ("B超檢查沒有輻射。", "B超检查没有辐射。"), ("A和B都對。", "A和B都对。"),
    ("題目資訊不足，無法判斷。", "题目信息不足，无法判断。"), ("我猜是D吧。", "我猜是D吧。"), ("A、B、C、D都有道理。", "A、B、C、D都有道理。"),
    ("你是想問C選項的含義嗎？", "你是想问C选项的含义吗？"), ("這題我不確定，也許選A。", "这题我不确定，也许选A。"),
]


@pytest.mark.parametrize("text,expected", TRADITIONAL_CASES)
def test_reads_traditional_like_simplified(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize("traditional,simplified", TRADITIONAL_UNPARSEABLE)
def test_traditional_unparseable_stays_unparsed_for_the_same_reason(traditional, simplified):
    parsed = parse_answer_with_rule(traditional)
    assert parsed.letter is None and parsed.rule.startswith("unparsed:")
    assert parsed == parse_answer_with_rule(simplified)


def test_simplified_bracketed_answer_label():
    assert parse_answer_with_rule("【答案】A") == answer_parser.ParsedAnswer("A", "answer_phrase")


@needs_opencc
@pytest.mark.parametrize("text,expected", CASES + COMMITTED_AND_REJECTED)
def test_traditional_form_of_every_case_gives_the_same_letter(text, expected):
    for convert in TO_TRADITIONAL:
        assert parse_answer(convert.convert(text)) == expected


@needs_opencc
@pytest.mark.parametrize("text", [t for t in UNPARSEABLE if t] + ONLY_REJECTED + JUDGED_WRONG)
def test_traditional_form_of_every_unparseable_case_stays_unparsed(text):
    for convert in TO_TRADITIONAL:
        assert parse_answer_with_rule(convert.convert(text)) == parse_answer_with_rule(text)


# --- metamorphic properties ------------------------------------------------------------------------------
# A template commits to the letter put for {L}; its paired negation rejects it; its hand-written Traditional
# form (used even without opencc) commits the same way. "prefix"/"suffix": text may stand before/after it
# (a leading letter must start the reply, a conclusion must end it).


def template(committed, negated, traditional, prefix=True, suffix=True):
    return {"committed": committed, "negated": negated, "traditional": traditional, "prefix": prefix, "suffix": suffix}


TEMPLATES = [
    template("答案是{L}", "答案不是{L}", "答案是{L}"),
    template("答案为{L}。", "答案并非{L}。", "答案為{L}。"),
    template("故选{L}", "故不选{L}", "故選{L}"),
    template("正确选项为{L}。", "正确选项不是{L}。", "正確選項為{L}。"),
    template("经过分析，应选{L}", "经过分析，不应选{L}", "經過分析，應選{L}"),
    template("我选择{L}", "我不会选{L}", "我選擇{L}"),
    template("正确答案是（{L}）。", "正确答案不可能是（{L}）。", "正確答案是（{L}）。"),
    template("【答案】{L}", "【答案】不是{L}", "【答案】{L}"),
    template("综上所述，本题选{L}。", "综上所述，本题别选{L}。", "綜上所述，本題選{L}。"),
    template("答案应该是{L}", "答案应该不是{L}", "答案應該是{L}"),
    template("{L}项正确。", "{L}项错误。", "{L}項正確。"),
    template("所以是{L}。", "所以并非{L}。", "所以是{L}。", suffix=False),
    template("因此，我们应该选{L}", "因此，我们应该排除{L}", "因此，我們應該選{L}", suffix=False),
    template("\\boxed{{L}}", "答案不是\\boxed{{L}}", "\\boxed{{L}}"),
    template("The answer is {L}.", "The answer is not {L}.", "The answer is {L}."),
    template("The correct answer is ({L}).", "The correct answer isn't ({L}).", "The correct answer is ({L})."),
    template("I choose {L}", "I would never choose {L}", "I choose {L}"),
    template("I'll go with option {L}.", "I won't go with option {L}.", "I'll go with option {L}."),
    template("Answer: {L}", "Answer: not {L}", "Answer: {L}"),
    template("{L} is correct.", "{L} is wrong.", "{L} is correct."),
    template("So it's {L}.", "So it's not {L}.", "So it's {L}.", suffix=False),
    template("{L}", "不是{L}", "{L}", prefix=False),
    template("{L}. 北京是中国的首都。", "排除{L}。北京是中国的首都。", "{L}. 北京是中國的首都。", prefix=False),
    template("{L}) Paris", "Not {L}) Paris", "{L}) Paris", prefix=False),
]
NEUTRAL_SENTENCES = [
    "让我们逐项分析。", "这道题考查的是历史知识。", "根据题干信息，", "经过仔细思考，", "首先，我们需要理解题意。\n",
    "这道题问的是什么？", "Let me think step by step. ", "Looking at the options carefully, ", "Good question!\n",
    "題目考查的是地理常識。", "解析：本题考查细胞结构。\n",
]
NEUTRAL_AFTER = [
    "如果你还有其他问题，欢迎继续提问！", "这是因为题干中给出了关键信息。", "Hope this helps.", "解析：略。",
    "其余选项与题意无关。", "Let me know if you have other questions!",
]
SAFE_HAN = "天地人山水日月星风云花草树木鸟鱼虫春夏秋冬东西南北"  # no grammar, no hedge
JOINERS = ["", " ", "\n", "\n\n"]

letters = st.sampled_from("ABCD")
prefixes = st.one_of(
    st.just(""),
    st.lists(st.sampled_from(NEUTRAL_SENTENCES), min_size=1, max_size=3).map("".join),
    st.text(alphabet=SAFE_HAN, min_size=1, max_size=12).map(lambda words: words + "。"),
)
suffixes = st.one_of(
    st.just(""),
    st.lists(st.sampled_from(NEUTRAL_AFTER), min_size=1, max_size=2).map(lambda parts: "\n" + "".join(parts)),
    st.text(alphabet=SAFE_HAN, min_size=1, max_size=12).map(lambda words: "。" + words + "。"),
)
letter_styles = st.sampled_from(["{}", "**{}**", "full-width"])


def styled(letter, style):
    return chr(ord(letter) + 0xFEE0) if style == "full-width" else style.format(letter)


def fill(text, letter, placeholder="{L}"):
    return text.replace(placeholder, letter)


def surround(body, tmpl, prefix, joiner, suffix):
    return (prefix + joiner if tmpl["prefix"] else "") + body + (suffix if tmpl["suffix"] else "")


def traditional_forms(text):
    return [convert.convert(text) for convert in TO_TRADITIONAL]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TEMPLATES), letters, letter_styles, prefixes, st.sampled_from(JOINERS), suffixes)
def test_committed_reply_gives_its_letter(tmpl, letter, style, prefix, joiner, suffix):
    reply = surround(fill(tmpl["committed"], styled(letter, style)), tmpl, prefix, joiner, suffix)
    assert parse_answer(reply) == letter, reply


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TEMPLATES), letters, letter_styles, prefixes, st.sampled_from(JOINERS), suffixes)
def test_negated_reply_never_gives_the_letter(tmpl, letter, style, prefix, joiner, suffix):
    reply = surround(fill(tmpl["negated"], styled(letter, style)), tmpl, prefix, joiner, suffix)
    parsed = parse_answer_with_rule(reply)
    assert parsed.letter is None and parsed.rule.startswith("unparsed:"), (reply, parsed)
    for traditional in traditional_forms(reply):
        assert parse_answer(traditional) is None, traditional


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TEMPLATES), letters, prefixes, st.sampled_from(JOINERS), suffixes)
def test_traditional_reply_gives_the_same_letter(tmpl, letter, prefix, joiner, suffix):
    simplified = surround(fill(tmpl["committed"], letter), tmpl, prefix, joiner, suffix)
    hand_written = surround(fill(tmpl["traditional"], letter), tmpl, prefix, joiner, suffix)
    assert parse_answer(hand_written) == parse_answer(simplified) == letter, hand_written
    for traditional in traditional_forms(simplified):
        assert parse_answer(traditional) == letter, traditional


REJECT_AFTER = [
    "，不是{M}。", "，而不是{M}。", "，并非{M}。", "，不选{M}。", "。排除{M}。", "。{M}错误。", "，{M}项不正确。", ", not {M}.",
    " rather than {M}.", ". It is not {M}.", ". {M} is wrong.", " (not {M})", "，而非{M}", "。除了{M}。",
]
REJECT_BEFORE = [
    "不是{M}。", "排除{M}，", "{M}错误，", "{M}不对。", "首先排除{M}。", "It is not {M}. ", "{M} is wrong. ", "Not {M}. ",
    "并非{M}，", "不应选{M}，", "I wouldn't choose {M}. ", "{M}项说法有误；",
]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(TEMPLATES), st.permutations("ABCD"), st.booleans(), st.data())
def test_commitment_with_a_rejection_gives_the_committed_letter(tmpl, order, rejection_first, data):
    letter, other = order[0], order[1]
    if rejection_first and tmpl["prefix"]:
        reply = fill(data.draw(st.sampled_from(REJECT_BEFORE)), other, "{M}") + fill(tmpl["committed"], letter)
    else:
        committed = fill(tmpl["committed"], letter).rstrip("。.")
        reply = committed + fill(data.draw(st.sampled_from(REJECT_AFTER)), other, "{M}")
    assert parse_answer(reply) == letter, reply
    for traditional in traditional_forms(reply):
        assert parse_answer(traditional) == letter, traditional


NAMES_WITH_LETTERS = ["维生素C", "維生素C", "C语言", "C語言", "A股", "B超", "DNA", "Vitamin C", "Type A", "Hepatitis B",
                      "Plan B", "ABCD", "CD", "A4纸", "BBC", "B族维生素"]
GRAMMAR_WITHOUT_LETTERS = ["答案是", "故选", "正确答案为", "The answer is ", "I choose ", "选", "是", "，", "。", " ", "\n",
                           "所以", "应该是", "So it's ", "项正确", "正确", " is correct", "：", "（", "）", "答案：", "選"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(NAMES_WITH_LETTERS + GRAMMAR_WITHOUT_LETTERS + NEUTRAL_SENTENCES), max_size=8))
def test_letters_inside_names_never_give_an_answer(parts):
    reply = "".join(parts)
    assert parse_answer(reply) is None, reply


def stands_alone_somewhere(text, letter):
    """The letter (any case, any width) occurs at least once with no Latin letter or digit beside it."""
    plain = answer_parser.clean_reply(text)
    return any(re.search(rf"(?<![A-Za-z0-9]){form}(?![A-Za-z0-9])", plain) for form in (letter, letter.lower()))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40),
                 st.lists(st.sampled_from(NAMES_WITH_LETTERS + GRAMMAR_WITHOUT_LETTERS + list("ABCDabcd")
                                          + ["不是", "not ", "排除", "吗？", "可能"]), max_size=10).map("".join)))
def test_an_answer_letter_always_stands_alone_in_the_reply(reply):
    letter = parse_answer(reply)
    assert letter is None or stands_alone_somewhere(reply, letter), (reply, letter)


@pytest.mark.parametrize("reply", ["答案是" + "\n" * 3000 + "。", "not" + " " * 3000 + "A。" + "A、" * 2000,
                                   "A、" * 3000 + "错误", "不是A和" * 2000 + "B", "Vitamin" + " " * 3000 + "C"])
def test_long_degenerate_replies_parse_quickly(reply):
    # runs of spaces or letters once made the regular expressions backtrack for minutes
    started = time.perf_counter()
    parse_answer_with_rule(reply)
    assert time.perf_counter() - started < 5


# --- command line ----------------------------------------------------------------------------------------


def test_cli_help_exits_zero():
    result = run_script("answer_parser.py", "--help")
    assert result.returncode == 0 and "usage:" in result.stdout and "TEXT" in result.stdout


def test_cli_without_a_reply_prints_usage_and_exits_two():
    result = run_script("answer_parser.py")
    assert result.returncode == 2 and result.stdout == "" and "usage:" in result.stderr


def test_cli_reads_several_replies_and_options():
    result = run_script("answer_parser.py", "答案不是A", "答案为B")
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["-  (unparsed: rejected)", "B  (rule: answer_phrase)"]
    result = run_script("answer_parser.py", "--options", "北京", "上海", "广州", "深圳", "我觉得是上海")
    assert result.stdout.splitlines() == ["B  (rule: option_text)"]


@pytest.mark.parametrize("reply,expected", [
    ("答案是A，错了，是B", "B"), ("正确答案为A。不对，应该是B。", "B"), ("我先选A，后来改成B", "B"),
    ("答案：C。不，等等，是D", "D"), ("The answer is A... just kidding, it's C", "C"),
    ("答案是A，錯了，是B", "B"),  # Traditional
    ("Correct answer: A. Wait, no, D.", None), ("很多人认为答案是A，其实不然", None),
    ("答案未必是A", None), ("答案是A，也可能是B", None), ("The correct answer is A, or maybe B", None),
    ("答案恐怕是A", None), ("A项不对，B项不对，故选C", "C"), ("No, the answer is B.", "B"),
])
def test_a_corrected_reply_is_read_after_its_last_correction_and_open_alternatives_give_none(reply, expected):
    assert parse_answer(reply) == expected
