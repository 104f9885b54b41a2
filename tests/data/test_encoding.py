"""data/encoding.py: Unicode files are read, other encodings only when named (refused, never guessed)."""

import pytest

from mcqtune.errors import DataError
from tests.helpers import GOOD_ROWS, HEADER, write
from mcqtune.data.questions import load_mcq_csv


def test_utf8_bom_is_accepted(tmp_path):
    frame = load_mcq_csv(write(tmp_path, "\ufeff" + HEADER + GOOD_ROWS))
    assert list(frame.columns)[:2] == ["ID", "question"]


@pytest.mark.parametrize("encoding", ["gbk", "big5"])
def test_other_encodings_are_refused_not_garbled(tmp_path, encoding):
    text = HEADER + "1,臺灣的首都是哪裡？,臺北,高雄,臺中,臺南,A,geo\n"
    path = write(tmp_path, text, encoding=encoding)
    advice = {"gbk": "only as gb18030: pass --encoding gb18030", "big5": "both gb18030 .* and big5"}[encoding]
    with pytest.raises(DataError, match=rf"not UTF-8.*{advice}"):  # never a guess between the two
        load_mcq_csv(path)
    frame = load_mcq_csv(path, encoding=encoding)  # with the right encoding named it reads correctly
    assert frame.loc[0, "option_A"] == "臺北"


def test_a_utf8_file_read_with_another_encoding_is_refused(tmp_path):
    path = write(tmp_path, HEADER + "1,臺灣的首都是哪裡？,臺北,高雄,臺中,臺南,A,geo\n")
    with pytest.raises(DataError, match="is UTF-8 text; read as latin-1 it would be garbled"):
        load_mcq_csv(path, encoding="latin-1")
    assert load_mcq_csv(path, encoding="utf-8").loc[0, "option_A"] == "臺北"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-32"])
def test_utf16_and_utf32_are_recognised_with_or_without_a_byte_order_mark(tmp_path, encoding):
    frame = load_mcq_csv(write(tmp_path, HEADER + GOOD_ROWS, encoding=encoding), require_answer=True)
    assert list(frame["ID"]) == ["1", "2", "3"] and frame["question"].iat[0] == "中国的首都是哪里？"


def test_a_repeated_header_line_is_refused_with_its_line_number(tmp_path):
    with pytest.raises(DataError, match=r"line 3: repeats the header"):
        load_mcq_csv(write(tmp_path, HEADER + GOOD_ROWS.splitlines(keepends=True)[0] + HEADER + GOOD_ROWS))
