"""Tiny random models of other chat-model families, each with its family's chat template and special tokens.

    mcq-tune tiny outputs/tiny-llama --family llama3      # the CLI lives in write.py

The token vocabulary is Qwen2.5's byte-level BPE (the only real vocabulary available offline, and one that
writes Chinese well); on top of it each family gets its own special tokens, BOS/EOS/pad, BOS-on-encode
behaviour and the chat template its instruct models ship (configs/chat_templates/). The model classes are
transformers' own (Qwen3, Llama, Gemma 2, Gemma 3, Mistral; Qwen2 for DeepSeek-R1-Distill-Qwen, whose template opens a
thinking block at every generation prompt), so whatever a family does differently in its
forward pass (q/k norms, embedding scaling, logit soft-capping, sliding windows) is exercised as it is.
``qwen3-14b`` is Qwen3-14B's published shape with random weights, for speed and memory measurements.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mcqtune.files import write_atomic
from mcqtune.config_files import chat_template_dir
from mcqtune.tiny.qwen import FIRST_SPECIAL_ID, QWEN25_ADDED_TOKENS, build_qwen_tokenizer, model_folder, qwen_bpe

TEMPLATES = chat_template_dir()
TINY = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, initializer_range=0.1)


@dataclass(frozen=True)
class Family:
    """What a family's tokenizer and model look like, as far as training and answering can tell."""

    config_class: str
    model_class: str
    template: str  # file under configs/chat_templates/
    added_tokens: tuple[tuple[str, bool], ...]  # (text, special) in id order from FIRST_SPECIAL_ID
    bos: str | None
    eos: str
    pad: str
    stops: tuple[str, ...]  # generation_config.eos_token_id, as the family's instruct models set it
    add_bos: bool = False  # encode(add_special_tokens=True) prepends BOS, as Llama/Gemma/Mistral tokenizers do
    tiny: dict = field(default_factory=dict)  # config fields of the tiny shape beyond TINY


