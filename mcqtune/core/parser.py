"""Turn a model's free-text reply into one answer letter (A-D), or None when the reply does not commit to one.

    python answer_parser.py "经过分析，正确答案是（Ｃ）。"      # prints: C  (rule: answer_phrase)
    python answer_parser.py "这题考查维生素C的作用，我无法确定。"  # prints: -  (unparsed: hedge)
    python answer_parser.py --options 北京 上海 广州 深圳 "我觉得是上海"   # prints: B  (rule: option_text)

Standard library only, so it can be imported anywhere (notebooks, evaluation servers) without the model
stack. The reply is first normalised: chat special tokens and reasoning blocks dropped, full-width forms
folded (NFKC), and Traditional Chinese read as Simplified (``選B``, ``答案為B``, ``正確選項為：Ｃ`` and
``無法確定`` read like ``选B``, ``答案为B``, ``正确选项为：C`` and ``无法确定``; a table covers every character
of the grammar, whose patterns ``grammar.py`` holds). A letter is returned only when the reply
*commits* to it, through one of these rules (the first that decides wins):

1. ``boxed``          ``\\boxed{C}`` (maths-style replies); two different boxed letters -> None
2. ``negation``       ``不是A，而是C`` / ``not A but C`` -> the corrected letter
3. ``answer_phrase``  ``答案是/为/：C``, ``【答案】C``, ``故选C``, ``正确选项是C``, ``the answer is C``, ``I choose C``
                      ... (the last such phrase wins: models state their conclusion at the end)
4. ``leading_letter`` ``C``, ``C.``, ``(C)``, ``**C**``, ``选项C：北京``, ``Option C:`` at the very start
5. ``is_correct``     ``C项正确`` / ``C is correct`` (exactly one letter declared correct)
6. ``conclusion``     the reply's last clause ends on one letter: ``……应该是C``, ``So it's B.``, ``所以是C，不是A。``
7. ``option_text``    (only when the options are given) the reply is, or concludes with, one option's text
8. ``elimination``    three letters judged wrong or excluded and the fourth never named: ``A、B、D三项均错误``
                      -> C (``只剩D`` / ``剩下的是D`` after ruling the others out is an ``answer_phrase``)

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
from dataclasses import dataclass
from typing import Sequence

from mcqtune.core.grammar import (ANSWER_PHRASE, ANY_LETTER, BOXED, CJK_AFTER_OK, CJK_BEFORE_OK, CJK_WORDS_BEFORE_OK,
                                  CLAUSE_END,
                                       CONCLUSION, CORRECTION, DENIED_BEFORE, ENUM_AFTER, ENUM_BEFORE, EXCLUDED_AFTER,
                                       EXCLUDED_BEFORE, HEDGE_IN_CLAUSE, IS_CORRECT, JUDGED_LETTERS,
                                       JUDGED_LETTERS_UP_TO, JUDGED_WRONG, LEADING, LETTERS, LONGEST_NAMING_WORD,
                                       MARKDOWN, NAMING_WORDS, NEARBY, NEGATION, OPEN_ALTERNATIVE, QUESTION_END,
                                       REFUTED_AFTER, REJECTION_AHEAD, REJECTION_TAIL, ROLE_LINE, SAME_LINE_LABEL,
                                       SAME_LINE_WORD, SENTENCE_END, SPACE_THEN_WORD, SPECIAL_TOKEN, THINK_BLOCK,
                                       UNCERTAIN, WORD_CHAR, normalise_script)


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


def clean_reply(text: str) -> str:
    """Drop chat special tokens and reasoning blocks; normalise full-width forms and Traditional script."""
    text = ROLE_LINE.sub("", SPECIAL_TOKEN.sub(" ", text))
    text = THINK_BLOCK.sub(" ", text)
    if "</think>" in text:  # the opening tag was in the prompt: keep only the conclusion
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:  # reasoning never finished: nothing after it is an answer
        text = text.split("<think>", 1)[0]
    return normalise_script(text).strip()


def _standalone(text: str, start: int, end: int) -> bool:
    """The letter text[start:end] is not part of a word or a name."""
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    if before and WORD_CHAR.match(before) and before not in CJK_BEFORE_OK \
            and not text[:start].endswith(CJK_WORDS_BEFORE_OK):
        return False
    if after and WORD_CHAR.match(after) and after not in CJK_AFTER_OK:
        return False
    if after in "'’" and text[end + 1:end + 2].isalpha():  # "C's", "A's"
        return False
    if text[start:end] == "C" and text.startswith("++", end):  # the language C++
        return False
    if text[start:end].islower() and SPACE_THEN_WORD.match(text, end):  # "is a tricky one"
        return False
    return not _after_naming_word(text, start)


def _after_naming_word(text: str, start: int) -> bool:
    """A naming word ("Vitamin", "Type") stands just before ``start``, spaces aside."""
    word_end = start
    while word_end > 0 and text[word_end - 1].isspace():
        word_end -= 1
    return bool(NAMING_WORDS.search(text, max(0, word_end - LONGEST_NAMING_WORD), word_end))


# --- rejections -------------------------------------------------------------------------------------------


def _denied(text: str, start: int) -> bool:
    """A denial governs the letter at ``start``: 不是A, 排除A和B, not A, can't be A."""
    return bool(DENIED_BEFORE.search(text, max(0, start - NEARBY), start))


