"""The words of the answer parser's grammar: what may stand beside an answer letter, what rejects one, what
commits to one, and what takes a commitment back -- as character lists and regular expressions that
``answer_parser``'s rules match with (the rules and their order are documented there).

Traditional Chinese is read through ``normalise_script``: a Traditional -> Simplified table of the grammar's own
characters, so one set of patterns reads both scripts. Standard library only, as answer_parser is.
"""

from __future__ import annotations

import re
import unicodedata

LETTERS = ("A", "B", "C", "D")

# --- Traditional Chinese ----------------------------------------------------------------------------------
# Traditional -> Simplified for the characters of the grammar below (patterns, hedge and uncertainty lists)
# that have a Traditional form, so one set of patterns reads both scripts. A full converter is not needed
# (only the parser's own words must match) and would break the standard-library-only rule. Characters
# outside the grammar are left as they are: ``維生素C`` and ``C語言`` stay names because 素 and 語 are not grammar.
# Both columns are checked against OpenCC's s2t / s2tw / s2hk in tests/core/test_grammar.py.
TRADITIONAL = "與兩個爲為於會內準則別併僅敘敍嗎學實對並應開當擇斷無顯沒點確種約絕觀覺計認許該誤說説這過還選錯難項擾幹"
SIMPLIFIED = "与两个为为于会内准则别并仅叙叙吗学实对并应开当择断无显没点确种约绝观觉计认许该误说说这过还选错难项扰干"
TO_SIMPLIFIED = str.maketrans(TRADITIONAL, SIMPLIFIED)

# --- what may stand next to an answer letter -------------------------------------------------------------
# A letter is a candidate only when it is not part of a word: no Latin letter or digit beside it, and a
# Chinese character beside it only when that character is grammar around a choice (选C, 是C, C项, C正确)
# or a rejection (非A, 除A外, 是C而不是A), never a word it belongs to (维生素C, C语言, A股, B超).
CJK_BEFORE_OK = "选是为项择案即以故应和或与及跟非除掉了"
# Words after which a letter stands alone although they end in a Chinese character: 只有C是对的, 剩下D.
CJK_WORDS_BEFORE_OK = ("只有", "唯有", "仅有", "只剩", "剩下", "仅剩", "剩")
CJK_AFTER_OK = "项选是正对为错不和或与及还、吧吗呢呀啊的都也均两三四等而并外以"
WORD_CHAR = re.compile(r"[A-Za-z0-9\u4e00-\u9fff]")
# An English word that names a thing with a letter: "Vitamin C", "Type A", "Hepatitis B", "Plan B".
NAMING_WORD_LIST = (
    "vitamin", "type", "hepatitis", "plan", "grade", "class", "category", "group", "section", "part", "level", "blood",
    "model", "series", "team", "route", "block", "zone", "room", "building", "gate", "row", "unit", "phase", "stage",
    "list", "appendix", "chapter", "figure", "table")
NAMING_WORDS = re.compile(r"(?i:" + "|".join(NAMING_WORD_LIST) + r")\s*$")
LONGEST_NAMING_WORD = max(map(len, NAMING_WORD_LIST))
SPACE_THEN_WORD = re.compile(r"\s+[A-Za-z]")

# --- what rejects a letter --------------------------------------------------------------------------------
# A list of letters joins them under one word: "排除A和B", "not A or B", "neither A nor B".
SEPARATOR = r"(?:[、/&+]|和|或者?|与|及|跟|以及|(?i:and|or|nor)(?![A-Za-z]))"
# A denial says the letter is not the answer: 不是A, 不应选A, 不可能是A, 并非A, 排除A, not A, isn't A, can't be A.
# 是不是A asks, 无非是A affirms, 莫非是A wonders: none of them denies.
DENIAL = (
    r"(?<!是)不(?:应该|应当|应|能|会|可能|要|该|必|用|宜|一定|可以|想|打算)?(?:是|选择?|为|等于)|"
    r"不(?:认为|觉得|相信)|并非|而非|绝非|(?<![无莫除是])非|排除(?:了|掉)?|淘汰|去掉|剔除|没有?选择?|未选择?|别选择?|"
    r"(?i:(?<![A-Za-z])(?:not|never|neither|nor|cannot|eliminat(?:e|es|ed|ing)|rul(?:e|es|ed|ing)\s+out|"
    r"rather\s+than|instead\s+of)(?![A-Za-z])|[A-Za-z]n['’]t(?![A-Za-z]))")
