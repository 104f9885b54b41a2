"""Other chat-model families (Qwen3 with thinking off, Llama 3.1, Gemma 2 and 3, Mistral, and the Chinese zoo: Qwen3.5,
GLM-4, ERNIE 4.5, Hunyuan dense, Seed-OSS, MiniCPM3, Yi-1.5): the tokens in front of the answer are the same in
training and answering, the answer slot is checked, and each family trains, scores, generates, resumes and merges
on a tiny model of its own class and template."""

import numpy as np
import pandas as pd
import pytest
import torch

from mcqtune.model.prompts import ReplyTooLong, TemplateError, encode_training_example, find_answer_slot
from tests.helpers import stop_after_save, train_args
from mcqtune.data.questions import LETTERS, PINNED_DATE, PromptStyle, load_mcq_csv
from mcqtune.model.prompts import build_messages, encode_prompt, render_chat
from mcqtune.tiny.families import FAMILIES, build_family_tokenizer, family_names, write_tiny_family

NO_SYSTEM_TURN = {"gemma2", "mistral"}  # their templates refuse a system message


def style_for(family: str, **changes) -> PromptStyle:
    return PromptStyle(**({"system_prompt": None} if family in NO_SYSTEM_TURN else {}), **changes)


def system_flags(family: str) -> dict:
    return {"system_prompt": ""} if family in NO_SYSTEM_TURN else {}


@pytest.fixture(scope="module")
def tokenizers():
    return {name: build_family_tokenizer(name) for name in family_names()}


@pytest.fixture(scope="module")
def sample_rows(sample_dir):
    return load_mcq_csv(sample_dir / "train.csv", require_answer=True).head(6)


@pytest.mark.parametrize("family", family_names())
def test_training_tokens_are_the_prompt_then_the_templates_own_answer(family, tokenizers, sample_rows):
    tokenizer, style = tokenizers[family], style_for(family)
    slot = find_answer_slot(tokenizer, style)
    for letter in LETTERS:
        row = {**sample_rows.iloc[0].to_dict(), "answer": letter}
        example = encode_training_example(tokenizer, row, style)
        prompt = encode_prompt(tokenizer, row, style)
        n = len(prompt)
        assert example["input_ids"][:n] == prompt  # what infer.py scores and generates from
        assert example["completion_mask"] == [0] * n + [1] * (len(example["input_ids"]) - n)
        completion = example["input_ids"][n:]
        assert tokenizer.decode(completion[:1]).strip() == letter  # ERNIE's reply carries the prompt's last space
        assert completion[0] == slot.letter_ids[LETTERS.index(letter)]
        # the conversation as the template itself renders it, answer included, holds exactly these tokens (GLM-4's
        # closes nothing after the answer: EOS is appended)
        full = render_chat(tokenizer, build_messages(row, style, with_answer=True), style, add_generation_prompt=False)
        rendered = example["input_ids"] if slot.end_from_template else example["input_ids"][:-1]
        assert tokenizer.encode(full, add_special_tokens=False)[:len(rendered)] == rendered
        assert "<think>" not in tokenizer.decode(completion)  # the loss is never on think tags
    end = tokenizer.decode(list(slot.end_ids))
    assert end == {"qwen3": "<|im_end|>", "llama3": "<|eot_id|>", "gemma2": "<end_of_turn>",
                   "gemma3": "<end_of_turn>", "mistral": "</s>", "qwen3_5": "<|im_end|>",
                   "glm4": "<|endoftext|>", "ernie4_5": "<|end_of_sentence|>", "hunyuan": "<｜hy_place▁holder▁no▁2｜>",
                   "seed_oss": "<seed:eos>", "minicpm3": "<|im_end|>", "yi": "<|im_end|>"}[family]


def test_qwen3_scores_after_the_empty_think_block_and_refuses_thinking_on(tokenizers):
    tokenizer = tokenizers["qwen3"]
    slot = find_answer_slot(tokenizer, PromptStyle())
    assert slot.thinking_switch and slot.prompt_tail.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    with pytest.raises(TemplateError, match="<think>.*enable_thinking false"):
        find_answer_slot(tokenizer, PromptStyle(enable_thinking=True))


def test_templates_without_a_thinking_switch_say_so(tokenizers):
    for family in ("llama3", "gemma3", "mistral"):
        assert not find_answer_slot(tokenizers[family], style_for(family)).thinking_switch


