"""core/varlen.py: attention over packed replies, each reading only its own cache (the kernel itself is checked
under Triton's interpreter in a process of its own, interpreted_varlen.py), and where --paged_attention varlen is
refused."""

import pytest

from mcqtune.errors import ConfigError
from tests.helpers import run_interpreted


@pytest.mark.slow
def test_the_kernel_under_tritons_interpreter(tmp_path):
    run_interpreted("interpreted_varlen.py", tmp_path)


def test_the_reference_is_each_replys_causal_softmax_attention():
    """Written out per token and head: softmax over the reply's keys up to the token's own position, with the
    key/value head its query head shares."""
    import torch

    from mcqtune.core.varlen import reference_attention

    torch.manual_seed(0)
    cu_q, cu_k = torch.tensor([0, 3, 4, 4, 6]), torch.tensor([0, 3, 9, 9, 14])
    heads, kv_heads, dim = 6, 2, 8
    query = torch.randn(6, heads, dim, dtype=torch.float64)
    key, value = (torch.randn(14, kv_heads, dim, dtype=torch.float64) for _ in range(2))
    got = reference_attention(query, key, value, cu_q, cu_k, 0.3)
    for reply in range(4):
        q0, q1, k0, k1 = int(cu_q[reply]), int(cu_q[reply + 1]), int(cu_k[reply]), int(cu_k[reply + 1])
        for i, token in enumerate(range(q0, q1)):
            seen = (k1 - k0) - (q1 - q0) + i + 1  # keys before and at the token's position
            for head in range(heads):
                shared = head // (heads // kv_heads)
                weights = torch.softmax(key[k0:k0 + seen, shared] @ query[token, head] * 0.3, dim=0)
                torch.testing.assert_close(got[token, head], weights @ value[k0:k0 + seen, shared])


def test_continuous_replies_with_varlen_attention_are_generates_greedy_replies(tiny_model_dir, qwen_tokenizer,
                                                                               sample_dir, monkeypatch):
    """On a CPU the varlen attention runs reference_attention: the same replies, and the model's own attention
    implementation afterwards."""
    import torch
    from transformers import AutoModelForCausalLM

    from mcqtune.core import varlen
    from mcqtune.core.reasoning import generate_replies
    from mcqtune.data.questions import PromptStyle, load_mcq_csv
    from mcqtune.model.prompts import encode_prompts

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    frame = load_mcq_csv(sample_dir / "test.csv").head(5)
    prompts = encode_prompts(qwen_tokenizer, frame, PromptStyle(reasoning=True), 512)
    stops = [qwen_tokenizer.pad_token_id]
    padded = generate_replies(model, qwen_tokenizer, prompts, 8, stops, repetition_penalty=1.0)
    calls = []
    reference = varlen.reference_attention
    monkeypatch.setattr(varlen, "reference_attention", lambda *a: calls.append(a[3].numel() - 1) or reference(*a))
    packed = generate_replies(model, qwen_tokenizer, prompts, 8, stops, repetition_penalty=1.0,
                              engine="continuous", attention="varlen")
    assert packed == padded
    assert max(calls) > 1 and len(calls) >= model.config.num_hidden_layers * 8  # several replies a step, each step
    assert model.config._attn_implementation == "sdpa"


