"""Turn a model's free-text reply into one answer letter (A-D), or None when the reply does not commit to one.

    python answer_parser.py "经过分析，正确答案是（Ｃ）。"      # prints: C  (rule: answer_phrase)
    python answer_parser.py "这题考查维生素C的作用，我无法确定。"  # prints: -  (unparsed: hedge)
    python answer_parser.py --options 北京 上海 广州 深圳 "我觉得是上海"   # prints: B  (rule: option_text)

Standard library only, so it can be imported anywhere (notebooks, evaluation servers) without the model
stack. The reply is first normalised: chat special tokens and reasoning blocks dropped, full-width forms
folded (NFKC), and Traditional Chinese read as Simplified (``選B``, ``答案為B``, ``正確選項為：Ｃ`` and
``無法確定`` read like ``选B``, ``答案为B``, ``正确选项为：C`` and ``无法确定``; a table covers every character
of the grammar below). A letter is returned only when the reply *commits* to it, through one of these rules
(the first that decides wins):

1. ``boxed``          ``\\boxed{C}`` (maths-style replies); two different boxed letters -> None
2. ``negation``       ``不是A，而是C`` / ``not A but C`` -> the corrected letter
3. ``answer_phrase``  ``答案是/为/：C``, ``【答案】C``, ``故选C``, ``正确选项是C``, ``the answer is C``, ``I choose C``
                      ... (the last such phrase wins: models state their conclusion at the end)
4. ``leading_letter`` ``C``, ``C.``, ``(C)``, ``**C**``, ``选项C：北京``, ``Option C:`` at the very start
5. ``is_correct``     ``C项正确`` / ``C is correct`` (exactly one letter declared correct)
6. ``conclusion``     the reply's last clause ends on one letter: ``……应该是C``, ``So it's B.``, ``所以是C，不是A。``
7. ``option_text``    (only when the options are given) the reply is, or concludes with, one option's text

A rejected letter is never a commitment, in any rule. A letter is rejected when

* a denial or an exclusion governs it from just before: ``不是A``, ``并非A``, ``不选A``, ``不应/不能/不会选A``,
  ``不可能是A``, ``而不是A``, ``非A``, ``排除A和B``, ``除了A``, ``没有选A``, ``别选A``, ``not A``, ``isn't A``,
  ``never A``, ``except A``, ``other than A``, ``rather than A``, ``instead of A``, ``don't choose A``,
  ``can't be A``, ``neither A nor B`` (every letter of a list after the denial is rejected with it);
* the reply judges it wrong: ``A错误``, ``A、B项均不正确``, ``A不对``, ``A is wrong``, ``A and B are incorrect``;
* or the reply denies it again later (``答案是A……不对，答案不是A，应该是C`` takes A back). An exclusion or a
  judgement later does not take a commitment back: ``答案：A。解析：A项说法错误……`` answers A (a question
  asking for the wrong statement).

So a reply that commits to one letter and rejects others gives the committed one (``答案是C，不是A``,
``排除A和B，选C``, ``The answer is C, not A.``), and one whose only letters are denied or excluded gives None.

What never counts as a commitment, and gives ``None`` with the reason (``rule`` = ``unparsed:<reason>``):

* a letter inside a word or name: ``维生素C``, ``Vitamin C``, ``C语言``, ``A股``, ``B超``, ``DNA`` (also in
  Traditional script: ``維生素C``, ``C語言``);
* a hedge (``可能是A``, ``我无法确定``, ``maybe B``, ``I'm not sure``), or another answer left open anywhere
  (``答案是A，也可能是B``, ``A, or maybe B``, ``未必是A``) -> ``hedge``;
* a reply that corrects itself is read from its last correction on (``答案是A，错了，是B`` -> B, ``A... just
  kidding, it's C`` -> C); when nothing after it commits (``……其实不然``, ``A. Wait, no, D.``) -> ``retracted``;
* a question back (``答案是A还是B？``, ``is it C?``) -> ``question``;
* several letters with equal standing (``A、B、C、D都有道理``, ``A or B``, ``非A即B``) -> ``several_letters``;
* only denied or excluded letters (``答案不是A``, ``排除A``, ``It is not B.``), or the only option text named is
  denied -> ``rejected``;
* letters only mentioned or judged, never chosen (``A项错误。``) -> ``no_commitment``; no letter at all ->
  ``no_letter``.

The caller decides what to do with ``None``: infer.py answers such rows by letter scoring and lists them,
with the reply and the reason, in its report.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import unicodedata
from dataclasses import dataclass
from typing import Sequence

LETTERS = ("A", "B", "C", "D")

# --- Traditional Chinese ----------------------------------------------------------------------------------
# Traditional -> Simplified for the characters of the grammar below (patterns, hedge and uncertainty lists)
# that have a Traditional form, so one set of patterns reads both scripts. A full converter is not needed
# (only the parser's own words must match) and would break the standard-library-only rule. Characters
# outside the grammar are left as they are: ``維生素C`` and ``C語言`` stay names because 素 and 語 are not grammar.
# Both columns are checked against OpenCC's s2t / s2tw / s2hk in tests/test_answer_parser.py.
_TRADITIONAL = "與兩個爲為於會內準則別併敘敍嗎學實對並應開當擇斷無顯沒點確約絕觀覺計認許該誤說説這還選錯難項"
_SIMPLIFIED = "与两个为为于会内准则别并叙叙吗学实对并应开当择断无显没点确约绝观觉计认许该误说说这还选错难项"
_TO_SIMPLIFIED = str.maketrans(_TRADITIONAL, _SIMPLIFIED)

# --- what may stand next to an answer letter -------------------------------------------------------------
# A letter is a candidate only when it is not part of a word: no Latin letter or digit beside it, and a
# Chinese character beside it only when that character is grammar around a choice (选C, 是C, C项, C正确)
# or a rejection (非A, 除A外, 是C而不是A), never a word it belongs to (维生素C, C语言, A股, B超).
_CJK_BEFORE_OK = "选是为项择案即以故应和或与及跟非除掉了"
_CJK_AFTER_OK = "项选是正对为错不和或与及还、吧吗呢呀啊的都也均两三四等而并外以"
_WORD_CHAR = re.compile(r"[A-Za-z0-9\u4e00-\u9fff]")
# An English word that names a thing with a letter: "Vitamin C", "Type A", "Hepatitis B", "Plan B".
_NAMING_WORD_LIST = (
    "vitamin", "type", "hepatitis", "plan", "grade", "class", "category", "group", "section", "part", "level", "blood",
    "model", "series", "team", "route", "block", "zone", "room", "building", "gate", "row", "unit", "phase", "stage",
    "list", "appendix", "chapter", "figure", "table")
_NAMING_WORDS = re.compile(r"(?i:" + "|".join(_NAMING_WORD_LIST) + r")\s*$")
_LONGEST_NAMING_WORD = max(map(len, _NAMING_WORD_LIST))
_SPACE_THEN_WORD = re.compile(r"\s+[A-Za-z]")

# --- what rejects a letter --------------------------------------------------------------------------------
# A list of letters joins them under one word: "排除A和B", "not A or B", "neither A nor B".
_SEPARATOR = r"(?:[、/&+]|和|或者?|与|及|跟|以及|(?i:and|or|nor)(?![A-Za-z]))"
# A denial says the letter is not the answer: 不是A, 不应选A, 不可能是A, 并非A, 排除A, not A, isn't A, can't be A.
# 是不是A asks, 无非是A affirms, 莫非是A wonders: none of them denies.
_DENIAL = (
    r"(?<!是)不(?:应该|应当|应|能|会|可能|要|该|必|用|宜|一定|可以|想|打算)?(?:是|选择?|为|等于)|"
    r"不(?:认为|觉得|相信)|并非|而非|绝非|(?<![无莫除是])非|排除(?:了|掉)?|淘汰|去掉|剔除|没有?选择?|未选择?|别选择?|"
    r"(?i:(?<![A-Za-z])(?:not|never|neither|nor|cannot|eliminat(?:e|es|ed|ing)|rul(?:e|es|ed|ing)\s+out|"
    r"rather\s+than|instead\s+of)(?![A-Za-z])|[A-Za-z]n['’]t(?![A-Za-z]))")
# An exclusion sets the letter apart (除了A, except A). Like a denial it never commits to the letter, but unlike
# a denial it does not take back an earlier commitment: "故选A，因为除了A其余说法都正确" answers A.
_EXCLUSION = (
    r"除了|除去|除开|除|"
    r"(?i:(?<![A-Za-z])(?:except(?:\s+for)?|excluding|exclude[sd]?|other\s+than|apart\s+from|aside\s+from|"
    r"besides)(?![A-Za-z]))")
# Words that may stand between the denial and the letter: 不是选项A, 并非答案A, not option A, can't be the A.
_FILLER = (r"(?:\s|选项|选择|选|是|为|答案|\\boxed\s*\{|\\text(?:bf)?\s*\{|[{$(\[（【:]|"
           r"(?i:option|choice|answer|the|be|is|it['’]s|it|that|choose|pick|select|go\s+with|with|for|think|"
           r"believe)(?![A-Za-z]))*")
# One letter of a list, and what joins it to the next. (Each optional word carries its own trailing spaces:
# "\s*X?\s*" would make a failing match retry every split of a long run of spaces.)
_ONE_LETTER = r"[A-Da-d]\s*(?:(?:选项|项)\s*)?(?:[)\]）】]\s*)?"
_THEN_NEXT = _SEPARATOR + r"\s*(?:(?:选项|(?i:option))\s*)?(?:[(\[（]\s*)?"
_LISTED = f"(?:{_ONE_LETTER}{_THEN_NEXT})*"  # the letters listed before the one looked at: "排除A和[B]"
_LETTER_LIST = f"{_ONE_LETTER}(?:{_THEN_NEXT}{_ONE_LETTER})*"
_DENIED_BEFORE = re.compile(f"(?:{_DENIAL}){_FILLER}{_LISTED}\\Z")
_EXCLUDED_BEFORE = re.compile(f"(?:{_EXCLUSION}){_FILLER}{_LISTED}\\Z")
_NEARBY = 80  # characters searched around a letter for its denial or judgement: they stand close to it
# A judgement after the letter: A错误, A、B项说法均不正确, A是错的, A is wrong, A and B are incorrect.
_WRONG = (
    r"错误|错的|错了|错|不对|不正确|不准确|不恰当|不符合?|有误|有错|不成立|不合理|不科学|不选|不是(?:正确)?答案|"
    r"不是正确的?|不是(?=\s*(?:[，,;；。.!！]|\Z))|(?:可以|应该|应|被)?排除|"
    r"(?i:(?:is|are|was|were|seems?|looks?)\s+(?:also\s+|clearly\s+|definitely\s+|obviously\s+|simply\s+)?"
    r"(?:wrong|incorrect|false|invalid|not\s+(?:correct|right|true|valid|the\s+(?:correct\s+|right\s+)?answer)|"
    r"eliminated|ruled\s+out|out)(?![A-Za-z])|"
    r"isn['’]t\s+(?:correct|right|true|valid|the\s+(?:correct\s+|right\s+)?answer)(?![A-Za-z])|"
    r"can\s+be\s+(?:eliminated|ruled\s+out|excluded)(?![A-Za-z]))")
_JUDGED_WRONG = re.compile(
    r"\s*(?:[)\]）】]\s*)?(?:(?:选项|项)\s*)?"
    r"(?:" + _SEPARATOR + r"\s*(?:选项\s*)?[A-D]\s*(?:(?:选项|项)\s*)?(?:[)\]）】]\s*)?)*"
    r"(?:[两二三四]\s*(?:项|个选项)\s*)?(?:的\s*)?(?:(?:说法|表述|观点|描述|叙述|内容)\s*)?(?::\s*)?"
    r"(?:(?:都|均|也|明显|显然|肯定|完全|本身|是)\s*)*(?:" + _WRONG + r")"
    r"(?![^\S\n]*(?:选项)?[(\[（]?[A-Da-d](?![A-Za-z]))")  # "选C不选A": 不选 denies A, it does not judge C
# A trailing clause that only rejects letters: "所以是C，不是A。", "It's C rather than A.", "……是C。A错误。"
_REJECTION_TAIL = re.compile(
    r"[\s，,;；:。.!！(（]*(?:(?:而|并且?|也|(?i:and|but)(?![A-Za-z]))\s*)?"
    r"(?:(?:(?i:it|this|that|the\s+answer)(?:\s+is|['’]s)?|答案|这|它)\s*)?(?:" + _DENIAL + "|" + _EXCLUSION + ")"
    + _FILLER + _LETTER_LIST + r"[)）.。!！]*\s*\Z|"
    r"[\s，,;；:。.!！]+[A-Da-d](?:" + _JUDGED_WRONG.pattern + r")[的了]?[.。!！]*\s*\Z")  # (it lists letters itself)

# After a leading letter, on its line: a word starts a sentence about the letter ("A is wrong"), unless the
# letter labels its option text ("A) Paris.") or the words reject another letter ("A rather than B", "A. B错误").
_SAME_LINE_WORD = re.compile(r"[^\S\n]+[A-Za-z]")
_SAME_LINE_LABEL = re.compile(r"[^\S\n]+[A-Za-z]+\s*[.:]")
_REJECTION_AHEAD = re.compile(r"[^\S\n]*(?:[，,;；(（]\s*)?(?:(?:而|并且?|也|(?i:and|but)(?![A-Za-z]))\s*)?(?:"
                              + _DENIAL + "|" + _EXCLUSION + ")" + _FILLER + r"[A-Da-d](?![A-Za-z])")
# A letter and its judgement: "B is wrong" after a leading letter; "D都不正确" ending where a doubt word ends
# ("A、B、D都不正确" judges three letters, it does not say no option is right).
_JUDGED_LETTERS = re.compile(r"[A-Da-d](?:" + _JUDGED_WRONG.pattern + r")")
_JUDGED_LETTERS_UP_TO = re.compile(r"(?<![A-Za-z])[A-D](?:" + _JUDGED_WRONG.pattern + r")\Z")

# --- commitments ------------------------------------------------------------------------------------------
# Optional words carry their own trailing spaces ("\s*(?:X\s*)?", never "\s*X?\s*"): two "\s*" in a row make a
# failing match retry every split of a long run of spaces, which took seconds on "答案是" + 300 newlines.
_L = r"([A-Da-d])"
_OPEN = r"(?:[(\[（【]\s*)?"
_BOXED = re.compile(r"\\boxed\s*\{\s*(?:\\text(?:bf)?\s*\{\s*)?\(?([A-Da-d])\)?\s*(?:\}\s*)?\}")
_NEGATION = re.compile(
    r"(?:不是|并非|不选|而非|(?i:not))\s*(?:选项\s*)?\(?[A-Da-d]\)?\s*(?:(?:选项|项)\s*)?(?:[，,;；、]\s*)?"
    r"(?:而是|应该是|应是|应选|(?i:but|instead|rather))\s*(?:(?:选项|选|(?i:option))\s*)?" + _OPEN + _L)
_ANSWER_PHRASES = [
    # 答案是C / 正确答案为：C / 答案：选C / 最终答案 C / 答案应该是C / 【答案】C
    r"答案\s*(?:[)\]）】]\s*)?(?:(?:应该|应当|应|就|也|则)\s*)?(?:(?:是|为|选|:)\s*)?(?:(?:选项|选)\s*)?(?::\s*)?"
    + _OPEN + _L,
    # 故选C / 所以选 C / 应选C / 我选择C  ("选项C错误" is no choice: 选 must not start 选项)
    r"选(?:择)?(?!项)\s*(?::\s*)?" + _OPEN + _L,
    # 正确的是C / 正确选项是C / 正确的选项为C / 正确的一项是C
    r"正确(?:的)?(?:选项|答案|一项|说法|的是)?\s*(?:是|为|:)\s*(?::\s*)?(?:选项\s*)?" + _OPEN + _L,
    # English: the (correct) answer is C / answer: C / [Answer] C / I would choose C / I'll go with option C
    r"(?i:(?:the\s+)?(?:correct|right|best|final)?\s*answer\s*(?:is|would\s+be|should\s+be|:|=|[)\]）】](?:\s*:)?)\s*"
    r"(?:option\s*)?)" + _OPEN + _L,
    r"(?i:i\s*(?:(?:would|will|'ll|'d)\s*)?(?:choose|pick|select|go\s+with)\s*(?:option\s*)?)" + _OPEN + _L,
    r"(?i:(?:correct|right|best|final)\s+(?:option|choice)\s*"
    r"(?:is|would\s+be|should\s+be|:)\s*(?:option\s*)?)" + _OPEN + _L,
]
_ANSWER_PHRASE = re.compile("|".join(f"(?:{p})" for p in _ANSWER_PHRASES))
_LEADING = re.compile(r"^\s*(?:(?:[(\[（【]\s*)?(?:选项|答案|答|(?i:option|answer))\s*"
                      r"(?:[)\]）】]\s*)?(?::\s*)?)?" + _OPEN
                      + r"([A-Da-d])\s*[)\]）】]?"
                      r"(?=$|[\s.。、:;,，；!！)\]）】]|(?:选项|项)\s*(?:$|[.。!！]))")
_IS_CORRECT = re.compile(
    r"([A-D])\s*(?:(?:选项|项)\s*)?(?:(?:是|的说法|说法)\s*)?(?:正确|对)(?!吗)|"
    r"([A-D])\s*(?i:is|was)\s+(?i:the\s+)?(?i:correct|right)(?!\s*\?)|"
    r"([A-D])\s+(?i:is\s+the\s+(?:correct\s+|right\s+|best\s+)?(?:answer|option|choice))(?!\s*\?)")
_CONCLUSION = re.compile(
    r"(?:是|为|选|即|(?i:\bit's|\bit\s+is|\bso|\btherefore|\bthus|\bhence|\bmust\s+be|\bshould\s+be))\s*(?:,\s*)?(?::\s*)?"
    + _OPEN + r"([A-D])\s*(?:[)\]）】]\s*)?(?:(?:项|选项)\s*)?(?:[.。!！]+\s*)?$")

# --- what takes a commitment back -------------------------------------------------------------------------
_ENUM_AFTER = re.compile(r"\s*(?:[)\]）】]\s*)?(?:[、,，/&+]|和|或者?|与|及|跟|还是|以及|(?i:and|or))\s*(?:选项\s*)?"
                         r"(?:[(\[（]\s*)?([A-D])(?![A-Za-z])")
# "A、C" lists letters; "非A即C" and "不是A就是C" mean "A or C".
_ENUM_BEFORE = re.compile(r"(?<![A-Za-z])([A-D])\s*(?:[)\]）】]\s*)?"
                          r"(?:[、,，/&+]|和|或者?|与|及|跟|还是|以及|(?i:and|or))"
                          r"\s*(?:选项\s*)?(?:[(\[（]\s*)?$|(?:非|不是)\s*[A-D]\s*(?:即|就是|便是)\s*$")
_QUESTION_END = re.compile(r"(?:[?？]|[吗呢](?:\s*[。.])?)\s*$")
_SENTENCE_END = re.compile(r"[。！？!?\n]|\.(?=\s|$)")
_CLAUSE_END = re.compile(r"[，,；;：:。！？!?\n]|\.(?=\s|$)")
_HEDGE_IN_CLAUSE = re.compile(  # 不可能是A is certain, not a hedge (it rejects A)
    r"(?<!不)可能|也许|或许|大概|大约|估计|猜|似乎|好像|不太确定|莫非|吧(?:\s*[。.!！])?\s*$|"
    r"(?i:\b(?:maybe|perhaps|possibly|probably|likely|might|could|guess|guessing|seems?|unsure)\b)")
_UNCERTAIN = re.compile(  # 不确定性 (a physics term) is no doubt about the answer
    r"不(?:是很|太|很|大)?确定(?!性)|无法确定|不能确定|难以确定|无法判断|难以判断|不好说|拿不准|说不准|不知道|无法回答|不清楚|"
    r"没有正确答案|没有一个正确|都不正确|均不正确|"
    r"(?i:not\s+(?:(?:entirely|completely|totally|very|so|too|quite|100%)\s+)?(?:sure|certain)|uncertain|"
    r"can(?:no|')t\s+(?:determine|tell|decide|be\s+sure)|"
    r"hard\s+to\s+(?:say|tell)|don't\s+know|do\s+not\s+know|no\s+correct\s+answer)")
# A reply that corrects itself ("答案是A，错了，是B", "A. Wait, D.") is read from its last correction on; one that
# leaves another answer open anywhere ("答案是A，也可能是B", "or maybe B") gives no letter. "不对/错了" count only
# standing on their own (", 不对，"), not as a judgement of a letter ("A不对").
_CORRECTION = re.compile(
    r"(?:^|[，,。.！!；;：:\s])(?:不对|错了|不)\s*[，,。.！!；;]|等等|等一下|改成|改为|改选|其实不然|"
    r"(?i:\bwait\b|just\s+kidding|scratch\s+that|on\s+second\s+thought|actually,?\s+no\b)")
_OPEN_ALTERNATIVE = re.compile(r"未必|也可能|也许是|恐怕|(?i:\bor\s+maybe\b|\bor\s+perhaps\b|not\s+necessarily)")
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]{1,40}\|>")
_ROLE_LINE = re.compile(r"^\s*(?:assistant|user|system)\s*\n")  # left by "<|im_start|>assistant\n"
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S)
_MARKDOWN = re.compile(r"[*_`#>]+")
_ANY_LETTER = re.compile(r"[A-D]")


@dataclass(frozen=True)
class ParsedAnswer:
    """The letter (or None) and the name of the rule that decided it, or ``unparsed:<reason>``."""

    letter: str | None
    rule: str


class _Undecidable(Exception):
    """A candidate commitment turned out to be a hedge, a question, a list of letters or a rejection."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def normalise_script(text: str) -> str:
    """Fold full-width forms (NFKC) and read the grammar's Traditional characters as Simplified."""
    return unicodedata.normalize("NFKC", text).translate(_TO_SIMPLIFIED)