FAMILIES = {
    "qwen3": Family("Qwen3Config", "Qwen3ForCausalLM", "qwen3.jinja",
                    QWEN25_ADDED_TOKENS + (("<tool_response>", False), ("</tool_response>", False),
                                           ("<think>", False), ("</think>", False)),
                    bos=None, eos="<|im_end|>", pad="<|endoftext|>", stops=("<|im_end|>", "<|endoftext|>"),
                    tiny=dict(head_dim=32, tie_word_embeddings=True)),
    "llama3": Family("LlamaConfig", "LlamaForCausalLM", "llama3.1.jinja",
                     (("<|begin_of_text|>", True), ("<|end_of_text|>", True), ("<|start_header_id|>", True),
                      ("<|end_header_id|>", True), ("<|eot_id|>", True), ("<|eom_id|>", True),
                      ("<|python_tag|>", True), ("<|finetune_right_pad_id|>", True)),
                     bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>",
                     stops=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"), add_bos=True,
                     tiny=dict(tie_word_embeddings=True)),
    "gemma2": Family("Gemma2Config", "Gemma2ForCausalLM", "gemma2.jinja",
                     (("<pad>", True), ("<eos>", True), ("<bos>", True), ("<unk>", True),
                      ("<start_of_turn>", True), ("<end_of_turn>", True)),
                     bos="<bos>", eos="<eos>", pad="<pad>", stops=("<eos>", "<end_of_turn>"), add_bos=True,
                     tiny=dict(head_dim=32, query_pre_attn_scalar=32, sliding_window=64,
                               final_logit_softcapping=30.0, attn_logit_softcapping=50.0)),
    "gemma3": Family("Gemma3TextConfig", "Gemma3ForCausalLM", "gemma3.jinja",
                     (("<pad>", True), ("<eos>", True), ("<bos>", True), ("<unk>", True),
                      ("<start_of_turn>", True), ("<end_of_turn>", True)),
                     bos="<bos>", eos="<eos>", pad="<pad>", stops=("<eos>", "<end_of_turn>"), add_bos=True,
                     tiny=dict(head_dim=32, query_pre_attn_scalar=32, sliding_window=64, sliding_window_pattern=2)),
    "mistral": Family("MistralConfig", "MistralForCausalLM", "mistral-v0.2.jinja",
                      (("<unk>", True), ("<s>", True), ("</s>", True), ("[INST]", True), ("[/INST]", True)),
                      bos="<s>", eos="</s>", pad="<unk>", stops=("</s>",), add_bos=True,
                      tiny=dict(head_dim=32, tie_word_embeddings=True)),
    # The Chinese model zoo: the families a competition that allows only models released in China leaves.
    "qwen3_5": Family("Qwen3_5TextConfig", "Qwen3_5ForCausalLM", "qwen3.5.jinja",
                      QWEN25_ADDED_TOKENS + (("<tool_response>", False), ("</tool_response>", False),
                                             ("<think>", False), ("</think>", False)),
                      bos=None, eos="<|im_end|>", pad="<|endoftext|>", stops=("<|im_end|>", "<|endoftext|>"),
                      tiny=dict(head_dim=32, tie_word_embeddings=True, layer_types=["linear_attention",
                                                                                    "full_attention"],
                                linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                                linear_value_head_dim=16)),
    "glm4": Family("Glm4Config", "Glm4ForCausalLM", "glm4.jinja",
                   (("<|endoftext|>", True), ("[MASK]", True), ("[gMASK]", True), ("[sMASK]", True), ("<sop>", True),
                    ("<eop>", True), ("<|system|>", True), ("<|user|>", True), ("<|assistant|>", True),
                    ("<|observation|>", True)),
                   bos=None, eos="<|endoftext|>", pad="<|endoftext|>",
                   stops=("<|endoftext|>", "<|user|>", "<|observation|>"), tiny=dict(head_dim=32)),
    "ernie4_5": Family("Ernie4_5Config", "Ernie4_5ForCausalLM", "ernie4.5.jinja",
                       (("<unk>", True), ("<s>", True), ("</s>", True), ("<|begin_of_sentence|>", True),
                        ("<|end_of_sentence|>", True), ("<|PAD|>", True)),
                       bos="<s>", eos="</s>", pad="<unk>", stops=("</s>", "<|end_of_sentence|>"),
                       tiny=dict(head_dim=32, tie_word_embeddings=True)),
    "hunyuan": Family("HunYuanDenseV1Config", "HunYuanDenseV1ForCausalLM", "hunyuan-dense.jinja",
                      (("<｜hy_begin▁of▁sentence｜>", True), ("<｜hy_end▁of▁sentence｜>", True),
                       ("<｜hy_pad｜>", True), ("<｜hy_User｜>", True), ("<｜hy_Assistant｜>", True),
                       ("<｜hy_place▁holder▁no▁2｜>", True), ("<｜hy_place▁holder▁no▁3｜>", True)),
                      bos="<｜hy_begin▁of▁sentence｜>", eos="<｜hy_place▁holder▁no▁2｜>", pad="<｜hy_pad｜>",
                      stops=("<｜hy_place▁holder▁no▁2｜>", "<｜hy_end▁of▁sentence｜>"), tiny=dict(head_dim=32)),
    "seed_oss": Family("SeedOssConfig", "SeedOssForCausalLM", "seed-oss.jinja",
                       (("<seed:bos>", True), ("<seed:pad>", True), ("<seed:eos>", True), ("<seed:think>", False),
                        ("</seed:think>", False), ("<seed:cot_budget_reflect>", False),
                        ("</seed:cot_budget_reflect>", False), ("<seed:tool_call>", False),
                        ("</seed:tool_call>", False)),
                       bos="<seed:bos>", eos="<seed:eos>", pad="<seed:pad>", stops=("<seed:eos>",),
                       tiny=dict(head_dim=32, attention_dropout=0.0, residual_dropout=0.0)),
    "minicpm3": Family("MiniCPM3Config", "MiniCPM3ForCausalLM", "minicpm3.jinja",
                       (("<unk>", True), ("<s>", True), ("</s>", True), ("<|im_start|>", True),
                        ("<|im_end|>", True)),
                       bos="<s>", eos="<|im_end|>", pad="<unk>", stops=("</s>", "<|im_end|>"), add_bos=True,
                       tiny=dict(q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16,
                                 v_head_dim=16, head_dim=16, num_key_value_heads=4, scale_emb=12, dim_model_base=64,
                                 scale_depth=1.4, tie_word_embeddings=True)),
    "yi": Family("LlamaConfig", "LlamaForCausalLM", "yi-1.5.jinja",
                 (("<unk>", True), ("<|startoftext|>", True), ("<|endoftext|>", True), ("<|im_start|>", True),
                  ("<|im_end|>", True), ("<|im_sep|>", True)),
                 bos="<|startoftext|>", eos="<|im_end|>", pad="<unk>", stops=("<|im_end|>", "<|endoftext|>"),
                 tiny=dict(tie_word_embeddings=False)),
}

