"""Turn a model's free-text reply into one answer letter (A-D), or None when the reply does not commit to one.

    python answer_parser.py "经过分析，正确答案是（Ｃ）。"      # prints: C  (rule: answer_phrase)
    python answer_parser.py "这题考查维生素C的作用，我无法确定。"  # prints: -  (unparsed: hedge)

Standard library only, so it can be imported anywhere (notebooks, evaluation servers) without the model
stack. A letter is returned only when the reply *commits* to it, through one of these rules (the first that
decides wins):

1. ``boxed``          ``\\boxed{C}`` (maths-style replies); two different boxed letters -> None
2. ``negation``       ``不是A，而是C`` / ``not A but C`` -> the corrected letter
3. ``answer_phrase``  ``答案是/为/：C``, ``故选C``, ``正确选项是C``, ``the answer is C``, ``I choose C`` ...
                      (the last such phrase wins: models state their conclusion at the end)
4. ``leading_letter`` ``C``, ``C.``, ``(C)``, ``**C**``, ``选项C：北京``, ``Option C:`` at the very start
5. ``is_correct``     ``C项正确`` / ``C is correct`` (exactly one letter declared correct)
6. ``conclusion``     the reply's last clause ends on one letter: ``……应该是C``, ``So it's B.``
7. ``option_text``    (only when the options are given) the reply is, or concludes with, one option's text

What never counts as a commitment, and gives ``None`` with the reason (``rule`` = ``unparsed:<reason>``):

* a letter inside a word or name: ``维生素C``, ``Vitamin C``, ``C语言``, ``A股``, ``B超``, ``DNA``;
* a hedge (``可能是A``, ``我无法确定``, ``maybe B``, ``I'm not sure``) -> ``hedge``;
* a question back (``答案是A还是B？``, ``is it C?``) -> ``question``;
* several letters with equal standing (``A、B、C、D都有道理``, ``A or B``) -> ``several_letters``;
* letters only mentioned, never chosen -> ``no_commitment``; no letter at all -> ``no_letter``.

The caller decides what to do with ``None``: infer.py answers such rows by letter scoring and lists them,
with the reply and the reason, in its report.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from typing import Sequence

LETTERS = ("A", "B", "C", "D")

# --- what may stand next to an answer letter -------------------------------------------------------------
# A letter is a candidate only when it is not part of a word: no Latin letter or digit beside it, and a
# Chinese character beside it only when that character is grammar around a choice (选C, 是C, C项, C正确),
# never a word it belongs to (维生素C, C语言, A股, B超).
_CJK_BEFORE_OK = "选是为项择案即以故应和或与及跟"
_CJK_AFTER_OK = "项选是正对为错不和或与及还、吧吗呢呀啊的都也均两三四等"
_WORD_CHAR = re.compile(r"[A-Za-z0-9\u4e00-\u9fff]")
# An English word that names a thing with a letter: "Vitamin C", "Type A", "Hepatitis B", "Plan B".
_NAMING_WORDS = re.compile(
    r"(?i:vitamin|type|hepatitis|plan|grade|class|category|group|section|part|level|blood|model|"
    r"series|team|route|block|zone|room|building|gate|row|unit|phase|stage|list|appendix|chapter|figure|table)"
    r"\s*$")

# --- commitments ------------------------------------------------------------------------------------------
_L = r"([A-Da-d])"
_OPEN = r"[(\[（【]?\s*"
_BOXED = re.compile(r"\\boxed\s*\{\s*(?:\\text(?:bf)?\s*\{\s*)?\(?([A-Da-d])\)?\s*\}?\s*\}")
_NEGATION = re.compile(
    r"(?:不是|并非|不选|而非|(?i:not))\s*(?:选项)?\s*\(?[A-Da-d]\)?\s*(?:选项|项)?\s*[，,;；、]?\s*"
    r"(?:而是|应该是|应是|应选|(?i:but|instead|rather))\s*(?:选项|选|(?i:option))?\s*" + _OPEN + _L)
_ANSWER_PHRASES = [
    # 答案是C / 正确答案为：C / 答案：选C / 最终答案 C / 答案应该是C
    r"答案\s*(?:应该|应当|应|就|也|则)?\s*(?:是|为|选|:)?\s*(?:选项|选)?\s*:?\s*" + _OPEN + _L,
    # 故选C / 所以选 C / 应选C / 我选择C  ("选项C错误" is no choice: 选 must not start 选项)
    r"选(?:择)?(?!项)\s*:?\s*" + _OPEN + _L,
    # 正确的是C / 正确选项是C / 正确的选项为C / 正确的一项是C
    r"正确(?:的)?(?:选项|答案|一项|说法|的是)?\s*(?:是|为|:)\s*:?\s*(?:选项)?\s*" + _OPEN + _L,
    # English: the (correct) answer is C / answer: C / I would choose C / I'll go with option C
    r"(?i:(?:the\s+)?(?:correct|right|best|final)?\s*answer\s*(?:is|would\s+be|should\s+be|:|=)\s*(?:option\s*)?)" + _OPEN + _L,
    r"(?i:i\s*(?:would|will|'ll|'d)?\s*(?:choose|pick|select|go\s+with)\s*(?:option\s*)?)" + _OPEN + _L,
    r"(?i:(?:correct|right|best|final)\s+(?:option|choice)\s*(?:is|would\s+be|should\s+be|:)\s*(?:option\s*)?)" + _OPEN + _L,
]
_ANSWER_PHRASE = re.compile("|".join(f"(?:{p})" for p in _ANSWER_PHRASES))
_LEADING = re.compile(r"^\s*(?:(?:选项|答案|答|(?i:option|answer))\s*:?\s*)?" + _OPEN + r"([A-Da-d])\s*[)\]）】]?"
                      r"(?=$|[\s.。、:;,，；!！)\]）】]|(?:选项|项)\s*(?:$|[.。!！]))")
_IS_CORRECT = re.compile(
    r"([A-D])\s*(?:选项|项)?\s*(?:是|的说法|说法)?\s*(?:正确|对)(?!吗)|"
    r"([A-D])\s*(?i:is|was)\s+(?i:the\s+)?(?i:correct|right)(?!\s*\?)|"
    r"([A-D])\s+(?i:is\s+the\s+(?:correct\s+|right\s+|best\s+)?(?:answer|option|choice))(?!\s*\?)")
_CONCLUSION = re.compile(
    r"(?:是|为|选|即|(?i:\bit's|\bit\s+is|\bso|\btherefore|\bthus|\bhence|\bmust\s+be|\bshould\s+be))\s*,?:?\s*"
    + _OPEN + r"([A-D])\s*[)\]）】]?\s*(?:项|选项)?\s*[.。!！]*\s*$")

# --- what takes a commitment back -------------------------------------------------------------------------
_ENUM_AFTER = re.compile(r"^\s*[)\]）】]?\s*(?:[、,，/&+]|和|或者?|与|及|跟|还是|以及|(?i:and|or))\s*(?:选项)?\s*"
                         r"[(\[（]?\s*[A-D](?![A-Za-z])")
_ENUM_BEFORE = re.compile(r"(?<![A-Za-z])[A-D]\s*[)\]）】]?\s*(?:[、,，/&+]|和|或者?|与|及|跟|还是|以及|(?i:and|or))"
                          r"\s*(?:选项)?\s*[(\[（]?\s*$")
_QUESTION_END = re.compile(r"(?:[?？]|[吗呢]\s*[。.]?)\s*$")
_SENTENCE_END = re.compile(r"[。！？!?\n]|\.(?=\s|$)")
_CLAUSE_END = re.compile(r"[，,；;：:。！？!?\n]|\.(?=\s|$)")
_HEDGE_IN_CLAUSE = re.compile(
    r"可能|也许|或许|大概|大约|估计|猜|似乎|好像|不太确定|吧\s*[。.!！]?\s*$|"
    r"(?i:\b(?:maybe|perhaps|possibly|probably|likely|might|could|guess|guessing|seems?|unsure)\b)")
_UNCERTAIN = re.compile(
    r"不确定|无法确定|不能确定|难以确定|无法判断|难以判断|不好说|拿不准|说不准|不知道|无法回答|不清楚|"
    r"没有正确答案|没有一个正确|都不正确|均不正确|"
    r"(?i:not\s+(?:sure|certain)|uncertain|can(?:no|')t\s+(?:determine|tell|decide|be\s+sure)|"
    r"hard\s+to\s+(?:say|tell)|don't\s+know|do\s+not\s+know|no\s+correct\s+answer)")
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
    """A candidate commitment turned out to be a hedge, a question or a list of letters."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def clean_reply(text: str) -> str:
    """Drop chat special tokens and reasoning blocks, normalise full-width characters (NFKC)."""
    text = _ROLE_LINE.sub("", _SPECIAL_TOKEN.sub(" ", text))
    text = _THINK_BLOCK.sub(" ", text)
    if "</think>" in text:  # the opening tag was in the prompt: keep only the conclusion
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:  # reasoning never finished: nothing after it is an answer
        text = text.split("<think>", 1)[0]
    return unicodedata.normalize("NFKC", text).strip()


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
    if text[start:end].islower() and re.match(r"\s+[A-Za-z]", text[end:]):  # "is a tricky one"
        return False
    return not _NAMING_WORDS.search(text[:start])