def clean_reply(text: str) -> str:
    """Drop chat special tokens and reasoning blocks; normalise full-width forms and Traditional script."""
    text = _ROLE_LINE.sub("", _SPECIAL_TOKEN.sub(" ", text))
    text = _THINK_BLOCK.sub(" ", text)
    if "</think>" in text:  # the opening tag was in the prompt: keep only the conclusion
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:  # reasoning never finished: nothing after it is an answer
        text = text.split("<think>", 1)[0]
    return normalise_script(text).strip()


def _standalone(text: str, start: int, end: int) -> bool:
    """The letter text[start:end] is not part of a word or a name."""
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    if before and _WORD_CHAR.match(before) and before not in _CJK_BEFORE_OK:
        return False
    if after and _WORD_CHAR.match(after) and after not in _CJK_AFTER_OK:
        return False
    if after in "'’" and text[end + 1:end + 2].isalpha():  # "C's", "A's"
        return False
    if text[start:end].islower() and _SPACE_THEN_WORD.match(text, end):  # "is a tricky one"
        return False
    return not _after_naming_word(text, start)


def _after_naming_word(text: str, start: int) -> bool:
    """A naming word ("Vitamin", "Type") stands just before ``start``, spaces aside."""
    word_end = start
    while word_end > 0 and text[word_end - 1].isspace():
        word_end -= 1
    return bool(_NAMING_WORDS.search(text, max(0, word_end - _LONGEST_NAMING_WORD), word_end))