def _excluded(text: str, start: int) -> bool:
    """An exclusion governs the letter at ``start``: 除了A, except A, other than A."""
    return bool(EXCLUDED_BEFORE.search(text, max(0, start - NEARBY), start))


def _negated(text: str, start: int) -> bool:
    return _denied(text, start) or _excluded(text, start)


def _judged_wrong(text: str, end: int) -> bool:
    """The words right after the letter ending at ``end`` judge it wrong: A错误, A is wrong."""
    return bool(JUDGED_WRONG.match(text, end, end + NEARBY))


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
    """The letter text[start:end] is denied, excluded (before or after it: 除了A, A以外) or judged wrong (A错误, or
    a refuting clause: "有人说是A，这是错的"), here or (denied) later."""
    return _negated(text, start) or _judged_wrong(text, end) or _denied_later(text, text[start:end], end) \
        or bool(EXCLUDED_AFTER.match(text, end)) or bool(REFUTED_AFTER.match(text, end))


def _without_rejection_tail(text: str) -> str:
    """``text`` less the trailing clauses that only reject letters: "所以是C，不是A。" -> "所以是C"."""
    while True:
        tail = REJECTION_TAIL.search(text, max(0, len(text) - 2 * NEARBY))  # a tail is short
        if not tail or tail.start() == 0:  # nothing to drop, or the whole reply is the rejection
            return text
        text = text[:tail.start()]


# --- the rules --------------------------------------------------------------------------------------------


def _listed_with_others(text: str, start: int, end: int) -> bool:
    """The letter at text[start:end] is one of a list ("A、C", "A or B", "非A即B") whose other letter is not
    rejected: in "答案是A，B项不正确" the comma ends the answer, it does not list B with it."""
    after = ENUM_AFTER.match(text, end)
    if after and not _rejected(text, *after.span(1)):
        return True
    before = ENUM_BEFORE.search(text, 0, start)
    return bool(before) and not (before.group(1) and _rejected(text, *before.span(1)))


def _check_commitment(text: str, start: int, end: int) -> None:
    """Raise _Undecidable if the letter at text[start:end] is listed with others, asked about or hedged."""
    if _listed_with_others(text, start, end):
        raise _Undecidable("several_letters")
    if QUESTION_END.search(_span(text, start, SENTENCE_END).rstrip()):
        raise _Undecidable("question")
    if HEDGE_IN_CLAUSE.search(_span(text, start, CLAUSE_END)):
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
    kept = {m.group(1).upper() for m in BOXED.finditer(text) if not _rejected(text, *m.span(1))}
    if len(kept) > 1:
        raise _Undecidable("several_letters")
    return ParsedAnswer(kept.pop(), "boxed") if kept else None


def _leading(text: str, options: Sequence[str] | None) -> ParsedAnswer | None:
    match = LEADING.match(text)
    if not match or not _standalone(text, *match.span(1)) or _rejected(text, *match.span(1)):
        return None
    letter = match.group(1)
    rest = text[match.end(1):]
    # (a line break ends the letter's sentence: "A\nHope this helps." chooses A; so does "A rather than B.")
    if letter.islower() and SAME_LINE_WORD.match(rest):  # "a cat", "d is wrong": English words
        return None
    if SAME_LINE_WORD.match(rest) and not SAME_LINE_LABEL.match(rest) and not REJECTION_AHEAD.match(rest):
        return None  # "A is wrong, B ..." starts a sentence about A, it does not choose A ("A) Paris" does)
    clause = re.split(r"[，,；;。！？!?\n]|\.(?=\s|$)", rest.lstrip(" .、:;)]）】"), maxsplit=1)[0]
    own_text = normalise_script(options[LETTERS.index(letter.upper())]).strip() if options else None
    if (re.search(r"错|不正确|不对|(?i:\bwrong\b|\bincorrect\b|\bfalse\b)", clause)
            and not (own_text and own_text in clause) and not JUDGED_LETTERS.match(clause, 0, NEARBY)):
        return None  # "A. 错误，……" judges A, it does not choose it ("A. B is wrong." judges B)
    try:
        _check_commitment(text, *match.span(1))
    except _Undecidable:  # "A、B、C、D都有道理", "A?": the later rules and the reasons decide
        return None
    return ParsedAnswer(letter.upper(), "leading_letter")


