"""core/nf4.py: the fused NF4 kernel (checked under Triton's interpreter in a process of its own,
interpreted_nf4.py), its tiles, and where the engine is refused."""

import pytest

from mcqtune.errors import ConfigError
from tests.helpers import run_interpreted


@pytest.mark.slow
def test_the_kernel_under_tritons_interpreter(tmp_path):
    run_interpreted("interpreted_nf4.py", tmp_path)


def test_tiles_cover_the_rows_and_split_the_input_until_every_multiprocessor_is_busy():
    from mcqtune.core.nf4 import BLOCK_K, MIN_PROGRAMS_PER_SM, tile_sizes

    assert tile_sizes(1, 5120, 5120, 132)[:2] == (16, 64) and tile_sizes(40, 5120, 5120, 132)[0] == 32
    for m, n, k in [(1, 1024, 5120), (64, 5120, 5120), (71, 13824, 5120), (8, 5120, 13824)]:
        block_m, block_n, splits, groups = tile_sizes(m, n, k, 132)
        programs = -(-n // block_n) * -(-m // block_m)
        assert k % (splits * groups * BLOCK_K) == 0  # each split a whole number of loop steps
        assert programs * splits >= MIN_PROGRAMS_PER_SM * 132 or k % (splits * 2 * groups * BLOCK_K)  # as far as fits
        assert splits == 1 or programs * splits // 2 < MIN_PROGRAMS_PER_SM * 132  # and no further


def test_the_nf4_engine_is_refused_where_it_cannot_run(monkeypatch, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from mcqtune.core.nf4 import fused_nf4
    from mcqtune.infer.options import InferArguments
    from mcqtune.infer.setup import check_args, check_engine

    with pytest.raises(ConfigError, match="add --backend hf"):
        check_engine("nf4", "unsloth", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="needs a CUDA GPU .*use --generation_engine generate$"):
        check_engine("nf4", "hf", 1)
    args = InferArguments(test_file="t.csv", model_path="m", generation_engine="nf4", mode="reason",
                          repetition_penalty=1.0, load_in_4bit=False)
    with pytest.raises(ConfigError, match="generation_engine nf4 reads NF4 weights: keep --load_in_4bit true"):
        check_args(args)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)  # 16-bit: nothing to fuse
    with pytest.raises(ConfigError, match="needs a model loaded in 4-bit NF4"):
        with fused_nf4(model):
            pass


def test_the_nf4_engine_decodes_no_more_replies_at_once_than_its_kernel_takes(monkeypatch):
    """Continuous batching pads a decoding step to the replies it may hold: for nf4 that is capped at
    MAX_FUSED_ROWS, so no steady step falls to bitsandbytes' path on a large card."""
    import contextlib
    from types import SimpleNamespace

    from mcqtune.core import batch_planning, nf4
    from mcqtune.core.reasoning import generate_replies

    monkeypatch.setattr(batch_planning, "cache_blocks", lambda *a: 10_000)
    monkeypatch.setattr(batch_planning, "replies_held", lambda *a: 900)  # a large card's cache
    seen = {}

    class Model:
        def generate_batch(self, prompts, generation_config, continuous_batching_config, **kwargs):
            seen["held"] = continuous_batching_config.max_requests_per_batch
            return {f"req_{i}": SimpleNamespace(prompt_ids=p, generated_tokens=[7], error=None)
                    for i, p in enumerate(prompts)}

    monkeypatch.setattr(nf4, "fused_nf4", lambda model: contextlib.nullcontext())
    tokenizer = SimpleNamespace(pad_token_id=0)
    for engine, held in (("continuous", 900), ("nf4", nf4.MAX_FUSED_ROWS)):
        replies = generate_replies(Model(), tokenizer, [[1, 2], [3]], 4, [9], repetition_penalty=1.0, engine=engine)
        assert replies == [([7], False), ([7], False)] and seen["held"] == held


@pytest.mark.gpu
def test_on_a_gpu_the_kernel_in_bfloat16_is_bitsandbytes_product_and_can_be_captured():
    """bfloat16 (which Triton's interpreter cannot run), every tile height, and a CUDA graph replaying the call."""
    import bitsandbytes.functional as bnb_functional
    import torch

    from mcqtune.core.nf4 import nf4_matmul

    torch.manual_seed(0)
    weight = torch.randn(1024, 5120, device="cuda", dtype=torch.bfloat16) * 0.02
    packed, state = bnb_functional.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=True)
    dense = bnb_functional.dequantize_4bit(packed, state).float()
    offset = float(state.offset)
    for rows in (1, 16, 17, 71, 256):
        x = torch.randn(rows, 5120, device="cuda", dtype=torch.bfloat16)
        want = x.float() @ dense.T
        torch.testing.assert_close(nf4_matmul(x, packed, state, offset).float(), want, rtol=2e-2, atol=2e-2)
    x = torch.randn(40, 5120, device="cuda", dtype=torch.bfloat16)
    nf4_matmul(x, packed, state, offset)  # compiled before the capture, as the engine's uncaptured first step does
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = nf4_matmul(x, packed, state, offset)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.testing.assert_close(captured.float(), x.float() @ dense.T, rtol=2e-2, atol=2e-2)