# --- rejections -------------------------------------------------------------------------------------------


def _denied(text: str, start: int) -> bool:
    """A denial governs the letter at ``start``: 不是A, 排除A和B, not A, can't be A."""
    return bool(_DENIED_BEFORE.search(text, max(0, start - _NEARBY), start))


def _excluded(text: str, start: int) -> bool:
    """An exclusion governs the letter at ``start``: 除了A, except A, other than A."""
    return bool(_EXCLUDED_BEFORE.search(text, max(0, start - _NEARBY), start))


def _negated(text: str, start: int) -> bool:
    return _denied(text, start) or _excluded(text, start)


def _judged_wrong(text: str, end: int) -> bool:
    """The words right after the letter ending at ``end`` judge it wrong: A错误, A is wrong."""
    return bool(_JUDGED_WRONG.match(text, end, end + _NEARBY))


@functools.lru_cache(maxsize=16)
def _last_denial(text: str) -> dict[str, int]:
    """Where each letter is last denied in ``text`` (computed once per reply: every candidate asks)."""
    last = {}
    for match in re.finditer(r"[A-Da-d]", text):
        if _standalone(text, *match.span()) and _denied(text, match.start()):
            last[match.group().upper()] = match.start()
    return last


def _denied_later(text: str, letter: str, end: int) -> bool:
    """The reply denies ``letter`` again after ``end``, taking an earlier commitment to it back."""
    return _last_denial(text).get(letter.upper(), -1) >= end