def _conclusion(text: str) -> ParsedAnswer | None:
    """The last clause ends on one letter, once trailing rejections are set aside ("是C，不是A。")."""
    found = _commitments(CONCLUSION, text, len(_without_rejection_tail(text)))
    return _decide(text, found, "conclusion", last_wins=True)


def _denies_option(clause: str, option: str) -> bool:
    """The clause ends by denying or excluding ``option``'s text: "不是北京", "而非北京。"."""
    body = clause.rstrip(" .。!！")
    return body.endswith(option) and _negated(body, len(body) - len(option))


def _without_denied_options(body: str, options: Sequence[str]) -> str:
    """``body`` less the trailing clauses that only deny an option: "是上海，不是北京" -> "是上海"."""
    while True:
        starts = [m.end() for m in CLAUSE_END.finditer(body) if m.end() < len(body)]
        if not starts or not any(option and _denies_option(body[starts[-1]:], option) for option in options):
            return body
        body = body[:starts[-1] - 1].rstrip()


def _option_text(text: str, options: Sequence[str]) -> ParsedAnswer | None:
    """The whole reply, or its last clause after 是/为/选, is exactly one option's text (not denied)."""
    options = [normalise_script(option).strip() if option else "" for option in options]
    body = _without_denied_options(re.sub(r"[\s。.!！]+$", "", text), options)
    clause = _span(body, len(body) - 1, CLAUSE_END).strip() if body else ""
    tail = re.sub(r"^.*?(?:是|为|选|(?i:\bis\b|\bchoose\b))\s*", "", clause)
    found = [LETTERS[i] for i, option in enumerate(options) if option and option in (body, tail)]
    if len(found) != 1:
        return None
    if body != options[LETTERS.index(found[0])] and _negated(clause, len(clause) - len(tail)):
        raise _Undecidable("rejected")  # "我觉得不是上海": the only option named is denied
    if HEDGE_IN_CLAUSE.search(clause):
        raise _Undecidable("hedge")
    return ParsedAnswer(found[0], "option_text")


def _elimination(text: str) -> ParsedAnswer | None:
    """Three letters judged wrong or excluded (A、B、D三项均错误; 排除A、B、D) and the fourth never named: the fourth.
    A reply that names the fourth without committing to it, or rejects fewer letters, commits to nothing."""
    mentioned = [m for m in ANY_LETTER.finditer(text) if _standalone(text, *m.span())]
    rejected = {m.group().upper() for m in mentioned if _rejected(text, *m.span())}
    if len(rejected) != 3 or {m.group().upper() for m in mentioned} != rejected:
        return None
    return ParsedAnswer(next(letter for letter in LETTERS if letter not in rejected), "elimination")


def _unparsed_reason(plain: str) -> str:
    """Why no rule decided: the standalone letters were all rejected, several, one, or none."""
    mentioned = [m for m in ANY_LETTER.finditer(plain) if _standalone(plain, *m.span())]
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
    return any(not JUDGED_LETTERS_UP_TO.search(text, max(0, doubt.start() - NEARBY), doubt.end())
               for doubt in UNCERTAIN.finditer(text))


def _parse(plain: str, options: Sequence[str] | None) -> ParsedAnswer:
    boxed = _boxed(plain)
    if boxed:
        return boxed
    if _doubts_every_option(plain):
        raise _Undecidable("hedge")
    for decide in (lambda: _decide(plain, _commitments(NEGATION, plain), "negation", last_wins=True),
                   lambda: _decide(plain, _commitments(ANSWER_PHRASE, plain), "answer_phrase", last_wins=True),
                   lambda: _leading(plain, options),
                   lambda: _decide(plain, _commitments(IS_CORRECT, plain), "is_correct", last_wins=False),
                   lambda: _conclusion(plain),
                   lambda: _option_text(plain, options) if options else None,
                   lambda: _elimination(plain)):
        parsed = decide()
        if parsed:
            return parsed
    return ParsedAnswer(None, f"unparsed:{_unparsed_reason(plain)}")


def parse_answer_with_rule(text: str | None, options: Sequence[str] | None = None) -> ParsedAnswer:
    """Parse a reply; say which rule decided it (or why nothing did)."""
    if text is None:
        return ParsedAnswer(None, "unparsed:empty")
    plain = MARKDOWN.sub("", clean_reply(text)).strip()
    if not plain:
        return ParsedAnswer(None, "unparsed:empty")
    if OPEN_ALTERNATIVE.search(plain):
        return ParsedAnswer(None, "unparsed:hedge")
    corrections = list(CORRECTION.finditer(plain))
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
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
