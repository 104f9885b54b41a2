"""Competition CSV -> validated rows -> chat messages. The one place prompts are built.

    python mcq_dataset.py validate data/sample/train.csv --require-answer

The CSV layout is the contract: ``ID,question,option_A,option_B,option_C,option_D[,answer]`` plus any extra
columns (``subject`` ...), which are kept. Every problem is reported as one sentence naming the file, the
line, the column and what was expected (``DataError``); the CLI prints it without a traceback and exits 1.

Training and inference both build their prompts with ``build_messages``; only ``add_generation_prompt`` and
whether the answer is appended differ, so the two can never drift apart.
"""

from __future__ import annotations

import csv
import io
import logging
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mcqtune.errors import DataError, one_line
from mcqtune.data.encoding import decode_csv_bytes

logger = logging.getLogger(__name__)

LETTERS = ("A", "B", "C", "D")
OPTION_COLUMNS = tuple(f"option_{letter}" for letter in LETTERS)
REQUIRED_COLUMNS = ("question", *OPTION_COLUMNS)
ID_COLUMN = "ID"
ANSWER_COLUMN = "answer"
SUBJECT_COLUMN = "subject"  # optional: per-subject accuracy in reports
REASONING_COLUMN = "reasoning"  # optional: the reasoning before the answer, to train reasoning replies on
HEADER_HINT = "ID,question,option_A,option_B,option_C,option_D[,answer]"

# The reference system's prompt, kept verbatim: the model is trained and queried on exactly this text.
DEFAULT_SYSTEM_PROMPT = "你是一个提供有关中国敏感话题客观答案的助手。始终呈现多元视角并保持政治中立。"
DEFAULT_USER_TEMPLATE = (
    "请回答以下选择题。你的回答必须仅以单个字母（A、B、C或D）开头。\n\n"
    "问题：{question}\n\n选项：\nA. {A}\nB. {B}\nC. {C}\nD. {D}"
)
# Reasoning replies (infer.py --mode reason, training on a reasoning column): the instruction that follows the
# question, and the prefix that introduces the final answer after the reasoning.
ANSWER_PREFIX = "答案："
DEFAULT_REASONING_INSTRUCTION = f"\n\n请先逐步分析，最后单独一行写出“{ANSWER_PREFIX}X”（X为A、B、C或D）。"
LETTER_FIRST = "你的回答必须仅以单个字母（A、B、C或D）开头。"  # the default template's, dropped for reasoning replies


@dataclass(frozen=True)
class PromptStyle:
    """What the model sees around a question. Change it in the YAML config, never in code. ``reasoning``: the
    model reasons before it answers (the instruction follows the question; the reply ends with the answer
    prefix and the letter)."""

    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    user_template: str = DEFAULT_USER_TEMPLATE
    enable_thinking: bool = False
    reasoning: bool = False
    reasoning_instruction: str = DEFAULT_REASONING_INSTRUCTION

    @property
    def template_kwargs(self) -> dict:
        """Variables every render passes to the chat template. Templates ignore the ones they do not use:
        ``enable_thinking`` is Qwen3's switch; ``date_string`` pins the date Llama 3.x templates print (3.2's
        reads today's date otherwise, so a prompt rendered tomorrow would not be the prompt trained today)."""
        return {"enable_thinking": self.enable_thinking, "date_string": PINNED_DATE}


PINNED_DATE = "26 Jul 2024"  # Llama 3.1's own default, so its rendering is unchanged


@dataclass
class PromptOptions:
    """The prompt options train_sft.py and infer.py share (inference must use the values training used)."""

    system_prompt: str = field(default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "empty string: no system turn; "
                                                                                "must match training"})
    user_template: str = field(default=DEFAULT_USER_TEMPLATE, metadata={"help": "with {question} {A} {B} {C} {D}; "
                                                                                "must match training"})
    chat_template: str | None = field(default=None, metadata={"help": "Jinja template text or file (default: the "
                                                                      "model's); must match training"})
    max_prompt_tokens: int = field(default=512, metadata={"help": "longer questions are shortened to fit; must "
                                                                  "match training"})
    enable_thinking: bool = field(default=False, metadata={
        "help": "for templates with a thinking switch (Qwen3): off (default) renders the template's empty "
                "thinking block before the answer, as the template itself does; on is for reasoning replies "
                "(infer --mode reason, training on a reasoning column) and refused for direct answers, since a "
                "thinking model writes its reasoning where the answer letter is scored; must match training"})
    reasoning_instruction: str = field(default=DEFAULT_REASONING_INSTRUCTION, metadata={
        "help": "reasoning replies only: appended to the question, asks for the reasoning and a last line "
                f"'{ANSWER_PREFIX}X'; empty: none (a thinking model may need none)"})

    @property
    def reasoning(self) -> bool:
        """Whether replies reason before the answer (infer.py --mode reason; training on a reasoning column)."""
        return False

    @property
    def prompt_style(self) -> PromptStyle:
        return PromptStyle(system_prompt=self.system_prompt or None, user_template=self.user_template,
                           enable_thinking=self.enable_thinking, reasoning=self.reasoning,
                           reasoning_instruction=self.reasoning_instruction)