def test_varlen_attention_is_refused_where_it_cannot_run(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, MistralConfig

    from mcqtune.core.varlen import check_base, varlen_paged_attention, varlen_problem
    from mcqtune.infer.options import InferArguments
    from mcqtune.infer.setup import check_args

    for mode, engine in (("score", "generate"), ("reason", "generate"), ("generate", "generate")):
        for attention in ("varlen", "sdpa"):  # either, asked for where it would have no effect
            args = InferArguments(test_file="t.csv", model_path="m", mode=mode, generation_engine=engine,
                                  paged_attention=attention, repetition_penalty=1.0)
            with pytest.raises(ConfigError, match=f"paged_attention {attention} applies to reason mode with a paged "
                                                  f"engine .*not {mode} mode with --generation_engine {engine}"):
                check_args(args)
    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert varlen_problem(config) is None
    check_base(str(tiny_model_dir))
    sliding = "this model has sliding-window layers"
    # a sliding layer named outright, or (Mistral's configs) a window and no layer types: continuous batching
    # makes every layer a sliding one
    mixed = AutoConfig.from_pretrained(tiny_model_dir, layer_types=["full_attention", "sliding_attention"])
    assert sliding in varlen_problem(mixed)
    assert sliding in varlen_problem(MistralConfig(num_hidden_layers=2))
    assert varlen_problem(MistralConfig(num_hidden_layers=2, sliding_window=None)) is None
    folder = tmp_path / "sliding"
    folder.mkdir()
    MistralConfig(num_hidden_layers=2).save_pretrained(folder)
    with pytest.raises(ConfigError, match=f"^{folder}: varlen attention attends over whole replies; this model has "
                                          f"sliding-window layers: use --paged_attention sdpa$"):
        check_base(str(folder))
    with pytest.raises(ConfigError, match="sliding-window layers: use --rollout_engine generate$"):  # GRPO's words
        check_base(str(folder), "--rollout_engine generate")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with pytest.raises(ConfigError, match="varlen attention was never called .*: use --paged_attention sdpa$"):
        with varlen_paged_attention(model):
            pass
    assert model.config._attn_implementation == "sdpa"


def test_paged_attention_auto_is_varlen_where_the_model_allows_it(tiny_model_dir, caplog):
    """auto is made what runs once the model's config is known, before the run's identity is taken, so report.json
    and a resumed run see it: varlen for the paged engines in reason mode, sdpa elsewhere and for a model with
    sliding-window layers (said in the log)."""
    from transformers import AutoConfig, MistralConfig

    from mcqtune.infer.options import InferArguments
    from mcqtune.infer.setup import check_args, resolve_paged_attention

    config = AutoConfig.from_pretrained(tiny_model_dir)
    for mode, engine, attention in (("reason", "continuous", "varlen"), ("reason", "fp8", "varlen"),
                                    ("reason", "generate", "sdpa"), ("score", "generate", "sdpa")):
        args = InferArguments(test_file="t.csv", model_path="m", mode=mode, generation_engine=engine,
                              repetition_penalty=1.0)
        check_args(args)
        assert args.paged_attention == "auto"
        resolve_paged_attention(args, config)
        assert args.paged_attention == attention
    args = InferArguments(test_file="t.csv", model_path="m", mode="reason", generation_engine="continuous",
                          repetition_penalty=1.0)
    with caplog.at_level("INFO", logger="mcqtune.infer.setup"):
        resolve_paged_attention(args, MistralConfig(num_hidden_layers=2))
    assert args.paged_attention == "sdpa" and "paged_attention auto: sdpa (varlen attention" in caplog.text
    args = InferArguments(test_file="t.csv", model_path="m", mode="reason", generation_engine="continuous",
                          repetition_penalty=1.0, paged_attention="sdpa")
    resolve_paged_attention(args, config)
    assert args.paged_attention == "sdpa"


def test_an_fp8_cache_is_refused_where_varlen_attention_does_not_read_it(tiny_model_dir, monkeypatch):
    import torch
    from transformers import AutoConfig, MistralConfig

    from mcqtune.infer.options import InferArguments
    from mcqtune.infer.setup import check_args, check_device_options, resolve_paged_attention

    def args(**options):
        return InferArguments(test_file="t.csv", model_path="m", repetition_penalty=1.0, kv_cache_dtype="fp8",
                              **options)

    for mode, engine in (("score", "generate"), ("reason", "generate")):
        with pytest.raises(ConfigError, match=f"kv_cache_dtype fp8 applies to reason mode with a paged engine .*not "
                                              f"{mode} mode with --generation_engine {engine}$"):
            check_args(args(mode=mode, generation_engine=engine))
    with pytest.raises(ConfigError, match="kv_cache_dtype fp8 is read by varlen attention only, not --paged_attention "
                                          "sdpa: use --paged_attention varlen, or --kv_cache_dtype auto$"):
        check_args(args(mode="reason", generation_engine="continuous", paged_attention="sdpa"))
    with pytest.raises(ConfigError, match="kv_cache_dtype must be one of auto, fp8, got 'int8'"):
        check_args(InferArguments(test_file="t.csv", model_path="m", kv_cache_dtype="int8"))
    allowed = args(mode="reason", generation_engine="continuous")
    check_args(allowed)
    resolve_paged_attention(allowed, AutoConfig.from_pretrained(tiny_model_dir))
    assert allowed.paged_attention == "varlen"
    sliding = args(mode="reason", generation_engine="continuous")  # auto cannot be varlen for this model
    with pytest.raises(ConfigError, match="read by varlen attention only, and varlen attention attends over whole "
                                          "replies; this model has sliding-window layers: use --kv_cache_dtype auto$"):
        resolve_paged_attention(sliding, MistralConfig(num_hidden_layers=2))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 6))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA GeForce RTX 3090")
    with pytest.raises(ConfigError, match="needs a GPU with FP8 .*RTX 3090 has 8.6: use --kv_cache_dtype auto$"):
        check_device_options("fp8")
    check_device_options("auto")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 9))
    check_device_options("fp8")