# An exclusion sets the letter apart (除了A, except A). Like a denial it never commits to the letter, but unlike
# a denial it does not take back an earlier commitment: "故选A，因为除了A其余说法都正确" answers A.
EXCLUSION = (
    r"除了|除去|除开|除|"
    r"(?i:(?<![A-Za-z])(?:except(?:\s+for)?|excluding|exclude[sd]?|other\s+than|apart\s+from|aside\s+from|"
    r"besides)(?![A-Za-z]))")
# Words that may stand between the denial and the letter: 不是选项A, 并非答案A, not option A, can't be the A.
FILLER = (r"(?:\s|选项|选择|选|是|为|答案|\\boxed\s*\{|\\text(?:bf)?\s*\{|[{$(\[（【:]|"
           r"(?i:option|choice|answer|the|be|is|it['’]s|it|that|choose|pick|select|go\s+with|with|for|think|"
           r"believe)(?![A-Za-z]))*")
# One letter of a list, and what joins it to the next. (Each optional word carries its own trailing spaces:
# "\s*X?\s*" would make a failing match retry every split of a long run of spaces.)
ONE_LETTER = r"[A-Da-d]\s*(?:(?:选项|项)\s*)?(?:[)\]）】]\s*)?"
THEN_NEXT = SEPARATOR + r"\s*(?:(?:选项|(?i:option))\s*)?(?:[(\[（]\s*)?"
LISTED = f"(?:{ONE_LETTER}{THEN_NEXT})*"  # the letters listed before the one looked at: "排除A和[B]"
LETTER_LIST = f"{ONE_LETTER}(?:{THEN_NEXT}{ONE_LETTER})*"
DENIED_BEFORE = re.compile(f"(?:{DENIAL}){FILLER}{LISTED}\\Z")
EXCLUDED_BEFORE = re.compile(f"(?:{EXCLUSION}){FILLER}{LISTED}\\Z")
NEARBY = 80  # characters searched around a letter for its denial or judgement: they stand close to it
# A judgement after the letter: A错误, A、B项说法均不正确, A是错的, A is wrong, A and B are incorrect.
WRONG = (
    r"错误|错的|错了|错|[✗✘×❌]|不对|不正确|不准确|不恰当|不符合?|有误|有错|不成立|不合理|不科学|不选|不是(?:正确)?答案|"
    r"不是正确的?|不是(?=\s*(?:[，,;；。.!！]|\Z))|(?:可以|应该|应|被)?排除|干扰(?:选)?项|"
    r"(?i:(?:is|are|was|were|seems?|looks?)\s+(?:also\s+|clearly\s+|definitely\s+|obviously\s+|simply\s+)?"
    r"(?:wrong|incorrect|false|invalid|not\s+(?:correct|right|true|valid|the\s+(?:correct\s+|right\s+)?answer)|"
    r"eliminated|ruled\s+out|out)(?![A-Za-z])|"
    r"isn['’]t\s+(?:correct|right|true|valid|the\s+(?:correct\s+|right\s+)?answer)(?![A-Za-z])|"
    r"can\s+be\s+(?:eliminated|ruled\s+out|excluded)(?![A-Za-z]))")
JUDGED_WRONG = re.compile(
    r"\s*(?:[)\]）】]\s*)?(?:(?:选项|项)\s*)?"
    r"(?:" + SEPARATOR + r"\s*(?:选项\s*)?[A-D]\s*(?:(?:选项|项)\s*)?(?:[)\]）】]\s*)?)*"
    r"(?:[两二三四]\s*(?:项|个选项)\s*)?(?:的\s*)?(?:(?:说法|表述|观点|描述|叙述|内容)\s*)?(?::\s*)?"
    r"(?:(?:(?:都|均|也|明显|显然|肯定|完全|本身|是)\s*)*(?:" + WRONG + r")"
    r"(?![^\S\n]*(?:选项)?[(\[（]?[A-Da-d](?![A-Za-z]))|"  # "选C不选A": 不选 denies A, it does not judge C
    # a bare verdict after a comma that ends its clause: "A，错。", "A, wrong." (not "A，错误的是B")
    r"[，,]\s*(?:" + WRONG + r"|(?i:wrong|incorrect|false)(?![A-Za-z]))(?=\s*(?:[，,;；。.!！\n]|\Z)))")
