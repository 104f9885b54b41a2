"""core/reasoning.py: a reasoning reply's letter is read after its reasoning (never from inside it); a reply that
commits to nothing is closed and its letters scored exactly as the model scores them there; a reasoning run resumes to
the same submission."""

import json

import pandas as pd
import pytest

from mcqtune.core.reasoning import closing_text, cut_at_stop, read_reply
from mcqtune.data.questions import PromptStyle
from mcqtune.model.prompts import build_messages, reasoned_reply

OPTIONS = ["北京", "上海", "广州", "深圳"]


@pytest.mark.parametrize("reply, opened, letter, rule", [
    ("<think>\nA项错误，B项也不对。\n</think>\n\n答案：C", False, "C", "after_thinking:answer_phrase"),
    ("先看A，A不对；C符合题意。\n</think>\n\n答案：C", True, "C", "after_thinking:answer_phrase"),  # opened by the
    # prompt (DeepSeek-R1-Distill)
    ("分析：A项错误，B项正确。\n答案：B", False, "B", "last_line:answer_phrase"),
    ("答案：A\n再想想，A忽略了条件。\n答案：D", False, "D", "last_line:answer_phrase"),  # several answers: the last
    ("答案：A\n不对，答案应为C", False, "C", "last_line:answer_phrase"),  # a corrected answer
    ("<think>\n答案是A吗？让我再想想", False, None, "unfinished:thinking"),  # an answer inside the reasoning only
    ("我认为答案是B。\n总之这题很难。", False, None, "last_line:unparsed:no_letter"),  # not in the conclusion
    ("<think>\n……\n</think>\n\n可能是A，也可能是B", False, None, "after_thinking:unparsed:hedge"),
    ("", False, None, "last_line:unparsed:empty"),
    ("<think>\n\n</think>\n\n", False, None, "after_thinking:unparsed:empty"),
])
def test_the_letter_is_read_after_the_reasoning(reply, opened, letter, rule):
    parsed = read_reply(reply, OPTIONS, finished=True, opened=opened)
    assert (parsed.letter, parsed.rule) == (letter, rule)


def test_a_reply_cut_by_its_budget_is_never_read():
    assert read_reply("分析……\n答案：B", OPTIONS, finished=False).rule == "unfinished:budget"


def test_closing_ends_an_open_thinking_block_then_writes_the_answer_prefix():
    assert closing_text("<think>\n分析", opened=False) == "\n</think>\n\n答案："
    assert closing_text("分析", opened=True) == "\n</think>\n\n答案："  # the prompt opened it
    assert closing_text("<think>\n分析\n</think>\n\n也许", opened=False) == "\n\n答案："
    assert closing_text("分析到一半", opened=False) == "\n\n答案："


def test_a_reply_ends_at_its_first_stop_token():
    assert cut_at_stop([5, 6, 9, 7, 0], stop_ids=[9, 0]) == ([5, 6], True)
    assert cut_at_stop([5, 6, 7, 8], stop_ids=[9, 0]) == ([5, 6, 7, 8], False)


def test_training_replies_take_the_templates_form():
    row = {"question": "q", "option_A": "a", "option_B": "b", "option_C": "c", "option_D": "d", "answer": "B",
           "reasoning": " 因为b对。 "}
    plain, thinking = PromptStyle(reasoning=True), PromptStyle(reasoning=True, enable_thinking=True)
    assert reasoned_reply(row["reasoning"], "B", plain) == "因为b对。\n\n答案：B"
    assert reasoned_reply(row["reasoning"], "B", thinking) == "<think>\n因为b对。\n</think>\n\n答案：B"
    user = build_messages(row, plain)[-1]["content"]
    assert user.endswith(plain.reasoning_instruction) and "答案：X" in user
    assert "单个字母" not in user and "单个字母" in build_messages(row, PromptStyle())[-1]["content"]
    assert build_messages(row, plain, with_answer=True)[-1] == {"role": "assistant",
                                                                "content": "因为b对。\n\n答案：B"}