def test_an_fp8_cache_for_a_sliding_window_base_is_refused_before_loading(tiny_model_dir, sample_dir, tmp_path,
                                                                           monkeypatch):
    import shutil

    from transformers import MistralConfig

    from mcqtune.infer import run as infer
    from mcqtune.infer.options import InferArguments

    base = tmp_path / "sliding"
    shutil.copytree(tiny_model_dir, base)  # its tokenizer; the config says sliding-window layers
    MistralConfig(num_hidden_layers=2).save_pretrained(base)
    from mcqtune.infer import loading

    monkeypatch.setattr(loading, "load_inference_model", lambda *a: pytest.fail("loaded before refusing"))
    args = InferArguments(test_file=str(sample_dir / "test.csv"), model_path=str(base), mode="reason", backend="hf",
                          generation_engine="continuous", repetition_penalty=1.0, kv_cache_dtype="fp8",
                          output_file=str(tmp_path / "s.csv"))
    with pytest.raises(ConfigError, match="sliding-window layers: use --kv_cache_dtype auto$"):
        infer.run(args)


def test_async_batching_is_refused_where_it_cannot_overlap_steps(tiny_model_dir, monkeypatch):
    """Outside reason mode with a paged engine, with sdpa (explicit, or what auto becomes for the model), and on a
    machine without a CUDA GPU, where it would do nothing."""
    import torch
    from transformers import AutoConfig, MistralConfig

    from mcqtune.infer.options import InferArguments
    from mcqtune.infer.setup import check_args, check_device_options, resolve_paged_attention

    def args(**options):
        return InferArguments(test_file="t.csv", model_path="m", repetition_penalty=1.0, async_batching=True,
                              **options)

    with pytest.raises(ConfigError, match="async_batching applies to reason mode with a paged engine .*not score "
                                          "mode with --generation_engine generate$"):
        check_args(args(mode="score"))
    with pytest.raises(ConfigError, match="async_batching overlaps steps with varlen attention only, not "
                                          "--paged_attention sdpa: use --paged_attention varlen, or --async_batching "
                                          "false$"):
        check_args(args(mode="reason", generation_engine="continuous", paged_attention="sdpa"))
    allowed = args(mode="reason", generation_engine="continuous")
    check_args(allowed)
    resolve_paged_attention(allowed, AutoConfig.from_pretrained(tiny_model_dir))
    assert allowed.paged_attention == "varlen"
    with pytest.raises(ConfigError, match="sliding-window layers: use --async_batching false$"):
        resolve_paged_attention(args(mode="reason", generation_engine="continuous"), MistralConfig(num_hidden_layers=2))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="^async_batching overlaps GPU decoding steps; this machine has no CUDA GPU: "
                                          "use --async_batching false$"):
        check_device_options("auto", async_batching=True)
    check_device_options("auto", async_batching=False)