def _span(text: str, at: int, ends: re.Pattern) -> str:
    """The sentence or clause of ``text`` around position ``at``."""
    starts = [m.end() for m in ends.finditer(text, 0, at)]
    stop = ends.search(text, at)
    return text[(starts[-1] if starts else 0):(stop.end() if stop else len(text))]


def _check_commitment(text: str, start: int, end: int) -> None:
    """Raise _Undecidable if the letter at text[start:end] is listed with others, asked about or hedged."""
    if _ENUM_AFTER.match(text[end:]) or _ENUM_BEFORE.search(text[:start]):
        raise _Undecidable("several_letters")
    if _QUESTION_END.search(_span(text, start, _SENTENCE_END).rstrip()):
        raise _Undecidable("question")
    if _HEDGE_IN_CLAUSE.search(_span(text, start, _CLAUSE_END)):
        raise _Undecidable("hedge")


def _commitments(pattern: re.Pattern, text: str) -> list[tuple[str, int, int]]:
    """(letter, start, end) of every match whose letter stands alone."""
    found = []
    for match in pattern.finditer(text):
        group = next(g for g in range(pattern.groups, 0, -1) if match.group(g))
        start, end = match.span(group)
        if _standalone(text, start, end):
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


def _leading(text: str, options: Sequence[str] | None) -> ParsedAnswer | None:
    match = _LEADING.match(text)
    if not match or not _standalone(text, *match.span(1)):
        return None
    letter = match.group(1)
    rest = text[match.end(1):]
    if letter.islower() and re.match(r"\s+[A-Za-z]", rest):  # "a cat", "d is wrong": English words
        return None
    if re.match(r"\s+[A-Za-z]", rest) and not re.match(r"\s+[A-Za-z]+\s*[.:]", rest):
        return None  # "A is wrong, B ..." starts a sentence about A, it does not choose A ("A) Paris" does)
    clause = re.split(r"[，,；;。！？!?\n]", rest.lstrip(" .、:;)]）】"), maxsplit=1)[0]
    own_text = options[LETTERS.index(letter.upper())].strip() if options else None
    if re.search(r"错|不正确|不对|(?i:\bwrong\b|\bincorrect\b|\bfalse\b)", clause) and not (own_text and own_text in clause):
        return None  # "A. 错误，……" judges A, it does not choose it
    try:
        _check_commitment(text, *match.span(1))
    except _Undecidable:  # "A、B、C、D都有道理", "A?": the later rules and the reasons decide
        return None
    return ParsedAnswer(letter.upper(), "leading_letter")


