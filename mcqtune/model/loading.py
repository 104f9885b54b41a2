"""Load base models, tokenizers and LoRA adapters on the chosen backend, for training and inference; save adapters
(infer.py's ways of loading, the ladder, are in infer/loading.py).

Two backends share one interface:

* ``unsloth`` — ``FastLanguageModel`` (4-bit NF4, fused LoRA kernels, Unsloth gradient checkpointing, fast
  generation). On a machine without a GPU Unsloth falls back to the CPU, so tests run this same path.
* ``hf`` — plain transformers + bitsandbytes + peft: the reference recipe, kept as a fallback and as the
  benchmark baseline.

``import unsloth`` must come before trl/transformers/peft are imported, so ``select_backend`` runs first and
every heavy import happens inside the functions below.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

from mcqtune.config_files import resolve_config, shipped_configs
from mcqtune.errors import ConfigError, UserError
from mcqtune.model.options import BACKENDS, LORA_TARGETS, LoraOptions, quantization_config
from mcqtune.runs.identity import WEIGHT_SUFFIXES

logger = logging.getLogger(__name__)

# Privacy by default: no usage statistics, no hub traffic unless the user names a hub model.
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class ModelLoadError(UserError):
    """A model, adapter or tokenizer could not be loaded; the message says what to check."""


def unsloth_available() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def select_backend(name: str = "auto") -> str:
    """Resolve 'auto' and import Unsloth first when it is chosen (it patches transformers/trl/peft)."""
    if name not in BACKENDS:
        raise ModelLoadError(f"--backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "auto":
        name = "unsloth" if unsloth_available() else "hf"
    if name == "unsloth":
        if not unsloth_available():
            raise ModelLoadError("backend 'unsloth' was asked for but Unsloth is not installed: "
                                 "pip install -r requirements.txt, or pass --backend hf")
        import_unsloth()
    return name


def import_unsloth() -> None:
    """Import Unsloth (it must precede trl/transformers/peft). On a machine without a GPU its banner ("no GPU found,
    training on CPU ...") is printed even for a run that only answers: it goes to the log at debug level instead."""
    import contextlib
    import io
    import sys

    if "unsloth" in sys.modules:
        return
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        import unsloth  # noqa: F401
    import torch

    if torch.cuda.is_available():
        sys.stdout.write(printed.getvalue())
    elif printed.getvalue().strip():
        logger.debug("Unsloth: %s", " ".join(printed.getvalue().split()))


def peek_backend(argv: Sequence[str] | None) -> str:
    """The backend named on the command line or in --config, read before trl/transformers are imported."""
    import argparse

    import yaml

    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--backend")
    peek.add_argument("--config")
    known, _ = peek.parse_known_args(argv)
    if known.backend:
        return known.backend
    if not known.config:
        return "auto"
    path = Path(resolve_config(known.config))
    if not path.is_file():
        raise UserError(f"--config {path}: no such file (a file of yours, or one of the shipped configs: "
                        f"{', '.join(shipped_configs())})")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"--config {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if config is not None and not isinstance(config, dict):
        raise UserError(f"--config {path} must hold 'option: value' lines, found a {type(config).__name__}")
    return str((config or {}).get("backend", "auto"))


def compute_dtype():
    """bf16 where the GPU supports it, else fp16 on a GPU, fp32 on the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def is_local_dir(name_or_path: str | Path) -> bool:
    return Path(name_or_path).is_dir()


def check_model_source(name_or_path: str | Path) -> None:
    """A local directory must hold a model or an adapter; anything else must look like a hub id."""
    text = str(name_or_path)
    if is_local_dir(text):
        if not (Path(text) / "config.json").is_file() and not (Path(text) / "adapter_config.json").is_file():
            raise ModelLoadError(f"{text} is a directory but holds no config.json or adapter_config.json: "
                                 "point at a model directory (or a LoRA adapter directory)")
        return
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", text) or text.startswith("."):
        raise ModelLoadError(f"model path {text} does not exist "
                             "(and is not a hub id like 'Qwen/Qwen2.5-14B-Instruct-1M')")
    if hub_offline() and not in_hub_cache(text):
        raise ModelLoadError(f"model {text} is not a local folder, and it is not in the hub cache, which is all "
                             "HF_HUB_OFFLINE=1 allows: pass the folder that holds the model's weights, or unset "
                             "HF_HUB_OFFLINE to download it")


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def in_hub_cache(repo_id: str) -> bool:
    """Whether the hub cache holds a model's (or an adapter's) config, so an offline load can find it."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str)
               for name in ("config.json", "adapter_config.json"))