def test_an_fp8_cache_holds_twice_the_tokens_and_a_run_on_it_is_its_own(tiny_model_dir, sample_dir, tmp_path,
                                                                          monkeypatch):
    """The README reasoning command with --kv_cache_dtype fp8 on the tiny model (CPU): every key and value is
    written to a float8 cache, report.json says so, and the same run with the model's own type is another run
    (its answers are not reused)."""
    import json

    from transformers import AutoConfig

    from mcqtune.core import varlen
    from mcqtune.core.batch_planning import cache_bytes_per_token
    from mcqtune.infer import run as infer
    from mcqtune.infer.options import InferArguments

    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert 2 * cache_bytes_per_token(config, "fp8") == cache_bytes_per_token(config, "auto")
    written = []
    write = varlen.write_cache
    monkeypatch.setattr(varlen, "write_cache", lambda cache, *a: written.append(str(cache.dtype)) or write(cache, *a))
    test_file = tmp_path / "test.csv"
    test_file.write_text("\n".join(sample_dir.joinpath("test.csv").read_text(encoding="utf-8").splitlines()[:5]) + "\n",
                         encoding="utf-8")

    def args(kv_cache_dtype):
        return InferArguments(test_file=str(test_file), model_path=str(tiny_model_dir), mode="reason",
                              backend="hf", generation_engine="continuous", repetition_penalty=1.0,
                              max_reasoning_tokens=6, kv_cache_dtype=kv_cache_dtype,
                              output_file=str(tmp_path / "s.csv"))

    first = infer.run(args("fp8"))
    assert written and set(written) == {"torch.float8_e4m3fn"}
    report = json.loads((tmp_path / "s_run" / "report.json").read_text(encoding="utf-8"))
    assert report["kv_cache_dtype"] == "fp8" and report["paged_attention"] == "varlen"
    written.clear()
    other = infer.run(args("auto"))
    assert other["restarted"]["changed"] == ["kv_cache_dtype"]
    assert other["answered_this_run"] == first["rows"] == 4
    assert set(written) == {"torch.float32"}


def test_a_failed_batch_reports_its_own_error_not_an_attention_that_never_ran(tiny_model_dir, monkeypatch):
    """transformers returns a request's failure (out of memory building the cache, say) as its result: that is what
    the user reads, even when no attention call ran."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM

    from mcqtune.core.continuous import continuous_replies
    from mcqtune.errors import UserError

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    failed = {"req_0": SimpleNamespace(prompt_ids=[1, 2], generated_tokens=[], error="CUDA out of memory")}
    monkeypatch.setattr(type(model), "generate_batch", lambda self, prompts, **kwargs: failed, raising=False)
    with pytest.raises(UserError, match="ran out of GPU memory; plan for less with --gpu_memory_gb .*, or use "
                                        "--generation_engine generate$"):
        continuous_replies(model, SimpleNamespace(pad_token_id=0), [[1, 2]], 4, [9], attention="varlen")
    assert model.config._attn_implementation == "sdpa"


def test_an_8_bit_cache_is_written_in_its_own_type_and_read_back_in_the_queries():
    """A cache kept in float8: the step's keys land at their rows rounded to float8, other rows untouched, and
    attention over it is attention over those rounded keys in the queries' type."""
    import torch

    from mcqtune.core.varlen import reference_attention, varlen_attention, write_cache

    torch.manual_seed(0)
    cache = torch.zeros(12, 2, 8, dtype=torch.float8_e4m3fn)
    new = torch.randn(3, 2, 8, dtype=torch.bfloat16)
    index = torch.tensor([7, 2, 9])
    write_cache(cache, index, new)
    assert torch.equal(cache[index].float(), new.to(torch.float8_e4m3fn).float())
    assert not cache[[0, 1, 3, 4, 5, 6, 8, 10, 11]].float().any()
    assert not torch.equal(cache[index].float(), new.float())  # rounded: the check above is not trivially true
    query = torch.randn(2, 4, 8, dtype=torch.bfloat16)
    cu_q, cu_k = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 3])
    got = varlen_attention(query, cache, cache, cu_q, cu_k, 8 ** -0.5, index)
    rounded = cache[index].to(torch.bfloat16)
    assert torch.equal(got, reference_attention(query, rounded, rounded, cu_q, cu_k, 8 ** -0.5))