def _option_text(text: str, options: Sequence[str]) -> ParsedAnswer | None:
    """The whole reply, or its last clause after 是/为/选, is exactly one option's text."""
    body = re.sub(r"[\s。.!！]+$", "", text)
    clause = _span(body, len(body) - 1, _CLAUSE_END).strip() if body else ""
    tail = re.sub(r"^.*?(?:是|为|选|(?i:\bis\b|\bchoose\b))\s*", "", clause)
    found = [LETTERS[i] for i, option in enumerate(options)
             if option and option.strip() and option.strip() in (body, tail)]
    if len(found) != 1:
        return None
    if _HEDGE_IN_CLAUSE.search(clause):
        raise _Undecidable("hedge")
    return ParsedAnswer(found[0], "option_text")


def _parse(plain: str, options: Sequence[str] | None) -> ParsedAnswer:
    boxed = _BOXED.findall(plain)
    if boxed:
        letters = {b.upper() for b in boxed}
        return ParsedAnswer(letters.pop(), "boxed") if len(letters) == 1 else ParsedAnswer(None, "unparsed:several_letters")
    if _UNCERTAIN.search(plain):
        raise _Undecidable("hedge")
    for decide in (lambda: _decide(plain, _commitments(_NEGATION, plain), "negation", last_wins=True),
                   lambda: _decide(plain, _commitments(_ANSWER_PHRASE, plain), "answer_phrase", last_wins=True),
                   lambda: _leading(plain, options),
                   lambda: _decide(plain, _commitments(_IS_CORRECT, plain), "is_correct", last_wins=False),
                   lambda: _decide(plain, _commitments(_CONCLUSION, plain), "conclusion", last_wins=True),
                   lambda: _option_text(plain, options) if options else None):
        parsed = decide()
        if parsed:
            return parsed
    mentioned = [m for m in _ANY_LETTER.finditer(plain) if _standalone(plain, *m.span())]
    if len({m.group() for m in mentioned}) > 1:
        return ParsedAnswer(None, "unparsed:several_letters")
    return ParsedAnswer(None, "unparsed:no_commitment" if mentioned else "unparsed:no_letter")


def parse_answer_with_rule(text: str | None, options: Sequence[str] | None = None) -> ParsedAnswer:
    """Parse a reply; say which rule decided it (or why nothing did)."""
    if text is None:
        return ParsedAnswer(None, "unparsed:empty")
    plain = _MARKDOWN.sub("", clean_reply(text)).strip()
    if not plain:
        return ParsedAnswer(None, "unparsed:empty")
    try:
        return _parse(plain, options)
    except _Undecidable as undecided:
        return ParsedAnswer(None, f"unparsed:{undecided.reason}")


def parse_answer(text: str | None, options: Sequence[str] | None = None) -> str | None:
    """``"A" | "B" | "C" | "D"`` or ``None`` when the reply does not commit to one letter."""
    return parse_answer_with_rule(text, options).letter


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: python answer_parser.py TEXT [TEXT ...]", file=sys.stderr)
        return 2
    for text in argv:
        parsed = parse_answer_with_rule(text)
        if parsed.letter:
            print(f"{parsed.letter}  (rule: {parsed.rule})")
        else:
            print(f"-  (unparsed: {parsed.rule.split(':', 1)[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