@pytest.mark.parametrize("family", sorted(NO_SYSTEM_TURN))
def test_a_template_that_refuses_a_system_turn_says_how_to_fix_it(family, tokenizers):
    with pytest.raises(TemplateError, match="--system_prompt ''"):
        find_answer_slot(tokenizers[family], PromptStyle())


def test_a_date_reading_template_renders_the_pinned_date(qwen_tokenizer):
    import copy
    import datetime

    tokenizer = copy.deepcopy(qwen_tokenizer)
    tokenizer.chat_template = (  # Llama 3.2's date logic around a ChatML body
        "{%- if not date_string is defined %}{%- if strftime_now is defined %}"
        "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = 'x' %}{%- endif %}"
        "{%- endif %}<|im_start|>system\nToday Date: {{ date_string }}<|im_end|>\n"
        "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}"
        "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}")
    text = render_chat(tokenizer, [{"role": "user", "content": "问"}], PromptStyle())
    assert f"Today Date: {PINNED_DATE}" in text
    today = datetime.date.today().strftime("%d %b %Y")
    assert today not in text or today == PINNED_DATE


CHATML_USER = ("{% for m in messages %}{% if m.role == 'user' %}<|im_start|>user\n{{ m.content }}<|im_end|>\n"
               "{% elif m.role == 'assistant' %}<|im_start|>assistant\n{{ ANSWER }}{{ END }}{% endif %}"
               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{{ GEN }}{% endif %}")


def template(answer="{{ m.content }}", end="<|im_end|>\n", gen=""):
    return CHATML_USER.replace("{{ ANSWER }}", answer).replace("{{ END }}", end).replace("{{ GEN }}", gen)


@pytest.mark.parametrize("chat_template,message", [
    (template(answer="答案：{{ m.content }}"), "writes '答案：' between the generation prompt and the answer"),
    (template(answer="{{ m.content | lower }}"), "renders the prompt differently|writes"),
    (template(answer="{{ 'X' + m.content }}", gen="X"), "merges with the prompt's last token|not one token"),
])
def test_a_template_that_cannot_carry_the_answer_is_refused(qwen_tokenizer, chat_template, message):
    import copy

    tokenizer = copy.deepcopy(qwen_tokenizer)
    tokenizer.chat_template = chat_template
    with pytest.raises(TemplateError, match=message):
        find_answer_slot(tokenizer, PromptStyle(system_prompt=None))


def test_a_space_ending_the_generation_prompt_goes_with_the_answer(qwen_tokenizer):
    """ERNIE 4.5's 'Assistant: ': the prompt stops before the space, the letter is scored as ' A' (the token the
    model read in every conversation), and a reply is trained as ' A' then the end."""
    import copy

    tokenizer = copy.deepcopy(qwen_tokenizer)
    tokenizer.chat_template = template(answer="Answer: {{ m.content }}", gen="Answer: ")
    style = PromptStyle(system_prompt=None)
    slot = find_answer_slot(tokenizer, style)
    assert [tokenizer.decode([t]) for t in slot.letter_ids] == [" A", " B", " C", " D"]
    row = {"question": "问", **{f"option_{x}": x for x in LETTERS}, "answer": "B"}
    prompt = encode_prompt(tokenizer, row, style)
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\nAnswer:")
    example = encode_training_example(tokenizer, row, style)
    assert tokenizer.decode(example["input_ids"][len(prompt):]) == " B<|im_end|>"


def test_a_template_that_closes_nothing_gets_eos_and_says_so(qwen_tokenizer):
    import copy

    tokenizer = copy.deepcopy(qwen_tokenizer)
    tokenizer.chat_template = template(end="")
    slot = find_answer_slot(tokenizer, PromptStyle(system_prompt=None))
    assert slot.end_ids == (tokenizer.eos_token_id,) and not slot.end_from_template
    assert "EOS appended" in slot.describe(tokenizer, PromptStyle(system_prompt=None))


class TinyFamilies(dict):
    """Each family's tiny model, written the first time a test asks for it (a worker builds only its own)."""

    def __init__(self, tmp_path_factory):
        super().__init__()
        self.tmp_path_factory = tmp_path_factory

    def __missing__(self, name):
        self[name] = write_tiny_family(self.tmp_path_factory.mktemp(name), name)
        return self[name]


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    return TinyFamilies(tmp_path_factory)


@pytest.mark.parametrize("family", family_names())
def test_scores_are_the_models_own_next_token_probabilities(family, family_models, sample_rows):
    """Scoring reads the output layer directly (and reuses the template prefix's keys and values): it must
    give what the model's own forward gives, soft-capping (Gemma 2) and sliding windows included."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mcqtune.core.scoring import score_frame

    tokenizer = AutoTokenizer.from_pretrained(family_models[family])
    model = AutoModelForCausalLM.from_pretrained(family_models[family], dtype=torch.float32).eval()
    style = style_for(family)
    letters = list(find_answer_slot(tokenizer, style).letter_ids)
    with torch.no_grad():
        expected = np.array([torch.softmax(model(torch.tensor([encode_prompt(tokenizer, row, style)])).logits[0, -1],
                                           -1)[letters].numpy() for _, row in sample_rows.iterrows()])
    expected = expected / expected.sum(1, keepdims=True)
    for share_prefix in (True, False):
        got = score_frame(model, tokenizer, sample_rows, style, batch_size=4, share_prefix=share_prefix)
        np.testing.assert_allclose(got, expected, atol=2e-4)


@pytest.mark.parametrize("family", family_names())
def test_the_tiny_family_is_its_own_class(family, family_models):
    import json

    config = json.loads((family_models[family] / "config.json").read_text())
    assert config["architectures"] == [FAMILIES[family].model_class]


# ---------------------------------------------------------------------------------------------- end to end


def one_family_per_class() -> list[str]:
    """Yi-1.5 is Llama's class with its own template (checked above): the run below is Llama 3.1's."""
    first = {}
    for name in family_names():
        first.setdefault(FAMILIES[name].model_class, name)
    return sorted(first.values())


@pytest.mark.slow
@pytest.mark.parametrize("family", one_family_per_class())
def test_family_trains_answers_resumes_and_merges(family, family_models, sample_dir, tmp_path):
    from mcqtune.infer import run as infer
    from mcqtune.train import run as train_run
    from mcqtune.train import sft as train_sft

    flags = [f"--{k}={v}" for k, v in system_flags(family).items()]
    short = ["--max_steps", 4, "--save_steps", 2, "--eval_steps", 2, "--max_train_samples", 64, *flags]
    whole = tmp_path / "whole"
    summary = train_sft.run(*train_args(family_models[family], sample_dir / "train.csv", whole, *short,
                                         "--export", "merged", "--merged_dtype", "float32"))
    assert summary["steps"] == 4
    assert all(np.isfinite(e["eval_loss"]) for e in summary["log_history"] if "eval_loss" in e)
    slot = find_answer_slot(build_family_tokenizer(family), style_for(family))
    assert summary["answer_slot"] == slot.describe(build_family_tokenizer(family), style_for(family))

    resumed = tmp_path / "resumed"
    with stop_after_save(train_run, 2):
        train_sft.run(*train_args(family_models[family], sample_dir / "train.csv", resumed, *short))
    assert (resumed / "checkpoint-2").is_dir()
    train_sft.run(*train_args(family_models[family], sample_dir / "train.csv", resumed, *short, "--resume", "true"))
    test_file = tmp_path / "test.csv"  # 40 questions: every path runs, in a fraction of the file's time
    pd.read_csv(sample_dir / "test_no_answer.csv", dtype=str).head(40).to_csv(test_file, index=False)
    answers = {}
    for name, model_path, mode in (("adapter", whole / "adapter", "score"), ("merged", whole / "merged", "score"),
                                   ("generate", whole / "adapter", "generate")):
        out = tmp_path / f"{name}.csv"
        infer.run(infer.InferArguments(test_file=str(test_file), model_path=str(model_path), output_file=str(out),
                                        batch_size=8, mode=mode, max_new_tokens=4 if mode == "generate" else 48,
                                        load_in_4bit=False,
                                        **system_flags(family)))
        submission = pd.read_csv(out, dtype=str)
        assert list(submission["ID"]) == list(load_mcq_csv(test_file)["ID"])
        answers[name] = submission
    assert answers["adapter"]["answer"].isin(list(LETTERS)).all()
    replies = pd.read_csv(tmp_path / "generate_run" / "predictions.csv", dtype=str, keep_default_na=False)
    assert "raw" in replies and answers["generate"]["answer"].isin(list(LETTERS)).all()  # unreadable: scored
    probs = {n: pd.read_csv(tmp_path / f"{n}_run" / "predictions.csv", dtype={"ID": str})
             for n in ("adapter", "merged")}
    cols = [f"p_{x}" for x in LETTERS]
    np.testing.assert_allclose(probs["adapter"][cols].to_numpy(), probs["merged"][cols].to_numpy(), atol=1e-3)

    from safetensors.torch import load_file

    a, b = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (whole, resumed))
    assert a.keys() == b.keys()
    gap = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert gap < 1e-6, f"a resumed run does not end with the uninterrupted run's adapter (largest difference {gap:.2g})"



@pytest.mark.slow
def test_a_qwen3_gguf_scores_like_transformers(family_models, sample_rows, tmp_path):
    """llama.cpp's converter supports Qwen3: the GGUF of the tiny Qwen3 gives the letter logits of the model
    (the other families' tiny tokenizers borrow Qwen's vocabulary, which the converter does not recognise under
    their names, so their GGUF is not checked here)."""
    pytest.importorskip("llama_cpp")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mcqtune.export import llama_child
    from mcqtune.export.gguf import convert_to_gguf

    path = family_models["qwen3"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    gguf = convert_to_gguf(path, tmp_path / "qwen3-f32.gguf", "f32")
    letters = list(find_answer_slot(tokenizer, PromptStyle()).letter_ids)
    prompts = [encode_prompt(tokenizer, row) for _, row in sample_rows.iterrows()]
    scores = llama_child.letter_logits(gguf, prompts, letters)  # llama.cpp in a child process
    for ids, got in zip(prompts, scores):
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[0, -1, letters].numpy()
        np.testing.assert_allclose(np.asarray(got), expected, atol=2e-3, rtol=1e-3)


def test_infer_refuses_a_thinking_template_before_any_weights_load(family_models, sample_dir, tmp_path, monkeypatch):
    from mcqtune.infer import loading, run as infer

    monkeypatch.setattr(loading, "load_inference_model", lambda *a, **k: pytest.fail("weights were loaded"))
    args = infer.InferArguments(test_file=str(sample_dir / "test.csv"), model_path=str(family_models["qwen3"]),
                                output_file=str(tmp_path / "sub.csv"), enable_thinking=True)
    with pytest.raises(TemplateError, match="enable_thinking false"):
        infer.run(args)
    assert not (tmp_path / "sub.csv").exists()


@pytest.mark.parametrize("family", ["qwen3", "llama3"])
@pytest.mark.parametrize("thinking", [False, True])
def test_training_on_reasoning_puts_the_loss_on_exactly_the_reasoning_and_the_answer(family, thinking, tokenizers,
                                                                                     sample_rows):
    tokenizer = tokenizers[family]
    if thinking and family != "qwen3":
        pytest.skip("only Qwen3's template has a thinking switch")
    style = style_for(family, reasoning=True, enable_thinking=thinking)
    row = {**sample_rows.iloc[0].to_dict(), "answer": "C", "reasoning": "甲、乙都不符合题意，丙符合。"}
    example = encode_training_example(tokenizer, row, style, max_answer_tokens=200)
    prompt = encode_prompt(tokenizer, row, style)
    assert example["input_ids"][:len(prompt)] == prompt and prompt[-1] == example["input_ids"][len(prompt) - 1]
    assert example["completion_mask"] == [0] * len(prompt) + [1] * (len(example["input_ids"]) - len(prompt))
    completion = tokenizer.decode(example["input_ids"][len(prompt):])
    end = {"qwen3": "<|im_end|>", "llama3": "<|eot_id|>"}[family]
    said = "甲、乙都不符合题意，丙符合。"
    reasoning = f"<think>\n{said}\n</think>\n\n" if thinking else f"{said}\n\n"
    assert completion == f"{reasoning}答案：C{end}"  # the reasoning, the answer prefix, the letter, the end
    with pytest.raises(ReplyTooLong, match="set --max_answer_tokens"):  # never cut: its answer comes last
        encode_training_example(tokenizer, row, style, max_answer_tokens=5)