def read_adapter_base(adapter_dir: str | Path) -> str | None:
    """The base model an adapter was trained on, as recorded in adapter_config.json."""
    config = Path(adapter_dir) / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ModelLoadError(f"{config} is not a readable adapter config ({err}); copy the adapter again") from None


def resolve_adapter_base(adapter_dir: str | Path) -> str:
    """The base model recorded in an adapter, as a folder that exists from here, or a hub id. A relative path
    is tried from the current folder, then from the adapter's; one that is neither a folder here nor a hub model
    in the local cache (or reachable) is refused with what to pass instead."""
    base = read_adapter_base(adapter_dir)
    if not base:
        raise ModelLoadError(f"{adapter_dir} is an adapter without a recorded base model: pass --base_model_id")
    path = Path(base)
    if path.is_dir():
        return base
    if not path.is_absolute() and (Path(adapter_dir) / path).is_dir():
        return str(Path(adapter_dir) / path)
    from mcqtune.runs.identity import cached_revision

    looks_like_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", base) and not base.startswith(".")
    if looks_like_hub_id and (cached_revision(base) or not os.environ.get("HF_HUB_OFFLINE")):
        return base
    raise ModelLoadError(f"{Path(adapter_dir) / 'adapter_config.json'} names the base model {base!r}, which is not a "
                         f"folder from here ({Path.cwd()}) nor beside the adapter"
                         + (", nor a hub model in the local cache" if looks_like_hub_id else "")
                         + ": pass --base_model_id with the base model's folder")


