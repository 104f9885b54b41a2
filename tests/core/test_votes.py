"""Self-consistency (``--mode reason --samples N``, core/reasoning.py): each question's sampled replies vote;
a question stops once its leading letter can no longer lose; a tie goes to the closing letter probabilities; a
killed run resumes to the same votes; it is refused without sampling."""

import json

import numpy as np
import pandas as pd
import pytest

from mcqtune.infer.options import InferArguments
from mcqtune.core.reasoning import ReplyOptions
from mcqtune.errors import ConfigError


@pytest.mark.parametrize("counts, remaining, loses", [
    ({"A": 3}, 2, False),             # 3 against at most 2
    ({"A": 2}, 2, True),              # B could still tie at 2
    ({"A": 2, "B": 1}, 1, True),      # B could tie at 2
    ({"A": 3, "B": 1}, 1, False),
    ({"A": 1, "B": 1}, 0, True),      # a tie is not a win
])
def test_the_leader_can_still_lose(counts, remaining, loses):
    from mcqtune.core.reasoning import can_still_lose

    assert can_still_lose(counts, remaining) is loses


def scripted(letters_by_round):
    """one_reply stand-in: round r gives row i letters_by_round[r][i]; records the rows and seeds asked for."""
    calls = []

    def one_reply(rows, seed):
        round_ = len(calls)
        calls.append((list(rows), seed))
        return [{"ID": str(i), "answer": letters_by_round[round_][i], "raw": f"r{round_}-{i}", "rule": "x",
                 "source": "reason_closed" if (round_, i) == (0, 1) else "reason", "reasoning_tokens": 10,
                 "_tokens": [1, 2]} for i in rows]

    return one_reply, calls


def test_questions_stop_once_decided_and_every_round_has_its_own_seed():
    from mcqtune.core.reasoning import voter

    rounds = [["A", "A", "B"], ["A", "B", "B"], ["A", "C", "C"], ["D", "C", "D"], ["D", "C", "B"]]
    one_reply, calls = scripted(rounds)
    args = ReplyOptions(max_reasoning_tokens=8, temperature=1.0, samples=5, seed=3)
    records = voter(["q0", "q1", "q2"], one_reply, close=None, args=args)([0, 1, 2])
    # row 0: A A A after 3 rounds, 2 to come: decided; rows 1 and 2 run all five rounds
    assert [rows for rows, _ in calls] == [[0, 1, 2], [0, 1, 2], [0, 1, 2], [1, 2], [1, 2]]
    assert len({seed for _, seed in calls}) == 5
    assert [r["answer"] for r in records] == ["A", "C", "B"]
    assert [r["vote"] for r in records] == ["A:3 B:0 C:0 D:0", "A:1 B:1 C:3 D:0", "A:0 B:3 C:1 D:1"]
    assert records[0]["reasoning_tokens"] == 30 and records[1]["reasoning_tokens"] == 50
    assert records[0]["raw"] == "r0-0" and records[1]["raw"] == "r2-1"  # the first reply for the winning letter
    assert [r["closed_replies"] for r in records] == [0, 1, 0]


def test_a_tie_goes_to_the_higher_closing_probability():
    from mcqtune.core.reasoning import voter

    rounds = [["B"], ["D"]]
    one_reply, _ = scripted(rounds)
    closed = []

    def close(sequences):  # the B reply leans to D once closed, the D reply strongly to D
        closed.append([raw for _, _, raw in sequences])
        return [np.array([0.1, 0.3, 0.1, 0.5]), np.array([0.0, 0.1, 0.1, 0.8])]

    args = ReplyOptions(max_reasoning_tokens=8, temperature=1.0, samples=2)
    (record,) = voter(["q"], one_reply, close, args)([0])
    assert closed == [["r0-0", "r1-0"]]
    assert record["answer"] == "D" and record["rule"] == "vote:2-way tie" and record["vote"] == "A:0 B:1 C:0 D:1"
    assert record["probs"] == [0.05, 0.2, 0.1, 0.65]


@pytest.mark.parametrize("options, message", [
    ({"mode": "reason", "samples": 5}, "needs --mode reason and --temperature above 0"),
    ({"mode": "score", "samples": 3, "temperature": 0.0}, "got score mode"),
    ({"mode": "reason", "samples": 0, "temperature": 1.0}, "samples must be >= 1, got 0"),
])
def test_voting_without_sampling_is_refused(options, message):
    from mcqtune.infer.setup import check_args

    with pytest.raises(ConfigError, match=message):
        check_args(InferArguments(test_file="t.csv", model_path="m", **options))


@pytest.mark.slow
def test_a_vote_run_records_its_votes_and_resumes_to_them(tiny_model_dir, sample_dir, tmp_path):
    from mcqtune.infer import run as infer
    from mcqtune.model.loading import select_backend

    test_file = tmp_path / "test.csv"
    pd.read_csv(sample_dir / "test.csv", dtype=str).head(12).to_csv(test_file, index=False)

    def run():
        args = InferArguments(test_file=str(test_file), model_path=str(tiny_model_dir), mode="reason",
                              max_reasoning_tokens=5, batch_size=4, temperature=1.0, samples=3,
                              output_file=str(tmp_path / "s.csv"))
        return infer.run(args), args

    report, args = run()
    predictions = pd.read_csv(args.run_dir / "predictions.csv", dtype=str)
    counts = predictions["vote"].map(lambda v: [int(c.split(":")[1]) for c in v.split()])
    assert (predictions["source"] == "vote").all()
    assert all(2 <= sum(c) <= 3 for c in counts)  # two equal letters out of three settle it
    assert all(row.answer == "ABCD"[int(np.argmax(c))] for row, c in zip(predictions.itertuples(), counts)
               if sorted(c)[-1] > sorted(c)[-2])
    votes = report["reasoning"]["votes"]
    assert votes["questions"] == 12 and votes["replies"] == sum(map(sum, counts)) and report["samples"] == 3
    assert {k: report[k] for k in ("temperature", "seed", "max_reasoning_tokens", "repetition_penalty")} \
        == {"temperature": 1.0, "seed": 0, "max_reasoning_tokens": 5, "repetition_penalty": 1.1}
    assert report["backend"] == select_backend("auto")  # the one that ran: unsloth where installed, else hf
    # random weights run every reply out of its 5 tokens: each is closed and votes by its closing letters
    assert votes["closed_and_scored_replies"] == votes["replies"]
    assert predictions["closed_replies"].astype(int).tolist() == [sum(c) for c in counts]
    checkpoint = args.run_dir / "predictions.partial.jsonl"
    lines = checkpoint.read_text(encoding="utf-8").splitlines(keepends=True)
    checkpoint.write_text("".join(lines[:5]) + lines[5][:10], encoding="utf-8")  # killed after the first batch
    first = (tmp_path / "s.csv").read_text()
    resumed, _ = run()
    assert resumed["answered_this_run"] == 8
    assert (tmp_path / "s.csv").read_text() == first
    assert pd.read_csv(args.run_dir / "predictions.csv", dtype=str)["vote"].equals(predictions["vote"])
    assert json.loads((args.run_dir / "report.json").read_text())["reasoning"]["votes"] == votes