def _rejected(text: str, start: int, end: int) -> bool:
    """The letter text[start:end] is denied, excluded or judged wrong, here or (denied) later."""
    return _negated(text, start) or _judged_wrong(text, end) or _denied_later(text, text[start:end], end)


def _without_rejection_tail(text: str) -> str:
    """``text`` less the trailing clauses that only reject letters: "所以是C，不是A。" -> "所以是C"."""
    while True:
        tail = _REJECTION_TAIL.search(text, max(0, len(text) - 2 * _NEARBY))  # a tail is short
        if not tail or tail.start() == 0:  # nothing to drop, or the whole reply is the rejection
            return text
        text = text[:tail.start()]


# --- the rules --------------------------------------------------------------------------------------------


def _listed_with_others(text: str, start: int, end: int) -> bool:
    """The letter at text[start:end] is one of a list ("A、C", "A or B", "非A即B") whose other letter is not
    rejected: in "答案是A，B项不正确" the comma ends the answer, it does not list B with it."""
    after = _ENUM_AFTER.match(text, end)
    if after and not _rejected(text, *after.span(1)):
        return True
    before = _ENUM_BEFORE.search(text, 0, start)
    return bool(before) and not (before.group(1) and _rejected(text, *before.span(1)))


def _check_commitment(text: str, start: int, end: int) -> None:
    """Raise _Undecidable if the letter at text[start:end] is listed with others, asked about or hedged."""
    if _listed_with_others(text, start, end):
        raise _Undecidable("several_letters")
    if _QUESTION_END.search(_span(text, start, _SENTENCE_END).rstrip()):
        raise _Undecidable("question")
    if _HEDGE_IN_CLAUSE.search(_span(text, start, _CLAUSE_END)):
        raise _Undecidable("hedge")


