"""core/varlen.py's kernel run by Triton's interpreter on the CPU. Triton reads TRITON_INTERPRET when it is first
imported, so these run in a process of their own: test_varlen.py starts pytest on this file with it set."""

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run by test_varlen.py under TRITON_INTERPRET=1", allow_module_level=True)

from mcqtune.core import varlen  # noqa: E402


def packed(q_lengths, k_lengths, heads, kv_heads, dim, dtype, padding=0):
    cu_q = torch.tensor([0, *torch.tensor(q_lengths).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(k_lengths).cumsum(0).tolist()], dtype=torch.int32)
    query = torch.randn(int(cu_q[-1]) + padding, heads, dim, dtype=dtype)
    key = torch.randn(int(cu_k[-1]), kv_heads, dim, dtype=dtype)
    return query, key, torch.randn_like(key), cu_q, cu_k


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("q_lengths, k_lengths, heads, kv_heads, dim", [
    ([1, 1, 1], [5, 70, 130], 4, 2, 32),  # decoding steps, one reply longer than two blocks of keys
    ([3, 1, 0, 2], [3, 40, 0, 66], 10, 2, 40),  # a prompt, decoding, a padded reply, a chunk; 5 heads a group
    ([7, 1], [7, 9], 7, 1, 16),  # one key/value head for all
    ([1] * 20, list(range(1, 21)), 8, 8, 64),  # no grouping, many replies
])
def test_the_kernel_computes_each_replys_causal_attention(q_lengths, k_lengths, heads, kv_heads, dim, dtype):
    torch.manual_seed(len(q_lengths) * dim)
    query, key, value, cu_q, cu_k = packed(q_lengths, k_lengths, heads, kv_heads, dim, dtype)
    got = varlen.varlen_attention(query, key, value, cu_q, cu_k, dim ** -0.5)
    want = varlen.reference_attention(query.float(), key.float(), value.float(), cu_q, cu_k, dim ** -0.5)
    assert got.dtype == dtype and got.shape == query.shape
    torch.testing.assert_close(got.float(), want, rtol=1e-3, atol=1e-5 if dtype == torch.float32 else 2e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_keys_read_in_place_through_a_row_index_equal_the_packed_ones(dtype):
    """A paged cache holds the keys in blocks anywhere in its pages; the kernel reads them through the step's read
    index, as transformers' update would have copied them out."""
    torch.manual_seed(4)
    query, key, value, cu_q, cu_k = packed([2, 1, 1], [9, 70, 5], 10, 2, 32, dtype)
    rows = torch.randperm(300)[:key.shape[0]]
    key_cache, value_cache = torch.randn(300, 2, 32, dtype=dtype), torch.randn(300, 2, 32, dtype=dtype)
    key_cache[rows], value_cache[rows] = key, value
    got = varlen.varlen_attention(query, key_cache, value_cache, cu_q, cu_k, 0.2, rows)
    torch.testing.assert_close(got, varlen.varlen_attention(query, key, value, cu_q, cu_k, 0.2))


def test_a_step_padded_as_continuous_batching_pads_it_for_a_cuda_graph():
    """Padding replies of no tokens (the cumulative lengths flat at the end), padding query tokens, and a read index
    padded with the cache's trash row: the real replies' attention is unchanged and the padding gets zeros."""
    torch.manual_seed(5)
    query, key, value, cu_q, cu_k = packed([1, 1], [5, 4], 4, 2, 32, torch.float32, padding=2)
    rows = torch.randperm(40)[:9]
    key_cache, value_cache = torch.randn(40, 2, 32), torch.randn(40, 2, 32)
    key_cache[rows], value_cache[rows] = key, value
    flat_q, flat_k = torch.cat([cu_q, cu_q[-1:].repeat(2)]), torch.cat([cu_k, cu_k[-1:].repeat(2)])
    trash = torch.cat([rows, torch.zeros(7, dtype=rows.dtype)])
    got = varlen.varlen_attention(query, key_cache, value_cache, flat_q, flat_k, 0.2, trash)
    torch.testing.assert_close(got[:2], varlen.reference_attention(query[:2], key, value, cu_q, cu_k, 0.2))
    assert torch.equal(got[2:], torch.zeros_like(got[2:]))


def test_tokens_past_the_last_reply_get_zeros():
    """A step replayed as a CUDA graph is padded to a fixed number of tokens; the padding belongs to no reply."""
    torch.manual_seed(3)
    query, key, value, cu_q, cu_k = packed([2, 1], [4, 6], 4, 2, 32, torch.float32, padding=5)
    got = varlen.varlen_attention(query, key, value, cu_q, cu_k, 0.2)
    assert torch.equal(got[3:], torch.zeros_like(got[3:]))
    torch.testing.assert_close(got[:3], varlen.reference_attention(query, key, value, cu_q, cu_k, 0.2)[:3])


def test_continuous_batching_through_the_kernel_gives_generates_greedy_replies(tiny_model_dir, qwen_tokenizer,
                                                                               sample_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from mcqtune.core.reasoning import generate_replies
    from mcqtune.data.questions import PromptStyle, load_mcq_csv
    from mcqtune.model.prompts import encode_prompts

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    frame = load_mcq_csv(sample_dir / "test.csv").head(6)
    prompts = encode_prompts(qwen_tokenizer, frame, PromptStyle(reasoning=True), 512)
    launched = []
    kernel = varlen._kernel(True)
    monkeypatch.setattr(varlen, "_kernel", lambda interpret: launched.append(interpret) or kernel)
    monkeypatch.setattr(varlen, "reference_attention", None)  # the kernel, or a failure
    stops = [qwen_tokenizer.pad_token_id]
    padded = generate_replies(model, qwen_tokenizer, prompts, 10, stops, repetition_penalty=1.0)
    packed_replies = generate_replies(model, qwen_tokenizer, prompts, 10, stops, repetition_penalty=1.0,
                                      engine="continuous", attention="varlen")
    assert packed_replies == padded
    assert len(launched) >= model.config.num_hidden_layers * 10  # every layer, prompts and each decoding step
    assert model.config._attn_implementation == "sdpa"  # restored


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])  # the interpreter has no bfloat16
def test_an_fp8_cache_is_read_as_its_values_in_the_queries_type(dtype):
    """--kv_cache_dtype fp8: keys and values kept in float8 e4m3, read in place through the row index (masked
    lanes included: Triton cannot fill them with a cast 0); the result is attention over the cache widened."""
    torch.manual_seed(6)
    query, *_, cu_q, cu_k = packed([1, 1, 3], [40, 70, 19], 4, 2, 32, dtype)
    rows = torch.randperm(300)[:int(cu_k[-1])]
    key_cache = torch.randn(300, 2, 32).to(torch.float8_e4m3fn)
    value_cache = torch.randn(300, 2, 32).to(torch.float8_e4m3fn)
    got = varlen.varlen_attention(query, key_cache, value_cache, cu_q, cu_k, 0.2, rows)
    want = varlen.reference_attention(query.float(), key_cache[rows].float(), value_cache[rows].float(), cu_q, cu_k,
                                      0.2)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)