# Families whose generation prompt opens a thinking block: they answer by reasoning only (infer.py --mode reason,
# train_grpo.py --reasoning true); the direct answer slot refuses them, so the direct-answer tests leave them out.
REASONING_FAMILIES = {
    "r1distill": Family("Qwen2Config", "Qwen2ForCausalLM", "deepseek-r1-distill-qwen.jinja",
                        (("<｜end▁of▁sentence｜>", True), ("<｜User｜>", False), ("<｜Assistant｜>", False),
                         ("<｜begin▁of▁sentence｜>", True), ("<|EOT|>", True), ("<think>", False), ("</think>", False)),
                        bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", pad="<｜end▁of▁sentence｜>",
                        stops=("<｜end▁of▁sentence｜>",), add_bos=True, tiny=dict(tie_word_embeddings=True)),
}
ALL_FAMILIES = {**FAMILIES, **REASONING_FAMILIES}

# Qwen3-14B's published config (random weights stand in for the real ones in speed and memory runs).
QWEN3_14B = dict(hidden_size=5120, intermediate_size=17408, num_hidden_layers=40, num_attention_heads=40,
                 num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                 rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.02,
                 hidden_act="silu", attention_bias=False)


# GLM-4-9B-0414's published config. Its own vocabulary has 151,552 entries; the stand-in tokenizer (Qwen2.5's BPE and
# GLM's special tokens) needs 151,653, so the shape's vocabulary is that, rounded up to 64 (151,680: +0.08%).
GLM4_9B = dict(hidden_size=4096, intermediate_size=13696, num_hidden_layers=40, num_attention_heads=32,
               num_key_value_heads=2, head_dim=128, vocab_size=151552, max_position_embeddings=32768,
               partial_rotary_factor=0.5, attention_bias=True, rope_theta=10000.0, rms_norm_eps=1e-5,
               tie_word_embeddings=False, initializer_range=0.02, hidden_act="silu")
# Qwen3.5-9B's text model: transformers' Qwen3_5TextConfig defaults (hidden 4,096, 32 layers of which every
# fourth is full attention, gated delta-net linear attention in the others, vocabulary 248,320; ~8.9B parameters).
QWEN3_5_9B = dict(initializer_range=0.02)
PUBLISHED_SHAPES = {("qwen3", "qwen3-14b"): QWEN3_14B, ("glm4", "glm4-9b"): GLM4_9B,
                    ("qwen3_5", "qwen3.5-9b"): QWEN3_5_9B}


def shapes_of(name: str) -> list[str]:
    return ["tiny"] + sorted(shape for family, shape in PUBLISHED_SHAPES if family == name)


def family_names() -> list[str]:
    """The families that answer directly (every one of them also reasons on request)."""
    return sorted(FAMILIES)


