"""core/grammar.py: the Traditional->Simplified table covers every character of the grammar, one to one, and
reads hand-written and OpenCC-converted Traditional grammar words as the parser's own."""

import re
import unicodedata

import pytest

from mcqtune.core import grammar as answer_grammar
from tests.helpers import TO_TRADITIONAL, needs_opencc


def _grammar_sources():
    """Every pattern and word list the parser matches with (the table must cover their characters)."""
    for name, value in vars(answer_grammar).items():
        if name in ("TRADITIONAL", "SIMPLIFIED", "LETTERS") or not name.isupper():
            continue
        if isinstance(value, re.Pattern):
            yield value.pattern
        elif isinstance(value, str):
            yield value
        elif isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            yield from value


def _grammar_characters():
    return sorted({char for source in _grammar_sources() for char in source if "\u4e00" <= char <= "\u9fff"})


def test_table_is_a_one_to_one_character_map():
    assert len(answer_grammar.TRADITIONAL) == len(answer_grammar.SIMPLIFIED) == len(set(answer_grammar.TRADITIONAL))
    # a Traditional character that is itself grammar would be rewritten into another word
    assert not set(answer_grammar.TRADITIONAL) & set(_grammar_characters())


# The grammar's words in Traditional script, written by hand (the check that runs without opencc).
TRADITIONAL_GRAMMAR_WORDS = [
    ("選擇", "选择"), ("答案為", "答案为"), ("答案爲", "答案为"), ("答案則是", "答案则是"), ("應當", "应当"),
    ("應選", "应选"), ("C項", "C项"), ("兩項", "两项"), ("一個", "一个"), ("A與B", "A与B"), ("還是", "还是"),
    ("是C嗎", "是C吗"), ("不對", "不对"), ("錯誤", "错误"), ("有誤", "有误"), ("不科學", "不科学"), ("內容", "内容"),
    ("敘述", "叙述"), ("敍述", "叙述"), ("觀點", "观点"), ("顯然", "显然"), ("並非", "并非"), ("絕非", "绝非"),
    ("等於", "等于"), ("不會選", "不会选"), ("不該選", "不该选"), ("沒有選", "没有选"), ("別選", "别选"),
    ("除開", "除开"), ("不認為", "不认为"), ("不覺得", "不觉得"), ("無法確定", "无法确定"), ("難以判斷", "难以判断"),
    ("不好說", "不好说"), ("説不準", "说不准"), ("拿不準", "拿不准"), ("也許", "也许"), ("或許", "或许"),
    ("估計", "估计"), ("大約", "大约"), ("這", "这"),
]


@pytest.mark.parametrize("traditional,simplified", TRADITIONAL_GRAMMAR_WORDS)
def test_table_reads_hand_written_traditional_grammar_words(traditional, simplified):
    assert answer_grammar.normalise_script(traditional) == simplified
    assert set(simplified) - set("ABC") <= set(_grammar_characters())  # the words are the parser's own


def test_full_width_and_traditional_are_normalised_together():
    assert answer_grammar.normalise_script("正確選項為：Ｃ") == "正确选项为:C"


@needs_opencc
def test_table_covers_every_grammar_character_opencc():
    characters = _grammar_characters()
    assert len(characters) > 50  # the sources were found
    for convert in TO_TRADITIONAL:
        for char in characters:
            assert answer_grammar.normalise_script(convert.convert(char)) == char, (char, convert.convert(char))
        for source in _grammar_sources():  # words convert in context (并非 -> 並非), so whole sources too
            assert answer_grammar.normalise_script(convert.convert(source)) == unicodedata.normalize("NFKC", source)