def _span(text: str, at: int, ends: re.Pattern) -> str:
    """The sentence or clause of ``text`` around position ``at``."""
    starts = [m.end() for m in ends.finditer(text, 0, at)]
    stop = ends.search(text, at)
    return text[(starts[-1] if starts else 0):(stop.end() if stop else len(text))]


def _commitments(pattern: re.Pattern, text: str, endpos: int | None = None) -> list[tuple[str, int, int]]:
    """(letter, start, end) of every match (in text[:endpos]) whose letter stands alone and is not rejected."""
    found = []
    for match in pattern.finditer(text, 0, len(text) if endpos is None else endpos):
        group = next(g for g in range(pattern.groups, 0, -1) if match.group(g))
        start, end = match.span(group)
        if _standalone(text, start, end) and not _rejected(text, start, end):
            found.append((match.group(group).upper(), start, end))
    return found


def _decide(text: str, found: list[tuple[str, int, int]], rule: str, last_wins: bool) -> ParsedAnswer | None:
    """The rule's letter after checking each commitment; None when the rule did not apply."""
    if not found:
        return None
    if last_wins:
        found = found[-1:]
    for _, start, end in found:
        _check_commitment(text, start, end)
    letters = {letter for letter, _, _ in found}
    if len(letters) > 1:
        raise _Undecidable("several_letters")
    return ParsedAnswer(letters.pop(), rule)


