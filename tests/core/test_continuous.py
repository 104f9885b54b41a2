"""core/continuous.py: reasoning replies through transformers' continuous batching are model.generate's greedy
replies, in prompt order, stopping where generate stops; the options it cannot honour are refused in one line."""

from typing import Callable

import pandas as pd
import pytest

from mcqtune.infer.options import InferArguments
from mcqtune.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_generator(tiny_model_dir, qwen_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval(), qwen_tokenizer


def test_continuous_replies_are_generates_greedy_replies(tiny_generator, sample_dir):
    import torch

    from mcqtune.core.reasoning import generate_replies
    from mcqtune.data.questions import PromptStyle, load_mcq_csv
    from mcqtune.model.prompts import encode_prompts

    model, tokenizer = tiny_generator
    frame = load_mcq_csv(sample_dir / "test.csv").head(6)
    prompts = encode_prompts(tokenizer, frame, PromptStyle(reasoning=True), 512)
    assert len({len(p) for p in prompts}) > 1  # prompts of several lengths: generate pads them, continuous packs
    with torch.inference_mode():  # a token some reply makes half-way becomes a stop token, so some replies stop
        first = model.generate(torch.tensor([prompts[0]]), max_new_tokens=12, do_sample=False,
                               pad_token_id=tokenizer.pad_token_id)[0, len(prompts[0]):].tolist()
    stops = [first[5], tokenizer.pad_token_id]
    padded = generate_replies(model, tokenizer, prompts, 12, stops, repetition_penalty=1.0)
    packed = generate_replies(model, tokenizer, prompts, 12, stops, repetition_penalty=1.0, engine="continuous")
    assert packed == padded
    assert packed[0] == (first[:5], True) and any(not finished for _, finished in packed)


@pytest.mark.slow
def test_a_reasoning_run_gives_the_same_answers_on_either_engine(tiny_model_dir, sample_dir, tmp_path):
    from mcqtune.infer import run as infer

    test_file = tmp_path / "test.csv"
    pd.read_csv(sample_dir / "test.csv", dtype=str).head(40).to_csv(test_file, index=False)

    def run(engine, attention="auto"):
        args = InferArguments(test_file=str(test_file), model_path=str(tiny_model_dir), mode="reason",
                              max_reasoning_tokens=6, batch_size=8, repetition_penalty=1.0,
                              generation_engine=engine, paged_attention=attention, backend="hf",
                              output_file=str(tmp_path / f"{engine}-{attention}.csv"))
        report = infer.run(args)
        return report, pd.read_csv(args.run_dir / "predictions.csv")

    generate, by_generate = run("generate")
    continuous, by_continuous = run("continuous", "sdpa")
    varlen, by_varlen = run("continuous")  # auto: varlen
    assert continuous["generation_engine"] == "continuous" and generate["generation_engine"] == "generate"
    assert (continuous["paged_attention"], varlen["paged_attention"], generate["paged_attention"]) == \
        ("sdpa", "varlen", None)
    for other in ("continuous-sdpa", "continuous-auto"):
        assert (tmp_path / f"{other}.csv").read_text() == (tmp_path / "generate-auto.csv").read_text()
    columns = ["ID", "answer", "raw", "rule", "reasoning_tokens"]
    assert by_continuous[columns].equals(by_generate[columns]) and by_varlen[columns].equals(by_generate[columns])


@pytest.mark.parametrize("options, message", [
    ({"mode": "score"}, "applies to reason mode only, not score"),
    ({"mode": "reason"}, "pass --repetition_penalty 1.0, or --generation_engine generate to keep 1.1"),
])
def test_what_continuous_batching_cannot_do_is_refused(options, message):
    from mcqtune.infer.setup import check_args

    args = InferArguments(test_file="t.csv", model_path="m", generation_engine="continuous", **options)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        check_args(args)


def test_the_engine_needs_the_hf_backend_and_one_process():
    from mcqtune.infer.setup import check_engine

    check_engine("continuous", "hf", 1)
    check_engine("generate", "unsloth", 4)
    with pytest.raises(ConfigError, match="add --backend hf"):
        check_engine("continuous", "unsloth", 1)
    with pytest.raises(ConfigError, match="runs in one process, not 2"):
        check_engine("continuous", "hf", 2)


def test_a_reply_takes_the_blocks_transformers_gives_it_and_a_cache_that_holds_none_is_refused_in_one_line():
    from mcqtune.core.batch_planning import CACHE_BLOCK_TOKENS, replies_held, reply_blocks
    from mcqtune.core.engines import GRPO_REMEDIES

    block = CACHE_BLOCK_TOKENS
    assert reply_blocks(block - 1, 1) == 2  # a prompt filling its block to the last token is given one more
    assert reply_blocks(block - 2, 3) == 1  # 2 of the 3 new tokens cached (the last is never fed back): full
    assert reply_blocks(block - 2, 4) == 2  # 3 cached: one over
    assert replies_held(3 * reply_blocks(200, 1024), 200, 1024) == 3
    assert replies_held(3 * reply_blocks(200, 1024) - 1, 200, 1024) == 2
    with pytest.raises(ConfigError, match="cannot hold one reply of 200 prompt \\+ 1024 new tokens; lower "
                                          "--max_reasoning_tokens or use --generation_engine generate$"):
        replies_held(reply_blocks(200, 1024) - 1, 200, 1024)
    with pytest.raises(ConfigError, match="lower --max_completion_length or use --rollout_engine generate$"):
        replies_held(0, 200, 1024, GRPO_REMEDIES)
    spare = 3 * reply_blocks(200, 1024)  # 200 + 1023 cached: 20 blocks, 57 tokens to spare in the last
    assert replies_held(spare, 200, 1024, overlap=True) == 3
    block_end = 3 * reply_blocks(200, 1081)  # 200 + 1080 cached = 20 whole blocks: the step past them needs a 21st
    assert replies_held(block_end, 200, 1081) == 3
    assert replies_held(block_end, 200, 1081, overlap=True) == 2
    with pytest.raises(ConfigError, match="one reply of 200 prompt \\+ 1081 new tokens"):  # the user's budget
        replies_held(reply_blocks(200, 1081), 200, 1081, overlap=True)


def test_on_a_cpu_the_cache_is_sized_from_the_ram_available_and_a_reply_too_long_for_it_is_refused(
        tiny_generator, sample_dir, monkeypatch):
    """A CPU run's cache is CACHE_SHARE of the RAM available now, as a GPU's is of its memory: a budget no cache
    in that RAM can hold is refused in one line before anything is allocated (transformers' own check raised an
    error that read as a bug in mcq-tune)."""
    import collections

    import psutil

    from mcqtune.core.batch_planning import CACHE_BLOCK_TOKENS, CACHE_SHARE, cache_blocks, cache_bytes_per_token
    from mcqtune.core.reasoning import generate_replies
    from mcqtune.data.questions import PromptStyle, load_mcq_csv
    from mcqtune.model.prompts import encode_prompts

    model, tokenizer = tiny_generator
    block_bytes = CACHE_BLOCK_TOKENS * cache_bytes_per_token(model.config, "auto")
    memory = collections.namedtuple("memory", "available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(available=int(100 * block_bytes / CACHE_SHARE)))
    assert cache_blocks(model) == 100
    assert cache_blocks(model, kv_cache_dtype="fp8") == 200
    prompts = encode_prompts(tokenizer, load_mcq_csv(sample_dir / "test.csv").head(2), PromptStyle(reasoning=True),
                             512)
    with pytest.raises(ConfigError, match="cache that fits in this machine's memory cannot hold one reply of "
                                          f"{max(map(len, prompts))} prompt \\+ 100000 new tokens; lower "
                                          "--max_reasoning_tokens"):
        generate_replies(model, tokenizer, prompts, 100000, [tokenizer.pad_token_id], repetition_penalty=1.0,
                         engine="continuous")


def replies_through_a_tight_cache(model, tokenizer, sample_dir, monkeypatch, budget_past_blocks: int, cache: Callable):
    """Six replies of one prompt length, each one's budget ``budget_past_blocks`` tokens past a whole number of
    blocks, through a cache of ``cache(blocks one reply takes at its longest, as the engine plans it)`` blocks;
    returns (the engine's replies, generate's, how many times transformers moved a reply's cache out to make
    room)."""
    from transformers.generation.continuous_batching.offloading_manager import OffloadingManager

    from mcqtune.core import batch_planning
    from mcqtune.core.reasoning import generate_replies
    from mcqtune.data.questions import PromptStyle, load_mcq_csv
    from mcqtune.model.prompts import encode_prompts

    frame = load_mcq_csv(sample_dir / "test.csv").head(6)
    prompts = encode_prompts(tokenizer, frame, PromptStyle(reasoning=True), 512)
    shortest = min(map(len, prompts))
    prompts = [prompt[-shortest:] for prompt in prompts]  # of one length, so all fill their last block alike
    block, longest = batch_planning.CACHE_BLOCK_TOKENS, shortest
    budget = 3 * block - longest % block + budget_past_blocks
    overlap = model.device.type == "cuda"
    room = batch_planning.reply_blocks(longest, batch_planning.planned_budget(budget, overlap))
    monkeypatch.setattr(batch_planning, "cache_blocks", lambda *a: cache(room))
    moved = []
    offload = OffloadingManager.offload_requests
    monkeypatch.setattr(OffloadingManager, "offload_requests", lambda self: moved.append(1) or offload(self))
    stops = [tokenizer.pad_token_id]
    packed = generate_replies(model, tokenizer, prompts, budget, stops, repetition_penalty=1.0, engine="continuous",
                              attention="varlen" if overlap else "sdpa", async_batching=overlap)
    return packed, generate_replies(model, tokenizer, prompts, budget, stops, repetition_penalty=1.0), len(moved)


def test_a_cache_smaller_than_the_batch_runs_replies_in_turn_and_never_moves_one_to_the_cpu(tiny_generator,
                                                                                          sample_dir, monkeypatch):
    """Each reply's cache takes one token of its last block (by tokens, three replies would fit): the engine
    admits two at a time, so transformers never has to move a reply's cache out (its offloading) to make room;
    the replies are still generate's."""
    model, tokenizer = tiny_generator
    packed, padded, moved = replies_through_a_tight_cache(model, tokenizer, sample_dir, monkeypatch, 2,
                                                          lambda room: 3 * room - 1)
    assert not moved
    assert packed == padded


@pytest.mark.gpu
def test_on_a_gpu_overlapped_steps_get_room_for_the_step_past_a_replys_end(tiny_model_dir, qwen_tokenizer,
                                                                            sample_dir, monkeypatch):
    """On a GPU the next step is prepared while this one computes, so a reply whose cache ends exactly on a block
    boundary is scheduled once more and needs one more block. A cache of exactly two replies' planned blocks (the
    size at which a missing block shows): with the step past the end planned for, no reply's cache is moved out,
    and the replies are still generate's (float32 weights; varlen attention, CUDA graphs)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).cuda().eval()
    packed, padded, moved = replies_through_a_tight_cache(model, qwen_tokenizer, sample_dir, monkeypatch, 1,
                                                          lambda room: 2 * room)
    assert not moved
    assert packed == padded


def test_overlapped_steps_plan_one_more_token_a_reply():
    from mcqtune.core.batch_planning import CACHE_BLOCK_TOKENS, planned_budget, reply_blocks

    assert planned_budget(512, overlap=False) == 512
    assert planned_budget(512, overlap=True) == 513
    prompt = 2 * CACHE_BLOCK_TOKENS  # 2 blocks of prompt + 65 new tokens, the last not fed back: 3 blocks
    assert reply_blocks(prompt, planned_budget(CACHE_BLOCK_TOKENS + 1, False)) == 3
    assert reply_blocks(prompt, planned_budget(CACHE_BLOCK_TOKENS + 1, True)) == 4  # the step past it: a 4th


def test_continuous_batching_on_unsloth_is_refused_before_loading(tiny_model_dir, sample_dir, tmp_path, monkeypatch):
    from mcqtune.infer import run as infer

    monkeypatch.setattr(infer, "select_backend", lambda name: "unsloth")
    monkeypatch.setattr(infer, "load_request", lambda *a: pytest.fail("loaded before refusing"))
    args = InferArguments(test_file=str(sample_dir / "test.csv"), model_path=str(tiny_model_dir), mode="reason",
                          repetition_penalty=1.0, generation_engine="continuous", output_file=str(tmp_path / "s.csv"))
    with pytest.raises(ConfigError, match="add --backend hf"):
        infer.run(args)


@pytest.mark.parametrize("ending", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_batch_prints_no_teardown_traceback_and_other_batches_keep_their_log(tiny_generator,
                                                                                            monkeypatch, ending):
    """Ctrl-C or SIGTERM mid-batch: transformers' background thread logs its teardown as "Error in generation
    loop" with a traceback, which said nothing the command's one line does not; any other end passes its log on."""
    import logging

    from mcqtune.core.continuous import BATCHING_LOGGER, HeldRecords, continuous_replies

    model, tokenizer = tiny_generator
    import transformers.generation.continuous_batching.requests  # noqa: F401  (its logger's console handler)

    console = HeldRecords()  # in place of the console handler, which pytest's capture cannot see
    monkeypatch.setattr(logging.getLogger(BATCHING_LOGGER), "handlers", [console])

    def batch_that_ends(*args, **kwargs):
        logging.getLogger(BATCHING_LOGGER).error("Error in generation loop: teardown", exc_info=True)
        raise ending("stopped")

    monkeypatch.setattr(model, "generate_batch", batch_that_ends, raising=False)
    with pytest.raises(ending):
        continuous_replies(model, tokenizer, [[1, 2, 3]], 4, [tokenizer.pad_token_id])
    printed = [record.getMessage() for record in console.records]
    assert printed == (["Error in generation loop: teardown"] if ending is RuntimeError else [])
    after = logging.getLogger(BATCHING_LOGGER).handlers
    assert after == [console] if ending is RuntimeError else [type(h) for h in after] == [logging.NullHandler]
