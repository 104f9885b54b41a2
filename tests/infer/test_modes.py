"""infer/modes.py: score mode's records are the letter probabilities (divided by a letter prior when one is given,
the uncorrected ones kept beside them); generate mode's are the greedy replies as the answer parser reads them."""

import numpy as np
import pytest
import torch

from mcqtune.infer.modes import generator, scorer
from mcqtune.infer.run import InferArguments
from mcqtune.data.questions import LETTERS, load_mcq_csv
from mcqtune.model.prompts import encode_prompts


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, qwen_tokenizer, sample_dir):
    """The tiny model, six test questions and their prompts, encoded as infer.py encodes them."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    frame = load_mcq_csv(sample_dir / "test.csv").head(6)
    args = InferArguments(test_file="test.csv", model_path=str(tiny_model_dir))
    prompts = encode_prompts(qwen_tokenizer, frame, args.prompt_style, args.max_prompt_tokens)
    return model, qwen_tokenizer, frame, prompts, args


def test_score_records_are_the_letter_probabilities_and_a_prior_divides_them(tiny):
    model, tokenizer, frame, prompts, args = tiny
    rows = [0, 2, 4]
    plain = scorer(model, tokenizer, frame, prompts, args)(rows)
    assert [r["ID"] for r in plain] == [frame["ID"].iloc[i] for i in rows]
    probs = np.array([r["probs"] for r in plain])
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and {r["source"] for r in plain} == {"score"}
    assert [r["answer"] for r in plain] == [LETTERS[i] for i in probs.argmax(axis=1)]
    prior = [0.4, 0.3, 0.2, 0.1]
    corrected = scorer(model, tokenizer, frame, prompts, args, prior)(rows)
    assert np.allclose([r["probs_uncorrected"] for r in corrected], probs, atol=1e-6)
    expected = (probs / prior) / (probs / prior).sum(axis=1, keepdims=True)
    assert np.allclose([r["probs"] for r in corrected], expected, atol=1e-5)


class ReplyingModel(torch.nn.Module):
    """Stands in for a model whose greedy reply to every prompt is ``reply_ids``."""

    def __init__(self, reply_ids):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # a device to read
        self.reply_ids, self.calls = reply_ids, []

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls.append(kwargs)
        return torch.cat([input_ids, torch.tensor([self.reply_ids]).expand(len(input_ids), -1)], dim=1)


@pytest.mark.parametrize("reply, letter, rule", [("答案是C", "C", "answer_phrase"),
                                                 ("我无法确定", None, "unparsed:hedge")])
def test_generate_records_are_the_replies_as_the_parser_reads_them(tiny, reply, letter, rule):
    _, tokenizer, frame, prompts, args = tiny
    model = ReplyingModel(tokenizer.encode(reply))
    records = generator(model, tokenizer, frame, prompts, args)([1, 3])
    assert [r["ID"] for r in records] == [frame["ID"].iloc[1], frame["ID"].iloc[3]]
    expected = {"answer": letter, "raw": reply, "rule": rule, "source": "generate"}
    assert all(r == {"ID": r["ID"], **expected} for r in records)
    longest = max(len(prompts[1]), len(prompts[3]))  # left-padded to the longer prompt, then the reply's budget
    assert model.calls[0]["do_sample"] is False and model.calls[0]["max_length"] == longest + args.max_new_tokens