def _boxed(text: str) -> ParsedAnswer | None:
    """The one letter boxed and not rejected (``答案不是\\boxed{A}`` rejects A); None when nothing is boxed."""
    kept = {m.group(1).upper() for m in _BOXED.finditer(text) if not _rejected(text, *m.span(1))}
    if len(kept) > 1:
        raise _Undecidable("several_letters")
    return ParsedAnswer(kept.pop(), "boxed") if kept else None


def _leading(text: str, options: Sequence[str] | None) -> ParsedAnswer | None:
    match = _LEADING.match(text)
    if not match or not _standalone(text, *match.span(1)) or _rejected(text, *match.span(1)):
        return None
    letter = match.group(1)
    rest = text[match.end(1):]
    # (a line break ends the letter's sentence: "A\nHope this helps." chooses A; so does "A rather than B.")
    if letter.islower() and _SAME_LINE_WORD.match(rest):  # "a cat", "d is wrong": English words
        return None
    if _SAME_LINE_WORD.match(rest) and not _SAME_LINE_LABEL.match(rest) and not _REJECTION_AHEAD.match(rest):
        return None  # "A is wrong, B ..." starts a sentence about A, it does not choose A ("A) Paris" does)
    clause = re.split(r"[，,；;。！？!?\n]|\.(?=\s|$)", rest.lstrip(" .、:;)]）】"), maxsplit=1)[0]
    own_text = normalise_script(options[LETTERS.index(letter.upper())]).strip() if options else None
    if (re.search(r"错|不正确|不对|(?i:\bwrong\b|\bincorrect\b|\bfalse\b)", clause)
            and not (own_text and own_text in clause) and not _JUDGED_LETTERS.match(clause, 0, _NEARBY)):
        return None  # "A. 错误，……" judges A, it does not choose it ("A. B is wrong." judges B)
    try:
        _check_commitment(text, *match.span(1))
    except _Undecidable:  # "A、B、C、D都有道理", "A?": the later rules and the reasons decide
        return None
    return ParsedAnswer(letter.upper(), "leading_letter")


