"""runs/predictions.py: answers reused only under the same identity; damaged records set aside, never a crash."""

import json
import os

from mcqtune.runs.predictions import PredictionStore

IDENTITY = {"format": 3, "test_file": {"bytes_sha256": "abc"}}


def record(id_, answer="A"):
    return {"ID": id_, "answer": answer, "probs": [0.7, 0.1, 0.1, 0.1], "source": "score"}


def test_identical_run_resumes_and_another_run_starts_over_keeping_the_old_answers(tmp_path):
    path = tmp_path / "p.jsonl"
    store = PredictionStore(path, IDENTITY)
    store.add([record("1"), record("2", "B")])
    store.close()
    again = PredictionStore(path, IDENTITY)
    assert again.resumed and set(again.records) == {"1", "2"} and again.records["2"]["answer"] == "B"
    again.close()
    other = PredictionStore(path, {**IDENTITY, "encoding": "big5"})
    assert other.records == {} and other.restarted["changed"] == ["encoding"]
    assert (tmp_path / "p.jsonl.stale").read_text().count("\n") == 3  # header + two answers kept aside
    other.close()


def test_a_record_cut_mid_character_is_set_aside_and_the_next_answer_lands_on_its_own_line(tmp_path):
    path = tmp_path / "p.jsonl"
    store = PredictionStore(path, IDENTITY)
    store.add([record("1"), {**record("2"), "raw": "答案是B"}])
    store.close()
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex("答".encode()) + 1])  # a full disk / kill -9 in the middle of a character
    resumed = PredictionStore(path, IDENTITY)
    assert set(resumed.records) == {"1"} and resumed.damaged == 1
    assert (tmp_path / "p.jsonl.damaged").is_file()
    resumed.add([record("2", "C")])
    resumed.close()
    again = PredictionStore(path, IDENTITY)
    assert again.damaged == 0 and again.records["2"]["answer"] == "C"


def test_a_damaged_header_or_malformed_records_never_crash_a_rerun(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\xff\xfe garbage\n" + json.dumps(record("1")).encode() + b"\n")
    store = PredictionStore(path, IDENTITY)
    assert store.records == {} and store.restarted["changed"] == ["damaged checkpoint"]
    store.add([record("1")])
    store.close()
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"ID": "2", "answer": "E"}) + "\n")  # not a letter
        handle.write(json.dumps({"answer": "A"}) + "\n")  # no ID
        handle.write(json.dumps(record("99")) + "\n")  # not a question of this test file
    again = PredictionStore(path, IDENTITY, valid_ids=["1", "2"])
    assert set(again.records) == {"1"} and again.damaged == 3


def test_answers_go_through_the_handle_that_was_checked(tmp_path):
    path = tmp_path / "p.jsonl"
    store = PredictionStore(path, IDENTITY)
    os.replace(path, tmp_path / "moved.jsonl")  # someone renames the file under the run
    store.add([record("1")])
    store.close()
    assert not path.exists() and '"ID": "1"' in (tmp_path / "moved.jsonl").read_text()


def test_resume_false_keeps_the_old_checkpoint_aside(tmp_path):
    path = tmp_path / "p.jsonl"
    store = PredictionStore(path, IDENTITY)
    store.add([record("1")])
    store.close()
    fresh = PredictionStore(path, IDENTITY, resume=False)
    assert fresh.records == {} and (tmp_path / "p.jsonl.stale").is_file()
    fresh.close()