# An exclusion that follows the letter: A以外的选项, A之外, A的反面 (the letter is named only to be set aside).
EXCLUDED_AFTER = re.compile(r"\s*(?:(?:选项|项)\s*)?(?:[)\]）】]\s*)?(?:以外|之外|除外|的反面|的对立面|的相反|相反)")
# A clause right after the letter's that refutes what was just said: "有人说答案是A，这是错的", "It's A, which is
# wrong", "答案是A，但这不对".
REFUTED_AFTER = re.compile(
    r"\s*(?:(?:选项|项)\s*)?(?:[)\]）】]\s*)?[，,;；]\s*(?:(?:但是?|可是?|然而|不过|(?i:but|however))\s*[，,]?\s*)?"
    r"(?:这种说法|这个说法|该说法|这一说法|这个答案|这|那|此|(?i:which|that|this|it))\s*"
    r"(?:(?:是|显然|明显|其实|当然|(?i:is|was|['’]s|clearly|obviously))\s*)*"
    r"(?:错的|错误的?|不对的?|不正确的?|有误|不成立|(?i:wrong|incorrect|false|not\s+(?:right|correct|true))(?![A-Za-z]))")
# A trailing clause that only rejects letters: "所以是C，不是A。", "It's C rather than A.", "……是C。A错误。"
REJECTION_TAIL = re.compile(
    r"[\s，,;；:。.!！(（]*(?:(?:而|并且?|也|(?i:and|but)(?![A-Za-z]))\s*)?"
    r"(?:(?:(?i:it|this|that|the\s+answer)(?:\s+is|['’]s)?|答案|这|它)\s*)?(?:" + DENIAL + "|" + EXCLUSION + ")"
    + FILLER + LETTER_LIST + r"[)）.。!！]*\s*\Z|"
    r"[\s，,;；:。.!！]+[A-Da-d](?:" + JUDGED_WRONG.pattern + r")[的了]?[.。!！]*\s*\Z")  # (it lists letters itself)

# After a leading letter, on its line: a word starts a sentence about the letter ("A is wrong"), unless the
# letter labels its option text ("A) Paris.") or the words reject another letter ("A rather than B", "A. B错误").
SAME_LINE_WORD = re.compile(r"[^\S\n]+[A-Za-z]")
SAME_LINE_LABEL = re.compile(r"[^\S\n]+[A-Za-z]+\s*[.:]")
REJECTION_AHEAD = re.compile(r"[^\S\n]*(?:[，,;；(（]\s*)?(?:(?:而|并且?|也|(?i:and|but)(?![A-Za-z]))\s*)?(?:"
                              + DENIAL + "|" + EXCLUSION + ")" + FILLER + r"[A-Da-d](?![A-Za-z])")
# A letter and its judgement: "B is wrong" after a leading letter; "D都不正确" ending where a doubt word ends
# ("A、B、D都不正确" judges three letters, it does not say no option is right).
JUDGED_LETTERS = re.compile(r"[A-Da-d](?:" + JUDGED_WRONG.pattern + r")")
JUDGED_LETTERS_UP_TO = re.compile(r"(?<![A-Za-z])[A-D](?:" + JUDGED_WRONG.pattern + r")\Z")