@pytest.fixture(scope="module")
def tiny_reasoner(tiny_model_dir, qwen_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, qwen_tokenizer


def test_a_closed_reply_is_scored_as_the_models_own_forward_there(tiny_reasoner, sample_dir):
    import numpy as np
    import torch

    from mcqtune.core.reasoning import ReplyOptions, reasoner
    from mcqtune.model.prompts import closing_letter_ids
    from mcqtune.data.questions import load_mcq_csv
    from mcqtune.model.prompts import encode_prompts
    from mcqtune.model.prompts import stop_token_ids

    model, tokenizer = tiny_reasoner
    frame = load_mcq_csv(sample_dir / "test.csv").head(3)
    style = PromptStyle(reasoning=True)
    prompts = encode_prompts(tokenizer, frame, style, 512)
    stops = stop_token_ids(tokenizer, model, style)
    args = ReplyOptions(max_reasoning_tokens=6)
    compute = reasoner(model, tokenizer, frame, prompts, args, stops, opened=False)
    for i in range(3):  # random weights: every reply runs out of its 6 tokens
        (record,) = compute([i])
        assert record["source"] == "reason_closed" and record["rule"] == "unfinished:budget"
        assert record["reasoning_tokens"] == 6
        with torch.inference_mode():  # the same greedy reply, token by token (its text need not re-encode to it)
            out = model.generate(torch.tensor([prompts[i]]), max_length=len(prompts[i]) + 6, do_sample=False,
                                 eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
        reply = out[0, len(prompts[i]):].tolist()
        assert tokenizer.decode(reply) == record["raw"]
        closed = prompts[i] + reply + tokenizer.encode("\n\n答案：", add_special_tokens=False)
        with torch.inference_mode():
            logits = model(torch.tensor([closed])).logits[0, -1, closing_letter_ids(tokenizer)]
        assert np.allclose(record["probs"], torch.softmax(logits, -1).numpy(), atol=1e-5)


@pytest.mark.slow
def test_a_reasoning_run_resumes_to_the_same_submission(tiny_model_dir, sample_dir, tmp_path):
    from mcqtune.infer import run as infer

    def run(name):
        args = infer.InferArguments(test_file=str(sample_dir / "test.csv"), model_path=str(tiny_model_dir),
                                    mode="reason", max_reasoning_tokens=8, batch_size=4,
                                    output_file=str(tmp_path / "s.csv"))
        return infer.run(args), args

    report, args = run("first")
    first = (tmp_path / "s.csv").read_text()
    assert report["reasoning"]["replies"] == report["rows"]
    assert report["reasoning"]["generated_tokens"] == 8 * report["rows"]
    predictions = pd.read_csv(args.run_dir / "predictions.csv")
    assert {"raw", "rule", "reasoning_tokens"} <= set(predictions.columns)
    checkpoint = args.run_dir / "predictions.partial.jsonl"
    lines = checkpoint.read_text(encoding="utf-8").splitlines(keepends=True)
    checkpoint.write_text("".join(lines[:4]) + lines[4][:10], encoding="utf-8")  # killed mid-write after 3 answers
    resumed, _ = run("again")
    assert resumed["answered_this_run"] == report["rows"] - 3
    assert (tmp_path / "s.csv").read_text() == first
    assert json.loads((args.run_dir / "report.json").read_text())["mode"] == "reason"


def test_traces_keep_only_replies_that_committed_to_the_label():
    from mcqtune.infer.traces import keep_traces, reasoning_of

    frame = pd.DataFrame({"ID": ["1", "2", "3", "4", "5"], "answer": ["A", "B", "C", "D", "A"],
                          "subject": ["math", "math", "law", "law", "law"]})
    predictions = pd.DataFrame({
        "ID": ["4", "3", "2", "1", "5"], "answer": ["D", "A", "B", "A", "A"],
        "source": ["reason", "reason", "reason_closed", "reason", "reason"],
        "raw": ["分析丁。\n答案：D", "分析。\n答案：A", "想到一半", "<think>\n甲对。\n</think>\n\n答案：A", "A"]})
    kept, summary = keep_traces(frame, predictions)
    assert list(kept["ID"]) == ["1", "4"] and list(kept["reasoning"]) == ["甲对。", "分析丁。"]
    assert summary == {"tried": 5, "kept": 2, "closed_and_scored": 1, "wrong_answer": 1, "no_reasoning": 1,
                       "by_subject": {"law": {"tried": 3, "kept": 1}, "math": {"tried": 2, "kept": 1}}}
    assert reasoning_of("答案：B") == ""  # nothing but the answer: no reasoning to train on


def test_sampled_replies_come_from_the_seed_of_their_batch(tiny_reasoner, sample_dir):
    from mcqtune.core.reasoning import batch_seed, generate_replies
    from mcqtune.data.questions import load_mcq_csv
    from mcqtune.model.prompts import encode_prompts
    from mcqtune.model.prompts import stop_token_ids

    model, tokenizer = tiny_reasoner
    style = PromptStyle(reasoning=True)
    prompts = encode_prompts(tokenizer, load_mcq_csv(sample_dir / "test.csv").head(2), style, 512)
    stops = stop_token_ids(tokenizer, model, style)

    def sample(seed):
        return generate_replies(model, tokenizer, prompts, 8, stops, 1.0, temperature=1.0, seed=seed)

    assert sample(batch_seed(0, "1")) == sample(batch_seed(0, "1"))  # a resumed batch: the same replies
    assert sample(batch_seed(0, "1")) != sample(batch_seed(1, "1"))  # another seed: other replies
    assert batch_seed(0, "1") != batch_seed(0, "2")


def test_several_samples_keep_each_distinct_trace_once():
    from mcqtune.infer.traces import keep_traces, merge_samples

    frame = pd.DataFrame({"ID": ["1", "2"], "answer": ["A", "B"]})
    first = pd.DataFrame({"ID": ["1", "2"], "answer": ["A", "C"], "source": ["reason", "reason"],
                          "raw": ["甲对。\n答案：A", "丙。\n答案：C"]})
    second = pd.DataFrame({"ID": ["1", "2"], "answer": ["A", "B"], "source": ["reason", "reason"],
                           "raw": ["甲对。\n答案：A", "乙对。\n答案：B"]})
    kept, summary = merge_samples([keep_traces(frame, first), keep_traces(frame, second)])
    assert list(zip(kept["ID"], kept["reasoning"])) == [("1", "甲对。"), ("2", "乙对。")]
    assert summary["tried"] == 4 and summary["kept"] == 2 and summary["questions_with_a_trace"] == 2
    assert summary["wrong_answer"] == 1 and summary["samples"] == 2


@pytest.mark.slow
def test_the_traces_command_writes_a_training_file_and_its_summary(tiny_model_dir, sample_dir, tmp_path):
    from mcqtune import cli

    status = cli.main(["traces", "--model_path", str(tiny_model_dir), "--train_file", str(sample_dir / "test.csv"),
                       "--output_file", str(tmp_path / "traces.csv"), "--max_reasoning_tokens", "6",
                       "--batch_size", "8"])
    assert status == 1  # random weights: no reply reaches the label, so no training file, and a non-zero exit
    summary = json.loads((tmp_path / "traces_summary.json").read_text())
    rows = len(pd.read_csv(sample_dir / "test.csv"))
    assert summary["tried"] == rows and summary["closed_and_scored"] == rows and summary["kept"] == 0  # random
    assert not (tmp_path / "traces.csv").exists() and summary["output_file"] is None
    assert cli.main(["traces", "--model_path", str(tiny_model_dir), "--train_file", "x.csv"]) == 1  # no output
    train = tmp_path / "train.csv"
    train.write_bytes((sample_dir / "test.csv").read_bytes())
    assert cli.main(["traces", "--model_path", str(tiny_model_dir), "--train_file", str(train),
                     "--output_file", str(train)]) == 1  # never over the training file
    assert train.read_bytes() == (sample_dir / "test.csv").read_bytes()
    (tmp_path / "hand.csv").write_text("mine\n")
    assert cli.main(["traces", "--model_path", str(tiny_model_dir), "--train_file", str(train),
                     "--output_file", str(tmp_path / "hand.csv")]) == 1  # nor over a file it did not write
    assert (tmp_path / "hand.csv").read_text() == "mine\n"
    (tmp_path / "notes_summary.json").write_text("{}")  # a file of the user's where the summary would go
    assert cli.main(["traces", "--model_path", str(tiny_model_dir), "--train_file", str(train),
                     "--output_file", str(tmp_path / "notes.csv")]) == 1
    assert (tmp_path / "notes_summary.json").read_text() == "{}" and not (tmp_path / "notes_run").exists()
    assert cli.main(["traces", "--model_path", str(tiny_model_dir), "--train_file", str(train),
                     "--output_file", str(tmp_path / "t2.csv"), "--samples", "2"]) == 1  # greedy twice: refused
    assert cli.main(["traces", "--model_path", str(tiny_model_dir), "--train_file", str(train), "--output_file",
                     str(tmp_path / "t2.csv"), "--samples", "2", "--temperature", "1.0",
                     "--max_reasoning_tokens", "4", "--batch_size", "8"]) == 1  # kept none, counted
    assert sorted(p.name for p in (tmp_path / "t2_run").iterdir()) == ["sample-0", "sample-1"]
    assert json.loads((tmp_path / "t2_summary.json").read_text())["tried"] == 2 * rows