def _conclusion(text: str) -> ParsedAnswer | None:
    """The last clause ends on one letter, once trailing rejections are set aside ("是C，不是A。")."""
    found = _commitments(_CONCLUSION, text, len(_without_rejection_tail(text)))
    return _decide(text, found, "conclusion", last_wins=True)


def _denies_option(clause: str, option: str) -> bool:
    """The clause ends by denying or excluding ``option``'s text: "不是北京", "而非北京。"."""
    body = clause.rstrip(" .。!！")
    return body.endswith(option) and _negated(body, len(body) - len(option))


def _without_denied_options(body: str, options: Sequence[str]) -> str:
    """``body`` less the trailing clauses that only deny an option: "是上海，不是北京" -> "是上海"."""
    while True:
        starts = [m.end() for m in _CLAUSE_END.finditer(body) if m.end() < len(body)]
        if not starts or not any(option and _denies_option(body[starts[-1]:], option) for option in options):
            return body
        body = body[:starts[-1] - 1].rstrip()


def _option_text(text: str, options: Sequence[str]) -> ParsedAnswer | None:
    """The whole reply, or its last clause after 是/为/选, is exactly one option's text (not denied)."""
    options = [normalise_script(option).strip() if option else "" for option in options]
    body = _without_denied_options(re.sub(r"[\s。.!！]+$", "", text), options)
    clause = _span(body, len(body) - 1, _CLAUSE_END).strip() if body else ""
    tail = re.sub(r"^.*?(?:是|为|选|(?i:\bis\b|\bchoose\b))\s*", "", clause)
    found = [LETTERS[i] for i, option in enumerate(options) if option and option in (body, tail)]
    if len(found) != 1:
        return None
    if body != options[LETTERS.index(found[0])] and _negated(clause, len(clause) - len(tail)):
        raise _Undecidable("rejected")  # "我觉得不是上海": the only option named is denied
    if _HEDGE_IN_CLAUSE.search(clause):
        raise _Undecidable("hedge")
    return ParsedAnswer(found[0], "option_text")