# --- commitments ------------------------------------------------------------------------------------------
# Optional words carry their own trailing spaces ("\s*(?:X\s*)?", never "\s*X?\s*"): two "\s*" in a row make a
# failing match retry every split of a long run of spaces, which took seconds on "答案是" + 300 newlines.
L = r"([A-Da-d])"
OPEN = r"(?:[(\[（【]\s*)?"
BOXED = re.compile(r"\\boxed\s*\{\s*(?:\\text(?:bf)?\s*\{\s*)?\(?([A-Da-d])\)?\s*(?:\}\s*)?\}")
NEGATION = re.compile(
    r"(?:不是|并非|不选|而非|(?i:not))\s*(?:选项\s*)?\(?[A-Da-d]\)?\s*(?:(?:选项|项)\s*)?(?:[，,;；、]\s*)?"
    r"(?:而是|应该是|应是|应选|(?i:but|instead|rather))\s*(?:(?:选项|选|(?i:option))\s*)?" + OPEN + L)
ANSWER_PHRASES = [
    # 答案是C / 正确答案为：C / 答案：选C / 最终答案 C / 答案应该是C / 【答案】C
    r"答案\s*(?:[)\]）】]\s*)?(?:(?:应该|应当|应|就|也|则)\s*)?(?:(?:是|为|选|:)\s*)?(?:(?:选项|选)\s*)?(?::\s*)?"
    + OPEN + L,
    # 故选C / 所以选 C / 应选C / 我选择C  ("选项C错误" is no choice: 选 must not start 选项)
    r"选(?:择)?(?!项)\s*(?::\s*)?" + OPEN + L,
    # 正确的是C / 正确选项是C / 正确的选项为C / 正确的一项是C
    r"正确(?:的)?(?:选项|答案|一项|说法|的是)?\s*(?:是|为|:)\s*(?::\s*)?(?:选项\s*)?" + OPEN + L,
    # English: the (correct) answer is C / answer: C / [Answer] C / I would choose C / I'll go with option C
    r"(?i:(?:the\s+)?(?:correct|right|best|final)?\s*answer\s*(?:is|would\s+be|should\s+be|:|=|[)\]）】](?:\s*:)?)\s*"
    r"(?:option\s*)?)" + OPEN + L,
    r"(?i:i\s*(?:(?:would|will|'ll|'d)\s*)?(?:choose|pick|select|go\s+with)\s*(?:option\s*)?)" + OPEN + L,
    # 只剩D / 剩下的是D / 仅剩下选项D (what is left after the others were ruled out)
    r"(?:只剩|仅剩|剩下)(?:下)?\s*(?:的\s*)?(?:(?:是|为|就是|只有)\s*)?(?:选项\s*)?" + OPEN + L,
    r"(?i:(?:correct|right|best|final)\s+(?:option|choice)\s*"
    r"(?:is|would\s+be|should\s+be|:)\s*(?:option\s*)?)" + OPEN + L,
]
ANSWER_PHRASE = re.compile("|".join(f"(?:{p})" for p in ANSWER_PHRASES))
LEADING = re.compile(r"^\s*(?:(?:[(\[（【]\s*)?(?:选项|答案|答|(?i:option|answer))\s*"
                      r"(?:[)\]）】]\s*)?(?::\s*)?)?" + OPEN
                      + r"([A-Da-d])\s*[)\]）】]?"
                      r"(?=$|[\s.。、:;,，；!！)\]）】]|(?:选项|项)\s*(?:$|[.。!！]))")
IS_CORRECT = re.compile(
    r"([A-D])\s*(?:(?:选项|项)\s*)?(?:(?:是|的说法|说法)\s*)?(?:正确|对)(?!吗)|"
    r"([A-D])\s*(?i:is|was)\s+(?i:the\s+)?(?i:correct|right)(?!\s*\?)|"
    r"([A-D])\s+(?i:is\s+the\s+(?:correct\s+|right\s+|best\s+)?(?:answer|option|choice))(?!\s*\?)")
CONCLUSION = re.compile(
    r"(?:是|为|选|即|(?i:\bit's|\bit\s+is|\bso|\btherefore|\bthus|\bhence|\bmust\s+be|\bshould\s+be))\s*(?:,\s*)?(?::\s*)?"
    + OPEN + r"([A-D])\s*(?:[)\]）】]\s*)?(?:(?:项|选项)\s*)?(?:[.。!！]+\s*)?$")