def all_family_names() -> list[str]:
    return sorted(ALL_FAMILIES)


def build_family_tokenizer(name: str):
    """Qwen2.5's BPE with the family's special tokens, template and BOS handling, built offline."""
    from tokenizers import AddedToken, processors

    family = ALL_FAMILIES[name]
    if name in ("qwen3", "qwen3_5"):  # Qwen3 extends Qwen2.5's tokenizer by four added tokens
        tokenizer = build_qwen_tokenizer(added_tokens=family.added_tokens)
    else:
        from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

        vocab, merges = qwen_bpe()
        vocab.update({text: FIRST_SPECIAL_ID + i for i, (text, _) in enumerate(family.added_tokens)})
        tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=family.bos,
                                   eos_token=family.eos, pad_token=family.pad, errors="replace",
                                   model_max_length=131072, clean_up_tokenization_spaces=False)
        tokenizer.add_tokens([AddedToken(text, special=special, normalized=False)
                              for text, special in family.added_tokens])
    for i, (text, _) in enumerate(family.added_tokens):
        if tokenizer.convert_tokens_to_ids(text) != FIRST_SPECIAL_ID + i:
            raise RuntimeError(f"{name}: special token {text} did not land on id {FIRST_SPECIAL_ID + i}")
    if family.add_bos:
        bos_id = tokenizer.convert_tokens_to_ids(family.bos)
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{family.bos}:0 $A:0", pair=f"{family.bos}:0 $A:0 {family.bos}:1 $B:1",
            special_tokens=[(family.bos, bos_id)])
    tokenizer.chat_template = (TEMPLATES / family.template).read_text()
    return tokenizer


def build_family_config(name: str, shape: str = "tiny", **overrides):
    import transformers

    family = ALL_FAMILIES[name]
    ids = {text: FIRST_SPECIAL_ID + i for i, (text, _) in enumerate(family.added_tokens)}
    vocab = FIRST_SPECIAL_ID + len(family.added_tokens)
    if (name, shape) in PUBLISHED_SHAPES:
        fields = dict(PUBLISHED_SHAPES[name, shape])
        if "vocab_size" in fields:
            fields["vocab_size"] = max(fields["vocab_size"], -(-vocab // 64) * 64)
    elif shape == "tiny":
        fields = {**TINY, "vocab_size": -(-vocab // 64) * 64, **family.tiny}
    else:
        raise ValueError(f"unknown shape {shape!r} for {name}; choose {' or '.join(shapes_of(name))}")
    special = dict(bos_token_id=ids.get(family.bos) if family.bos else None, eos_token_id=ids[family.eos],
                   pad_token_id=ids[family.pad])
    return getattr(transformers, family.config_class)(**{**fields, **special, **overrides})


def write_tiny_family(out_dir: str | Path, name: str, shape: str = "tiny", seed: int = 0, dtype: str = "float32",
                      tokenizer=None, **overrides) -> Path:
    """Save a randomly initialised model of family ``name`` with its tokenizer (built unless given) as a model
    directory."""
    import torch
    import transformers
    from transformers import GenerationConfig

    if name not in ALL_FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(all_family_names())}")
    family = ALL_FAMILIES[name]
    out_dir = Path(out_dir)
    config = build_family_config(name, shape, **overrides)
    tokenizer = tokenizer or build_family_tokenizer(name)
    torch.manual_seed(seed)
    with torch.device("cuda" if shape != "tiny" and torch.cuda.is_available() else "cpu"):
        model = getattr(transformers, family.model_class)(config).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, pad_token_id=config.pad_token_id, do_sample=False,
        eos_token_id=[tokenizer.convert_tokens_to_ids(s) for s in family.stops])
    with model_folder(out_dir) as partial:
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        write_atomic(partial / "tiny_qwen.json", json.dumps({"family": name, "shape": shape, "seed": seed,
                                                            **overrides}, indent=1))
    return out_dir