def _unparsed_reason(plain: str) -> str:
    """Why no rule decided: the standalone letters were all rejected, several, one, or none."""
    mentioned = [m for m in _ANY_LETTER.finditer(plain) if _standalone(plain, *m.span())]
    # A letter judged wrong ("A项错误。") still counts as mentioned: only denials and exclusions reject it here.
    kept = [m for m in mentioned
            if not _negated(plain, m.start()) and not _denied_later(plain, m.group(), m.end())]
    if mentioned and not kept:
        return "rejected"
    if len({m.group() for m in kept}) > 1:
        return "several_letters"
    return "no_commitment" if kept else "no_letter"


def _doubts_every_option(text: str) -> bool:
    """The reply says it cannot tell (我无法确定, not sure) or that no option is right (都不正确); "A、B、D都不正确"
    only judges the letters it lists."""
    return any(not _JUDGED_LETTERS_UP_TO.search(text, max(0, doubt.start() - _NEARBY), doubt.end())
               for doubt in _UNCERTAIN.finditer(text))


def _parse(plain: str, options: Sequence[str] | None) -> ParsedAnswer:
    boxed = _boxed(plain)
    if boxed:
        return boxed
    if _doubts_every_option(plain):
        raise _Undecidable("hedge")
    for decide in (lambda: _decide(plain, _commitments(_NEGATION, plain), "negation", last_wins=True),
                   lambda: _decide(plain, _commitments(_ANSWER_PHRASE, plain), "answer_phrase", last_wins=True),
                   lambda: _leading(plain, options),
                   lambda: _decide(plain, _commitments(_IS_CORRECT, plain), "is_correct", last_wins=False),
                   lambda: _conclusion(plain),
                   lambda: _option_text(plain, options) if options else None):
        parsed = decide()
        if parsed:
            return parsed
    return ParsedAnswer(None, f"unparsed:{_unparsed_reason(plain)}")


def parse_answer_with_rule(text: str | None, options: Sequence[str] | None = None) -> ParsedAnswer:
    """Parse a reply; say which rule decided it (or why nothing did)."""
    if text is None:
        return ParsedAnswer(None, "unparsed:empty")
    plain = _MARKDOWN.sub("", clean_reply(text)).strip()
    if not plain:
        return ParsedAnswer(None, "unparsed:empty")
    if _OPEN_ALTERNATIVE.search(plain):
        return ParsedAnswer(None, "unparsed:hedge")
    corrections = list(_CORRECTION.finditer(plain))
    if corrections:  # only what the reply says after its last correction counts
        plain = plain[corrections[-1].end():].strip(" ，,。.!！;；:：")
        if not plain:
            return ParsedAnswer(None, "unparsed:retracted")
    try:
        parsed = _parse(plain, options)
    except _Undecidable as undecided:
        return ParsedAnswer(None, f"unparsed:{undecided.reason}")
    if corrections and not parsed.letter:
        return ParsedAnswer(None, "unparsed:retracted")
    return parsed


def parse_answer(text: str | None, options: Sequence[str] | None = None) -> str | None:
    """``"A" | "B" | "C" | "D"`` or ``None`` when the reply does not commit to one letter."""
    return parse_answer_with_rule(text, options).letter


# --- command line -----------------------------------------------------------------------------------------


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python answer_parser.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read each model reply as one answer letter A-D, or '-' with the reason it commits to none.",
        epilog="each reply prints one line:\n"
               "  C  (rule: answer_phrase)\n"
               "  -  (unparsed: hedge)\n"
               "quote every reply; put '--' before a reply that starts with '-'.\n\n"
               "example:\n"
               "  python answer_parser.py \"答案是C，不是A\" \"不选B\"\n"
               "  python answer_parser.py --options 北京 上海 广州 深圳 \"我觉得是上海\"")
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="a model reply")
    parser.add_argument("--options", nargs=4, metavar=("A_TEXT", "B_TEXT", "C_TEXT", "D_TEXT"),
                        help="the question's four option texts, so that a reply naming one option's text is read")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_arg_parser().parse_args(list(argv))  # no TEXT: usage on stderr, exit 2
    for text in args.texts:
        parsed = parse_answer_with_rule(text, args.options)
        if parsed.letter:
            print(f"{parsed.letter}  (rule: {parsed.rule})")
        else:
            print(f"-  (unparsed: {parsed.rule.split(':', 1)[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