@pytest.mark.gpu
def test_on_a_gpu_the_kernel_reads_an_fp8_cache_as_its_16_bit_values():
    import torch

    from mcqtune.core.varlen import varlen_attention

    torch.manual_seed(0)
    q_lengths, k_lengths = [1, 1, 3], [40, 300, 129]
    cu_q = torch.tensor([0, *torch.tensor(q_lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0, *torch.tensor(k_lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    query = torch.randn(sum(q_lengths), 40, 128, device="cuda", dtype=torch.bfloat16)
    rows = torch.randperm(1000, device="cuda")[:sum(k_lengths)]
    cache = torch.randn(1000, 8, 128, device="cuda").to(torch.float8_e4m3fn)
    got = varlen_attention(query, cache, cache, cu_q, cu_k, 128 ** -0.5, rows)
    widened = cache.to(torch.bfloat16)
    torch.testing.assert_close(got, varlen_attention(query, widened, widened, cu_q, cu_k, 128 ** -0.5, rows))


@pytest.mark.gpu
def test_on_a_gpu_the_kernel_in_bfloat16_is_the_float32_attention():
    """The 14B shape's heads (40 over 8, 128 wide), prompts and decoding in one step, keys read in place."""
    import torch

    from mcqtune.core.varlen import reference_attention, varlen_attention

    torch.manual_seed(0)
    q_lengths, k_lengths = [5, 1, 1, 1], [5, 40, 300, 129]
    cu_q = torch.tensor([0, *torch.tensor(q_lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0, *torch.tensor(k_lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    query = torch.randn(sum(q_lengths), 40, 128, device="cuda", dtype=torch.bfloat16)
    key = torch.randn(sum(k_lengths), 8, 128, device="cuda", dtype=torch.bfloat16)
    value = torch.randn_like(key)
    rows = torch.randperm(1000, device="cuda")[:key.shape[0]]
    key_cache = torch.zeros(1000, 8, 128, device="cuda", dtype=torch.bfloat16)
    value_cache = torch.zeros_like(key_cache)
    key_cache[rows], value_cache[rows] = key, value
    want = reference_attention(query.float(), key.float(), value.float(), cu_q, cu_k, 128 ** -0.5)
    for got in (varlen_attention(query, key, value, cu_q, cu_k, 128 ** -0.5),
                varlen_attention(query, key_cache, value_cache, cu_q, cu_k, 128 ** -0.5, rows)):
        torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
def test_on_a_gpu_continuous_batching_with_cuda_graphs_gives_generates_greedy_replies(tiny_model_dir, qwen_tokenizer,
                                                                                       sample_dir):
    """The path only a GPU takes: each step run once, then captured and replayed as a CUDA graph, padded to the
    graph's size, keys read in place (float32 weights, so both sides compute in float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    from mcqtune.core.reasoning import generate_replies
    from mcqtune.data.questions import PromptStyle, load_mcq_csv
    from mcqtune.model.prompts import encode_prompts

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).cuda().eval()
    frame = load_mcq_csv(sample_dir / "test.csv").head(12)
    prompts = encode_prompts(qwen_tokenizer, frame, PromptStyle(reasoning=True), 512)
    stops = [qwen_tokenizer.pad_token_id]
    padded = generate_replies(model, qwen_tokenizer, prompts, 16, stops, repetition_penalty=1.0)
    packed = generate_replies(model, qwen_tokenizer, prompts, 16, stops, repetition_penalty=1.0,
                              engine="continuous", attention="varlen")
    assert packed == padded