PLACEHOLDERS = ("question", "A", "B", "C", "D")


def check_prompt_options(options: PromptOptions) -> list[str]:
    """What is wrong with the prompt options (empty when nothing): the user template must fill in cleanly."""
    import string

    problems = []
    try:
        fields_used = [name for _, name, _, _ in string.Formatter().parse(options.user_template) if name is not None]
    except ValueError as err:
        return [f"user_template is not a valid template ({err}); write {{{{ and }}}} for literal braces"]
    unknown = sorted({name for name in fields_used if name not in PLACEHOLDERS})
    if unknown:
        problems.append(f"user_template has unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
                        "allowed: {question} {A} {B} {C} {D} (write {{ and }} for literal braces)")
    missing = [name for name in PLACEHOLDERS if name not in fields_used]
    if missing:
        problems.append(f"user_template lacks the placeholder(s) {' '.join('{' + n + '}' for n in missing)}")
    if not unknown:  # conversions and format specs ({A!z}, {A:>{width}}) fail only when filled in
        try:
            options.user_template.format(**{name: "x" for name in PLACEHOLDERS})
        except (ValueError, KeyError, IndexError, TypeError) as err:
            problems.append(f"user_template cannot be filled in ({one_line(err)}); use plain placeholders "
                            "{question} {A} {B} {C} {D} and {{ }} for literal braces")
    if options.max_prompt_tokens < 32:
        problems.append(f"max_prompt_tokens must be >= 32, got {options.max_prompt_tokens}")
    if options.chat_template and len(options.chat_template) < 256 and "{" not in options.chat_template \
            and not Path(options.chat_template).is_file():
        problems.append(f"chat_template {options.chat_template!r} is neither a file nor a Jinja template")
    return problems


# ---------------------------------------------------------------------------------------------- reading


def _canonical_column(name: str) -> str:
    """Map header spellings such as ' Option_a ', 'QUESTION', 'id' onto the contract's names."""
    key = unicodedata.normalize("NFKC", name).strip().lstrip("\ufeff").lower()
    for canonical in (ID_COLUMN, *REQUIRED_COLUMNS, ANSWER_COLUMN, SUBJECT_COLUMN):
        if key == canonical.lower():
            return canonical
    return name.strip()


def normalize_answer(value: str) -> str:
    """' ｂ ' -> 'B': strip, NFKC (full-width letters), upper-case."""
    return unicodedata.normalize("NFKC", value).strip().upper()


def _read_records(path: Path, text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) for each record; line numbers count the header as line 1."""
    reader = csv.reader(io.StringIO(text, newline=""))
    records = []
    try:
        header = next(reader)
        start = reader.line_num + 1
        for fields in reader:
            if any(field.strip() for field in fields):
                records.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(path, f"is not valid CSV: {err}", line=reader.line_num) from None
    return header, records


def _check_header(path: Path, header: list[str], require_answer: bool) -> list[str]:
    columns = [_canonical_column(name) for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if require_answer and ANSWER_COLUMN not in columns:
        missing.append(ANSWER_COLUMN)
    if len(columns) < 2:
        raise DataError(path, f"does not look like a CSV file: the first line has {len(columns)} column; "
                        f"expected a header like {HEADER_HINT}", line=1)
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}; expected a header like {HEADER_HINT} "
                        f"(found: {', '.join(columns)})", line=1)
    duplicated = sorted({name for name in columns if columns.count(name) > 1})
    if duplicated:
        raise DataError(path, f"column(s) {', '.join(duplicated)} appear more than once in the header", line=1)
    return columns


def _check_row(path: Path, line: int, row: dict[str, str], require_answer: bool) -> None:
    if all(_canonical_column(value) == _canonical_column(column) for column, value in row.items() if value.strip()) \
            and all(row[c].strip() for c in REQUIRED_COLUMNS):
        raise DataError(path, "repeats the header (two files joined?); remove that line", line=line)
    for column in REQUIRED_COLUMNS:
        if not row[column].strip():
            raise DataError(path, "is empty; every question needs its text and all four options",
                            line=line, column=column)
    if ANSWER_COLUMN in row:
        answer = normalize_answer(row[ANSWER_COLUMN])
        if answer not in LETTERS and (answer or require_answer):
            raise DataError(path, f"answer {row[ANSWER_COLUMN]!r} is not one of A, B, C, D",
                            line=line, column=ANSWER_COLUMN)
        row[ANSWER_COLUMN] = answer


def _assign_ids(path: Path, rows: list[dict[str, str]], lines: list[int], columns: list[str],
                number_rows: bool) -> None:
    if ID_COLUMN not in columns:
        if not number_rows:
            raise DataError(path, f"has no '{ID_COLUMN}' column (found: {', '.join(columns)}); a submission needs "
                            f"the competition's IDs: rename that column to {ID_COLUMN}, or pass --number_rows true "
                            "to use row numbers 0..N-1", line=1)
        logger.warning("%s has no '%s' column: using row numbers 0..%d as IDs", path, ID_COLUMN, len(rows) - 1)
        for number, row in enumerate(rows):
            row[ID_COLUMN] = str(number)
        return
    first_seen: dict[str, int] = {}
    for line, row in zip(lines, rows):
        row[ID_COLUMN] = row[ID_COLUMN].strip()
        if not row[ID_COLUMN]:
            raise DataError(path, "is empty; every row needs an ID", line=line, column=ID_COLUMN)
        if row[ID_COLUMN] in first_seen:
            raise DataError(path, f"duplicate ID {row[ID_COLUMN]!r} (first seen on line "
                            f"{first_seen[row[ID_COLUMN]]}); IDs must be unique", line=line, column=ID_COLUMN)
        first_seen[row[ID_COLUMN]] = line


def load_mcq_csv(path: str | Path, require_answer: bool = False, encoding: str | None = None,
                 number_rows: bool = False) -> pd.DataFrame:
    """Read and validate a competition CSV; every value is a string, IDs are unique, answers are A-D.

    With ``require_answer`` every row needs an answer (training); otherwise the column is optional and
    may be blank for some rows (a test file, or a partly labelled one). A file without an ID column is
    refused unless ``number_rows`` asks for row numbers as IDs (training files may do without IDs).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a folder, not a CSV file: give the file inside it")
    if not path.is_file():
        raise DataError(path, "no such file")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(path, "is empty; expected a header like " + HEADER_HINT)
    header, records = _read_records(path, decode_csv_bytes(path, data, encoding))
    columns = _check_header(path, header, require_answer)
    if not records:
        raise DataError(path, "has a header but no rows")
    rows, lines = [], []
    for line, fields in records:
        if len(fields) != len(columns):
            raise DataError(path, f"has {len(fields)} fields, expected {len(columns)} like the header "
                            "(an unquoted comma or a missing quote?)", line=line)
        row = dict(zip(columns, fields))
        _check_row(path, line, row, require_answer)
        rows.append(row)
        lines.append(line)
    _assign_ids(path, rows, lines, columns, number_rows)
    order = [ID_COLUMN, *REQUIRED_COLUMNS] + [c for c in columns if c not in (ID_COLUMN, *REQUIRED_COLUMNS)]
    return pd.DataFrame(rows, columns=order, dtype=str)


