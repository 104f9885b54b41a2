"""Turn a model's free-text reply into one answer letter (A-D), or None when it cannot be determined.

    python answer_parser.py "经过分析，正确答案是（Ｃ）。"      # prints: C  (rule: answer_phrase)

Standard library only, so it can be imported anywhere (notebooks, evaluation servers) without the model
stack. The rules are layered from most to least explicit; the first that yields exactly one letter wins:

1. ``boxed``          ``\\boxed{C}`` (maths-style replies)
2. ``negation``       ``不是A，而是C`` / ``not A but C`` -> the corrected letter
3. ``answer_phrase``  ``答案是/为/：C``, ``故选C``, ``正确答案：C``, ``the answer is C``, ``option C`` ...
                      (the last such phrase wins: models state their conclusion at the end)
4. ``leading_letter`` ``C``, ``C.``, ``(C)``, ``**C**``, ``c、北京`` at the very start
5. ``is_correct``     ``C项正确`` / ``C is correct``
6. ``option_phrase``  ``Option C`` (one distinct letter named that way)
7. ``single_mention`` exactly one distinct letter is mentioned (negated mentions such as ``排除A`` ignored)
8. ``option_text``    (only when the options are given) exactly one option's text appears in the reply

A reply that matches none of them, or that names several letters with equal standing, gives ``None`` and a
reason: the caller decides what to do (infer.py falls back to letter scoring and reports the row). It never
guesses.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from typing import Sequence

LETTERS = ("A", "B", "C", "D")

# A letter that stands alone: not part of a Latin word ("DNA", "Cat"), digits allowed around it ("A1" is rare).
_L = r"(?<![A-Za-z])([A-D](?![A-Za-z])|[a-d](?![A-Za-z])(?!\s+[A-Za-z]))"  # "is a cat" is no answer
_UL = r"(?<![A-Za-z])([A-D])(?![A-Za-z])"  # upper-case only, for loose mentions

_SPECIAL_TOKEN = re.compile(r"<\|[^|>]{1,40}\|>")
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S)
_BOXED = re.compile(r"\\boxed\s*\{\s*(?:\\text\s*\{\s*)?" + r"\(?([A-Da-d])\)?" + r"\s*\}?\s*\}")
_MARKDOWN = re.compile(r"[*_`#>]+")
_NEGATION = re.compile(
    r"(?:不是|并非|不选|而非|(?i:not))\s*(?:选项)?\s*\(?[A-Da-d]\)?\s*(?:选项)?\s*[，,;；、]?\s*"
    r"(?:而是|应该是|应是|应选|(?i:but|instead|rather))\s*(?:选项|选|(?i:option))?\s*\(?" + _L,
)
_ANSWER_PHRASES = [
    # Chinese: 答案是C / 正确答案为：C / 答案：选C / 最终答案 C
    r"答案\s*(?:应该|应当|应|就|也)?\s*(?:是|为|选|:)?\s*(?:选项|选)?\s*[:]?\s*\(?" + _L,
    # 故选C / 所以选 C / 应选C / 我选择C / 选C  ("选项C错误" is not a choice: 选 must not be 选项)
    r"选(?:择)?(?!项)\s*[:]?\s*\(?" + _L,
    # 正确的是C / 正确选项是C / 正确的选项为C
    r"正确(?:的)?(?:选项|答案|一项|说法)?\s*(?:是|为|:)\s*(?:选项)?\s*\(?" + _L,
    # English
    r"(?i:(?:the\s+)?(?:correct|right|best|final)?\s*answer\s*(?:is|would\s+be|should\s+be|:|=)\s*(?:option\s*)?)\(?" + _L,
    r"(?i:i\s+(?:would\s+)?(?:choose|pick|select|go\s+with)\s*(?:option\s*)?)\(?" + _L,
]
_ANSWER_PHRASE = re.compile("|".join(f"(?:{p})" for p in _ANSWER_PHRASES))
_OPTION_PHRASE = re.compile(r"(?<![A-Za-z])(?i:option)\s*\(?([A-D])(?![A-Za-z])")
_LEADING = re.compile(r"^\s*[(\[]?\s*([A-D]|[a-d](?!\s+[A-Za-z]))\s*(?:$|[)\].、:;,，。；!\s])")
_IS_CORRECT = re.compile(
    r"(?<![A-Za-z])([A-D])(?![A-Za-z])\s*(?:选项|项)?\s*(?:是|说法)?\s*(?:正确|对)(?!吗)|"
    r"(?<![A-Za-z])([A-D])(?![A-Za-z])\s*(?i:is|was)\s+(?i:the\s+)?(?i:correct|right)",
)
_NEGATED_MENTION = re.compile(
    r"(?:不是|不选|排除|并非|而非|不能选|(?i:not|isn't|exclude))\s*(?:选项)?\s*\(?" + _UL
    + r"|" + _UL + r"\s*(?:选项|项)?\s*(?:是)?\s*(?:错误|错|不正确|不对|不符合|排除|(?i:is\s+wrong|is\s+incorrect))",
)
_MENTION = re.compile(_UL)


@dataclass(frozen=True)
class ParsedAnswer:
    """The letter (or None) and the name of the rule that decided it, or ``unparsed:<reason>``."""

    letter: str | None
    rule: str


def clean_reply(text: str) -> str:
    """Drop chat special tokens and reasoning blocks, normalise full-width characters (NFKC)."""
    text = _SPECIAL_TOKEN.sub(" ", text)
    text = _THINK_BLOCK.sub(" ", text)
    if "</think>" in text:  # the opening tag was in the prompt: keep only the conclusion
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:  # reasoning never finished: nothing after it is an answer
        text = text.split("<think>", 1)[0]
    return unicodedata.normalize("NFKC", text).strip()


def _only(letters: Sequence[str]) -> str | None:
    distinct = {letter.upper() for letter in letters}
    return distinct.pop() if len(distinct) == 1 else None


def _last_group(match: re.Match) -> str:
    return next(g for g in reversed(match.groups()) if g)


def _match_option_text(text: str, options: Sequence[str]) -> str | None:
    found = [LETTERS[i] for i, option in enumerate(options) if option and option.strip() in text]
    if len(found) != 1:
        return None
    # An option that is a substring of another found option is not evidence on its own.
    return found[0]


def parse_answer_with_rule(text: str | None, options: Sequence[str] | None = None) -> ParsedAnswer:
    """Parse a reply; say which rule decided it (or why nothing did)."""
    if text is None:
        return ParsedAnswer(None, "unparsed:empty")
    raw = clean_reply(text)
    if not raw:
        return ParsedAnswer(None, "unparsed:empty")
    boxed = _BOXED.findall(raw)
    if boxed:
        letter = _only(boxed)
        return ParsedAnswer(letter, "boxed" if letter else "unparsed:conflicting_boxed")
    plain = _MARKDOWN.sub("", raw)
    negations = list(_NEGATION.finditer(plain))
    if negations:
        return ParsedAnswer(negations[-1].group(1).upper(), "negation")
    phrases = list(_ANSWER_PHRASE.finditer(plain))
    if phrases:
        return ParsedAnswer(_last_group(phrases[-1]).upper(), "answer_phrase")
    leading = _LEADING.match(plain)
    if leading:
        return ParsedAnswer(leading.group(1).upper(), "leading_letter")
    correct = _only([_last_group(m) for m in _IS_CORRECT.finditer(plain)])
    if correct:
        return ParsedAnswer(correct, "is_correct")
    option = _only(_OPTION_PHRASE.findall(plain))
    if option:
        return ParsedAnswer(option, "option_phrase")
    negated = {_last_group(m) for m in _NEGATED_MENTION.finditer(plain)}
    mentioned = [m for m in _MENTION.findall(plain) if m not in negated]
    if mentioned:
        letter = _only(mentioned)
        return ParsedAnswer(letter, "single_mention" if letter else "unparsed:several_letters")
    if options:
        letter = _match_option_text(plain, options)
        if letter:
            return ParsedAnswer(letter, "option_text")
    return ParsedAnswer(None, "unparsed:no_letter")


def parse_answer(text: str | None, options: Sequence[str] | None = None) -> str | None:
    """``"A" | "B" | "C" | "D"`` or ``None`` when the reply does not determine one letter."""
    return parse_answer_with_rule(text, options).letter


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: python answer_parser.py TEXT [TEXT ...]", file=sys.stderr)
        return 2
    for text in argv:
        parsed = parse_answer_with_rule(text)
        print(f"{parsed.letter or '-'}  (rule: {parsed.rule})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
