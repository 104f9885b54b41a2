"""A CSV file's bytes -> its text: Unicode is recognised, any other encoding is used only when named, never guessed."""

from __future__ import annotations

from pathlib import Path

from mcqtune.errors import DataError


def decode_csv_bytes(path: str | Path, data: bytes, encoding: str | None = None) -> str:
    """UTF-8 (with or without BOM) or UTF-16 with BOM; anything else only with an explicit ``encoding``.

    GBK and Big5 bytes are often valid in each other's encodings, so guessing would risk mojibake: refuse
    and say how to fix it instead.
    """
    if encoding:
        try:
            text = data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as err:
            raise DataError(path, f"cannot be decoded as {encoding}: {err}") from None
        if not encoding.lower().replace("-", "").replace("_", "").startswith("utf") and not data.isascii() \
                and _is_utf8(data):
            raise DataError(path, f"is UTF-8 text; read as {encoding} it would be garbled: leave out --encoding")
        return text
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):  # before UTF-16: its BOM starts like UTF-32's
        return _decode_named(path, data, "utf-32")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _decode_named(path, data, "utf-16")
    unmarked = _unmarked_wide_unicode(data)
    if unmarked:
        return _decode_named(path, data, unmarked)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        fits = [name for name in ("gb18030", "big5") if _decodes(data, name)]
        advice = (f"it decodes without error only as {fits[0]}: pass --encoding {fits[0]}" if len(fits) == 1 else
                  "it decodes as both gb18030 (Simplified Chinese, GBK) and big5 (Traditional), so only the text can "
                  f"tell: `mcq-tune validate {path} --encoding gb18030` prints its first question as GB18030 reads "
                  "it; pass the --encoding that reads right"
                  if fits else "it is not GB18030 or Big5 either: convert it to UTF-8 first")
        raise DataError(path, f"is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); {advice} "
                        "(or convert it: iconv -f GB18030 -t UTF-8 in.csv > out.csv)", line=line) from None


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _is_utf8(data: bytes) -> bool:
    return _decodes(data.removeprefix(b"\xef\xbb\xbf"), "utf-8")


def _decode_named(path, data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataError(path, f"looks like {encoding.upper()} text but is damaged at offset {err.start}: convert it "
                        "to UTF-8 first") from None


def _unmarked_wide_unicode(data: bytes) -> str | None:
    """UTF-16 or UTF-32 without a byte order mark, recognised by its zero bytes: a CSV header is ASCII, so every
    other (UTF-16) or every fourth (UTF-32) byte of it is zero. Named, never guessed from less."""
    head = data[:64]
    if len(head) < 8 or b"\x00" not in head:
        return None
    for width, names in ((4, ("utf-32-le", "utf-32-be")), (2, ("utf-16-le", "utf-16-be"))):
        usable = len(head) - len(head) % width
        units = [head[i:i + width] for i in range(0, usable, width)]
        if all(u[1:] == b"\x00" * (width - 1) and u[0] for u in units):
            return names[0]
        if all(u[:-1] == b"\x00" * (width - 1) and u[-1] for u in units):
            return names[1]
    return None