def record_absolute_base(adapter_dir: str | Path) -> None:
    """Write the base model's absolute path into adapter_config.json when it was given as a relative local path,
    so the adapter still finds its base when used from another folder."""
    config_file = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if base and not Path(base).is_absolute() and Path(base).is_dir():
        config["base_model_name_or_path"] = str(Path(base).resolve())
        from mcqtune.files import write_atomic

        write_atomic(config_file, json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def remote_code_of(name_or_path: str | Path) -> str | None:
    """The model type of a local model (or adapter base) folder that transformers cannot build without the model's
    own code (its config.json names code in ``auto_map`` for a type transformers does not know: InternLM 3,
    Baichuan 2 ...); None when transformers has the class itself, or nothing can be read."""
    path = Path(name_or_path) / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not config.get("auto_map"):
        return None
    from transformers import CONFIG_MAPPING

    model_type = str(config.get("model_type") or "?")
    return None if model_type in CONFIG_MAPPING else model_type


def check_remote_code(name_or_path: str | Path, trust_remote_code: bool) -> None:
    """Refuse, in one line, a model that needs its own code when --trust_remote_code was not given."""
    model_type = None if trust_remote_code else remote_code_of(name_or_path)
    if model_type:
        raise ModelLoadError(f"{name_or_path}: model type '{model_type}' is not in transformers and needs the Python "
                             "code shipped with the model (config.json auto_map), which would run on this machine; "
                             "pass --trust_remote_code true only if you trust its source")


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False, chat_template: str | None = None):
    from transformers import AutoTokenizer

    check_remote_code(name_or_path, trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    if chat_template:
        tokenizer.chat_template = Path(chat_template).read_text() if Path(chat_template).is_file() else chat_template
    if tokenizer.chat_template is None:
        raise ModelLoadError(f"the tokenizer of {name_or_path} has no chat template; set chat_template in the config")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_safetensors(path: str | Path, allow_pickle: bool = False) -> None:
    """A local model or adapter directory must hold safetensors weights; pickle files run code when loaded."""
    folder = Path(path)
    if not folder.is_dir() or allow_pickle:
        return
    weights = [p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and not is_trainer_state(p.name)]
    if weights and not any(p.suffix == ".safetensors" for p in weights):
        names = ", ".join(sorted(p.name for p in weights)[:3])
        raise ModelLoadError(
            f"{folder} holds only pickle weights ({names}), which can run code when loaded. Convert them once: "
            f"python -c \"from transformers import AutoModelForCausalLM as M; M.from_pretrained('{folder}', "
            f"use_safetensors=False).save_pretrained('{folder}-safetensors')\" (for an adapter: PeftModel + "
            "save_pretrained); or, for infer.py only, pass --allow_pickle true if you trust the file (training and "
            "export load safetensors only)")


def is_trainer_state(name: str) -> bool:
    """A Trainer checkpoint's own state (optimizer, scheduler, random generators, its arguments), never weights."""
    return name in ("optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin") or \
        (name.startswith("rng_state") and name.endswith(".pth"))


def safetensors_rule(allow_pickle: bool) -> bool | None:
    """transformers' ``use_safetensors``: safetensors only, or (allowed pickle) safetensors where there are some and
    pickle otherwise -- never pickle only, which would not find a safetensors model at all."""
    return None if allow_pickle else True


def verify_safetensors(path: str | Path) -> None:
    """ModelLoadError unless ``path`` is a whole safetensors file: its header parses and every tensor it lists
    lies inside the file (a copy cut short, or a file overwritten half-way, fails here instead of later)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                handle.get_slice(name)
    except Exception as err:  # noqa: BLE001  (safetensors raises its own error types, and OSError)
        raise ModelLoadError(f"{path} is not a readable safetensors file ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:200] if str(err) else 'damaged'}); it is damaged or was cut "
                             "short: copy it again, or retrain / re-export it") from None


def embedding_on_host(model) -> bool:
    """Whether the input embedding table lives in host RAM while the rest of the model is on a GPU."""
    import torch

    weight = model.get_input_embeddings().weight
    return torch.cuda.is_available() and weight.device.type == "cpu"


def load_base_model(name_or_path: str | Path, backend: str, *, load_in_4bit: bool = True, load_in_8bit: bool = False,
                    max_seq_length: int = 2048, trust_remote_code: bool = False, training: bool = True,
                    seed: int = 42, device_map: Any = None, dtype=None, allow_pickle: bool = False,
                    offload_embedding: bool = False):
    """The base model (quantised as asked) and its tokenizer, on the chosen backend. ``dtype`` is the compute
    dtype (default: bf16 where supported); fp16 training needs the model loaded in fp16. ``offload_embedding``
    (Unsloth): the input embedding table stays in host RAM and only the looked-up rows go to the GPU; False
    also stops Unsloth from deciding it by itself from the free memory it sees."""
    import torch

    check_model_source(name_or_path)
    check_remote_code(name_or_path, trust_remote_code)
    check_safetensors(name_or_path, allow_pickle)
    dtype = dtype or compute_dtype()
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=str(name_or_path), max_seq_length=max_seq_length, dtype=dtype,
            load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit and not load_in_4bit,
            trust_remote_code=trust_remote_code, random_state=seed,
            use_gradient_checkpointing="unsloth" if training else False, use_safetensors=safetensors_rule(allow_pickle),
            offload_embedding=offload_embedding and torch.cuda.is_available(),
            **({"device_map": device_map} if device_map is not None else {}),
        )
        return model, tokenizer
    from transformers import AutoModelForCausalLM

    quantization = quantization_config(load_in_4bit, load_in_8bit, dtype)
    if device_map is None:
        device_map = {"": 0} if torch.cuda.is_available() else None
    model = AutoModelForCausalLM.from_pretrained(
        str(name_or_path), dtype=dtype, quantization_config=quantization, device_map=device_map,
        trust_remote_code=trust_remote_code, use_safetensors=safetensors_rule(allow_pickle),
    )
    return model, load_tokenizer(name_or_path, trust_remote_code)


def linear_layer_names(model) -> list[str]:
    """The names of the linear layers inside the decoder's blocks, in order of appearance (the output layer and
    the embeddings excluded): Qwen's q/k/v/o and gate/up/down, GLM-4's fused gate_up_proj, MiniCPM3's q_a/q_b and
    kv_a/kv_b, Qwen3.5's linear-attention in_proj_* and out_proj."""
    import torch

    names = []
    output = model.get_output_embeddings()
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear) and module is not output and ".layers." in f".{name}" \
                and leaf not in names:
            names.append(leaf)
    return names


