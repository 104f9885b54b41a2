"""Answers: one record per question, ``predictions.csv``, and the resumable answer checkpoint of an inference run.

The checkpoint is an append-only JSON-lines file whose first line is the run's identity. A checkpoint is reused
only by a run with the same identity (``run_identity.inference_identity``); any other
checkpoint is moved to ``<name>.stale`` (nothing computed is deleted) and the run starts over, naming what
changed. Records are appended through the one handle opened when the file was checked, under the run
folder's lock, each flushed to disk as it is written. A record that cannot be read back — cut short by a
``kill -9`` or a full disk, or damaged later — is moved to ``<name>.damaged`` with a warning and answered
again; the checkpoint is rewritten without it, so the next record never lands on a half-written line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from mcqtune.data.questions import ANSWER_COLUMN, LETTERS, SUBJECT_COLUMN
from mcqtune.runs.folder import unique_path
from mcqtune.files import write_atomic, write_bytes_atomic
from mcqtune.runs.identity import changed_keys

logger = logging.getLogger(__name__)

PROB_COLUMNS = tuple(f"p_{letter}" for letter in LETTERS)  # predictions.csv: the four letter probabilities
TRUE_ANSWER_COLUMN = f"true_{ANSWER_COLUMN}"  # predictions.csv: the test file's own answer, when it has one


def score_record(id_: str, probs, source: str = "score") -> dict:
    """The record of a question answered by letter scoring: the most probable letter and all four probabilities."""
    return {"ID": id_, "answer": LETTERS[int(probs.argmax())], "probs": [round(float(x), 6) for x in probs],
            "source": source}


def record_problem(record) -> str | None:
    """Why a parsed line is not a usable answer record (None when it is)."""
    if not isinstance(record, dict) or not isinstance(record.get("ID"), str):
        return "no ID"
    if record.get("answer") not in (*LETTERS, None):
        return f"answer {record.get('answer')!r}"
    probs = record.get("probs")
    if probs is not None and (not isinstance(probs, list) or len(probs) != 4):
        return "probabilities are not four numbers"
    if record.get("answer") is None and "raw" not in record:
        return "neither an answer nor a reply"
    return None


def read_lines(data: bytes) -> tuple[dict | None, list[dict], list[bytes]]:
    """(header, good records, damaged lines) of a checkpoint's bytes."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    header, records, damaged = None, [], []
    for number, line in enumerate(lines):
        try:
            value = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            value = None
        if number == 0:
            header = value if isinstance(value, dict) and "fingerprint" in value else None
            if header is None:
                damaged.append(line)
            continue
        if value is None or record_problem(value):
            damaged.append(line)
        else:
            records.append(value)
    return header, records, damaged


class PredictionStore:
    """Finished answers of one run, by ID, kept on disk as they come."""

    def __init__(self, path: str | Path, identity: dict, resume: bool = True, valid_ids: Iterable[str] | None = None):
        self.path = Path(path)
        self.identity = identity
        self.records: dict[str, dict] = {}
        self.restarted: dict | None = None
        self.damaged = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and resume:
            self._reuse_or_set_aside(set(valid_ids) if valid_ids is not None else None)
        elif self.path.exists():
            self.restarted = {"changed": ["resume false"], "old_checkpoint": str(self._move_to(".stale"))}
        if not self.path.exists():
            write_atomic(self.path, self._header_line())
        self._handle = self.path.open("ab")

    @property
    def resumed(self) -> bool:
        return self.restarted is None and bool(self.records)

    def _header_line(self) -> str:
        return json.dumps({"fingerprint": self.identity}, ensure_ascii=False) + "\n"

    def _move_to(self, suffix: str) -> Path:
        target = unique_path(self.path.with_name(self.path.name + suffix))
        os.replace(self.path, target)
        return target

    def _reuse_or_set_aside(self, valid_ids: set[str] | None) -> None:
        header, records, damaged = read_lines(self.path.read_bytes())
        if header is None:
            aside = self._move_to(".damaged")
            logger.warning("%s has no readable first line (the run's identity); set aside as %s, starting over",
                           self.path, aside)
            self.restarted = {"changed": ["damaged checkpoint"], "old_checkpoint": str(aside)}
            return
        old = header["fingerprint"]
        if old != self.identity:
            self.restarted = {"changed": changed_keys(old, self.identity),
                              "old_checkpoint": str(self._move_to(".stale"))}
            logger.warning("%s was made with another %s: starting over (old answers kept in %s)", self.path,
                           ", ".join(self.restarted["changed"]), self.restarted["old_checkpoint"])
            return
        foreign = [r for r in records if valid_ids is not None and r["ID"] not in valid_ids]
        if foreign:  # cannot happen with the same test file: the file was edited by hand
            damaged += [json.dumps(r, ensure_ascii=False).encode() for r in foreign]
            records = [r for r in records if r not in foreign]
        self.records = {r["ID"]: r for r in records}
        if damaged:
            self._set_aside_damaged(damaged)
        logger.info("resuming: %d answers already in %s", len(self.records), self.path)

    def _set_aside_damaged(self, damaged: list[bytes]) -> None:
        """Keep the unreadable lines in ``.damaged`` and rewrite the checkpoint with the good records only."""
        self.damaged = len(damaged)
        aside = unique_path(self.path.with_name(self.path.name + ".damaged"))
        write_bytes_atomic(aside, b"\n".join(damaged) + b"\n")
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records.values())
        write_atomic(self.path, self._header_line() + body)
        logger.warning("%s: %d damaged record(s) set aside in %s; those questions are answered again", self.path,
                       len(damaged), aside)

    def add(self, records: list[dict]) -> None:
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        self._handle.write(payload)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        for record in records:
            self.records[record["ID"]] = record

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


def assemble_predictions(frame: pd.DataFrame, answers: dict[str, dict]) -> pd.DataFrame:
    """predictions.csv: one row per question in input order (ID, answer, source, p_A..p_D, reply and parser rule
    in generate mode, true_answer and subject when the file has them); fails loudly if any question has none."""
    missing = [id_ for id_ in frame["ID"] if id_ not in answers or answers[id_]["answer"] is None]
    if missing:
        raise RuntimeError(f"{len(missing)} questions have no answer (first: {missing[:5]})")
    records = [answers[id_] for id_ in frame["ID"]]
    predictions = pd.DataFrame({"ID": frame["ID"], "answer": [r["answer"] for r in records],
                                "source": [r.get("source") for r in records]})
    if any("probs" in r for r in records):
        for k, column in enumerate(PROB_COLUMNS):
            predictions[column] = [r["probs"][k] if "probs" in r else None for r in records]
    if any("raw" in r for r in records):
        predictions["raw"] = [r.get("raw") for r in records]
        predictions["rule"] = [r.get("rule") for r in records]
    if any("reasoning_tokens" in r for r in records):
        predictions["reasoning_tokens"] = [r.get("reasoning_tokens") for r in records]
    if any("vote" in r for r in records):  # self-consistency: the replies' letters counted, "A:3 B:1 C:0 D:1"
        predictions["vote"] = [r.get("vote") for r in records]
        predictions["closed_replies"] = [r.get("closed_replies") for r in records]
    for column, written in ((ANSWER_COLUMN, TRUE_ANSWER_COLUMN), (SUBJECT_COLUMN, SUBJECT_COLUMN)):
        if column in frame:
            predictions[written] = list(frame[column])
    return predictions