# --- what takes a commitment back -------------------------------------------------------------------------
ENUM_AFTER = re.compile(r"\s*(?:[)\]）】]\s*)?(?:[、,，/&+]|和|或者?|与|及|跟|还是|以及|(?i:and|or))\s*(?:选项\s*)?"
                         r"(?:[(\[（]\s*)?([A-D])(?![A-Za-z])")
# "A、C" lists letters; "非A即C" and "不是A就是C" mean "A or C".
ENUM_BEFORE = re.compile(r"(?<![A-Za-z])([A-D])\s*(?:[)\]）】]\s*)?"
                          r"(?:[、,，/&+]|和|或者?|与|及|跟|还是|以及|(?i:and|or))"
                          r"\s*(?:选项\s*)?(?:[(\[（]\s*)?$|(?:非|不是)\s*[A-D]\s*(?:即|就是|便是)\s*$")
QUESTION_END = re.compile(r"(?:[?？]|[吗呢](?:\s*[。.])?)\s*$")
SENTENCE_END = re.compile(r"[。！？!?\n]|\.(?=\s|$)")
CLAUSE_END = re.compile(r"[，,；;：:。！？!?\n]|\.(?=\s|$)")
HEDGE_IN_CLAUSE = re.compile(  # 不可能是A is certain, not a hedge (it rejects A)
    r"(?<!不)可能|也许|或许|大概|大约|估计|猜|似乎|好像|不太确定|莫非|吧(?:\s*[。.!！])?\s*$|"
    r"(?i:\b(?:maybe|perhaps|possibly|probably|likely|might|could|guess|guessing|seems?|unsure)\b)")
UNCERTAIN = re.compile(  # 不确定性 (a physics term) is no doubt about the answer
    r"不(?:是很|太|很|大)?确定(?!性)|无法确定|不能确定|难以确定|无法判断|难以判断|不好说|拿不准|说不准|不知道|无法回答|不清楚|"
    r"没有正确答案|没有一个正确|都不正确|均不正确|"
    r"(?i:not\s+(?:(?:entirely|completely|totally|very|so|too|quite|100%)\s+)?(?:sure|certain)|uncertain|"
    r"can(?:no|')t\s+(?:determine|tell|decide|be\s+sure)|"
    r"hard\s+to\s+(?:say|tell)|don't\s+know|do\s+not\s+know|no\s+correct\s+answer)")
# A reply that corrects itself ("答案是A，错了，是B", "A. Wait, D.") is read from its last correction on; one that
# leaves another answer open anywhere ("答案是A，也可能是B", "or maybe B") gives no letter. "不对/错了" count only
# standing on their own (", 不对，"), not as a judgement of a letter ("A不对").
CORRECTION = re.compile(
    r"(?:^|[，,。.！!；;：:\s])(?:不对|错了|不)\s*[，,。.！!；;]|等等|等一下|改成|改为|改选|其实不然|"
    r"(?i:\bwait\b|just\s+kidding|scratch\s+that|on\s+second\s+thought|actually,?\s+no\b)")
OPEN_ALTERNATIVE = re.compile(r"未必|也可能|也许是|恐怕|(?i:\bor\s+maybe\b|\bor\s+perhaps\b|not\s+necessarily)")
SPECIAL_TOKEN = re.compile(r"<\|[^|>]{1,40}\|>")
ROLE_LINE = re.compile(r"^\s*(?:assistant|user|system)\s*\n")  # left by "<|im_start|>assistant\n"
THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S)
MARKDOWN = re.compile(r"[*_`#>]+")
ANY_LETTER = re.compile(r"[A-D]")


# A letter alone in quotation marks ("C", “C”, 「C」, 'C', 《C》) is read as one in brackets, (C), which every rule
# knows: a commitment, a rejection, a list or a correction reads the same either way.
QUOTED_LETTER = re.compile(r"[\"“「『'‘《]([A-Da-d])[\"”」』'’》]")


def normalise_script(text: str) -> str:
    """Fold full-width forms (NFKC), read the grammar's Traditional characters as Simplified and a quoted letter as
    a bracketed one."""
    return QUOTED_LETTER.sub(r"(\1)", unicodedata.normalize("NFKC", text).translate(TO_SIMPLIFIED))