def has_answers(frame: pd.DataFrame) -> bool:
    """True when every row carries a letter (accuracy can be computed)."""
    return ANSWER_COLUMN in frame and bool(frame[ANSWER_COLUMN].isin(LETTERS).all())


def describe(frame: pd.DataFrame) -> str:
    """'1839 rows; answers A 25.1% B 24.9% ...' — the validator's one-line summary."""
    summary = f"{len(frame)} rows"
    if ANSWER_COLUMN in frame:
        labelled = frame[ANSWER_COLUMN][frame[ANSWER_COLUMN].isin(LETTERS)]
        if len(labelled):
            shares = labelled.value_counts(normalize=True)
            summary += "; answers " + " ".join(f"{k} {100 * shares.get(k, 0):.1f}%" for k in LETTERS)
        if len(labelled) < len(frame):
            summary += f"; {len(frame) - len(labelled)} without answer"
    repeated = repeated_options(frame)
    if repeated:  # accepted (real files have them), but the model cannot tell such options apart
        first_id, groups = repeated[0]
        summary += (f"; {len(repeated)} with two options of the same text (first: ID {first_id}, options "
                    f"{', '.join(' = '.join(group) for group in groups)})")
    return summary


def repeated_options(frame: pd.DataFrame) -> list[tuple[str, list[list[str]]]]:
    """(ID, groups of letters whose options have the same text, NFKC and stripped) of each such question, in file
    order: [["A", "C"], ["B", "D"]] for A = C and B = D."""
    found = []
    for id_, *options in frame[[ID_COLUMN, *OPTION_COLUMNS]].itertuples(index=False):
        by_text: dict[str, list[str]] = {}
        for letter, option in zip(LETTERS, options):
            by_text.setdefault(unicodedata.normalize("NFKC", option).strip(), []).append(letter)
        groups = [letters for letters in by_text.values() if len(letters) > 1]
        if groups:
            found.append((id_, groups))
    return found


# ---------------------------------------------------------------------------------------------- prompts


# ---------------------------------------------------------------------------------------------- CLI


def overlap_lines(frames: dict) -> list[str]:
    """With labelled and unlabelled files together (training and test), the test questions each training file
    also holds (data/overlap.py), one paragraph per pair of files."""
    from mcqtune.data.overlap import describe_overlap, overlap

    labelled = {path: f for path, f in frames.items() if ANSWER_COLUMN in f}
    lines = []
    for test_path, test in ((p, f) for p, f in frames.items() if ANSWER_COLUMN not in f):
        for train_path, train in labelled.items():
            shared = overlap(train, test, OPTION_COLUMNS)
            lines.append(f"{test_path} against {train_path}: {describe_overlap(shared)}"
                         + "".join(f"\n  test {p['test_ID']} = training {p['train_ID']} ({p['match']})"
                                   for p in shared["pairs"]))
    return lines