def resolve_lora_targets(model, requested) -> list[str]:
    """The modules that get adapters. The default list follows the architecture (every linear layer of the
    blocks: the seven of Qwen and Llama, the others' own names); a list given by the user must name layers the
    model has."""
    present = linear_layer_names(model)
    if list(requested) == list(LORA_TARGETS):
        return present
    missing = [name for name in requested if name not in present]
    if missing:
        raise ConfigError(f"--lora_target_modules: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not a "
                          f"linear layer of this model; its layers are {', '.join(present)}")
    return list(requested)


def add_lora(model, backend: str, lora: LoraOptions, gradient_checkpointing: bool = True, seed: int = 42):
    """Wrap the base model with trainable LoRA adapters (Unsloth's fused path or plain peft) on the modules
    ``resolve_lora_targets`` names."""
    targets = resolve_lora_targets(model, lora.lora_target_modules)
    if set(targets) != set(LORA_TARGETS):
        logger.info("LoRA adapters on %s", ", ".join(targets))
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            model, r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
            target_modules=targets, bias="none",
            use_gradient_checkpointing="unsloth" if gradient_checkpointing else False, random_state=seed,
        )
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        keep_training_layout(model)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM")
    from transformers import set_seed

    set_seed(seed)  # the adapters' random start comes from --seed (Unsloth's random_state), not from what ran before
    return get_peft_model(model, config)


def keep_training_layout(model) -> None:
    """On a CPU, bitsandbytes repacks a 4-bit layer's weights for its inference kernel at the first forward in
    eval mode (a validation, continuous batching's rollouts), and training forwards fail on the repacked weights
    afterwards: a model being trained keeps the layout it trains on."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def is_out_of_memory(err: BaseException) -> bool:
    return type(err).__name__ == "OutOfMemoryError" or "out of memory" in str(err).lower()


def attach_adapter(model, adapter_dir: str | Path, backend: str, allow_pickle: bool = False):
    """Load a trained LoRA adapter onto a base model for inference; errors keep their real cause."""
    from peft import PeftModel

    check_safetensors(adapter_dir, allow_pickle)
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if Path(adapter_dir).is_dir() and not weights.is_file() and not (Path(adapter_dir) / "adapter_model.bin").is_file():
        raise ModelLoadError(f"{adapter_dir} has no adapter weights (adapter_model.safetensors is missing): a "
                             "checkpoint cut short, or not an adapter folder; use another checkpoint-* or the final "
                             "adapter/")
    if weights.is_file():
        verify_safetensors(weights)
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as err:
        detail = " ".join(line.strip() for line in str(err).strip().splitlines()[:2])[:300]
        if is_out_of_memory(err):
            raise ModelLoadError(f"out of GPU memory while attaching the adapter {adapter_dir} ({detail}); free the "
                                 "GPU or load the base with less memory (--load_in_4bit true, --offload true)") from err
        if "size mismatch" in str(err) or isinstance(err, KeyError):
            raise ModelLoadError(f"the adapter in {adapter_dir} does not fit this base model ({detail}). Was it "
                                 f"trained on {read_adapter_base(adapter_dir)}? "
                                 "Pass that model as --base_model_id") from err
        raise ModelLoadError(f"could not attach the adapter in {adapter_dir}: {detail}") from err


def save_adapter(model, tokenizer, out_dir: str | Path) -> Path:
    """adapter_config.json + adapter_model.safetensors + tokenizer files."""
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    record_absolute_base(out_dir)
    return out_dir
