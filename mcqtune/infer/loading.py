"""The model infer.py answers with: the ways to load its base (the loading ladder), its adapters on top, and the
precision it was actually loaded in."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mcqtune.model.options import InferenceWeightOptions
from mcqtune.model.loading import (ModelLoadError, attach_adapter, check_safetensors, is_out_of_memory, load_base_model,
                      load_tokenizer)

logger = logging.getLogger(__name__)


@dataclass
class InferenceLoad:
    """What infer.py asks for: the base, the adapters on it, and how the weights may be held (``weights``: infer's
    loading options, the backend in them resolved)."""

    base: str
    weights: InferenceWeightOptions
    adapter: str | None = None
    ensemble: Sequence[str] = ()
    chat_template: str | None = None
    max_seq_length: int = 560
    device_map: Any = None

    def ways(self) -> list[tuple[str, dict]]:
        """(name, load_base_model kwargs) to try in order: the asked-for way, then (with the ladder) the rest."""
        table = {"4-bit": dict(load_in_4bit=True, device_map=self.device_map),
                 "8-bit": dict(load_in_4bit=False, load_in_8bit=True, device_map=self.device_map),
                 "16-bit": dict(load_in_4bit=False, device_map=self.device_map),
                 "16-bit with CPU offload": dict(load_in_4bit=False, device_map="auto")}
        weights = self.weights
        # --load_in_8bit overrides the 4-bit default
        first = "8-bit" if weights.load_in_8bit else "4-bit" if weights.load_in_4bit else "16-bit"
        if weights.offload:
            first, table[first] = f"{first} with CPU offload", {**table[first], "device_map": "auto"}
        names = [first]
        if weights.fallback_ladder:
            names += [n for n in ("8-bit", "16-bit with CPU offload") if n != first and not first.startswith(n)]
        return [(name, table[name]) for name in names]


def loading_advice(way: str, err: BaseException) -> str:
    """One line: what went wrong loading in ``way`` and which option to change."""
    if is_out_of_memory(err):
        return (f"out of GPU memory loading the model in {way} ({str(err).splitlines()[0][:200]}). Free the GPU, or "
                "pass --offload true (part of the weights in CPU memory, slower), or --fallback_ladder true to try "
                "8-bit and offloading in turn; if it happens while answering, lower --batch_size")
    return (f"could not load the model in {way}: {type(err).__name__}: {str(err).splitlines()[0][:300]}. If the "
            "4-bit kernels are missing (bitsandbytes without GPU support), install requirements.txt on a CUDA "
            "machine, or pass --load_in_4bit false --load_in_8bit true (8-bit) or --load_in_4bit false (16-bit), "
            "or --fallback_ladder true to try them in turn")


def precision_of(model) -> str:
    """The precision the weights were actually loaded in, e.g. '4-bit NF4', '8-bit', 'bfloat16 + CPU offload'."""
    if getattr(model, "is_loaded_in_4bit", False):
        name = "4-bit NF4"
    elif getattr(model, "is_loaded_in_8bit", False):
        name = "8-bit"
    else:
        name = str(next(model.parameters()).dtype).replace("torch.", "")
    placement = set(str(v) for v in (getattr(model, "hf_device_map", None) or {}).values())
    return name + (" + CPU offload" if placement & {"cpu", "disk"} else "")


def load_inference_model(request: InferenceLoad):
    """(model, tokenizer, info) for answering; info = requested way, precision loaded, failed ways.

    Without ``fallback_ladder`` a failed load stops with ``loading_advice``; with it, the next way is tried
    and every failure is returned in ``info['fallbacks']`` (infer.py writes it to report.json).
    """
    failures, weights = [], request.weights
    for way, kwargs in request.ways():
        try:
            model, tokenizer = load_base_model(
                request.base, weights.backend, max_seq_length=request.max_seq_length,
                trust_remote_code=weights.trust_remote_code, training=False, allow_pickle=weights.allow_pickle,
                **kwargs)
            break
        except ModelLoadError:
            raise
        except (RuntimeError, ValueError, ImportError, OSError) as err:
            if not weights.fallback_ladder:
                raise ModelLoadError(loading_advice(way, err)) from err
            logger.warning("loading %s in %s failed (%s); trying the next way", request.base, way, err)
            failures.append({"way": way, "error": f"{type(err).__name__}: {str(err)[:300]}"})
    else:
        raise ModelLoadError(f"could not load {request.base} in any way: "
                             + " | ".join(f"{f['way']}: {f['error']}" for f in failures))
    model, tokenizer = _add_adapters(model, tokenizer, request)
    info = {"precision_requested": request.ways()[0][0], "loaded_as": way, "precision": precision_of(model),
            "fallbacks": failures}
    _warn_if_degraded(info)
    return model, tokenizer, info


def _add_adapters(model, tokenizer, request: InferenceLoad):
    weights = request.weights
    if request.adapter:
        model = attach_adapter(model, request.adapter, weights.backend, weights.allow_pickle)
        if (Path(request.adapter) / "tokenizer_config.json").is_file():
            tokenizer = load_tokenizer(request.adapter, weights.trust_remote_code)
    if request.chat_template:
        tokenizer = load_tokenizer(request.adapter or request.base, weights.trust_remote_code, request.chat_template)
    for number, extra in enumerate(request.ensemble):
        check_safetensors(extra, weights.allow_pickle)
        model.load_adapter(extra, adapter_name=f"ensemble_{number}", is_trainable=False)
    if weights.backend == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    model.eval()
    tokenizer.padding_side = "left"
    return model, tokenizer


def _warn_if_degraded(info: dict) -> None:
    import torch

    if info["fallbacks"]:
        logger.warning("loaded in %s after %d failed way(s); recorded in report.json", info["loaded_as"],
                       len(info["fallbacks"]))
    if info["precision_requested"].startswith("4-bit") and not info["precision"].startswith("4-bit"):
        reason = "this machine has no CUDA GPU" if not torch.cuda.is_available() else "the backend did not quantise"
        logger.warning("4-bit was asked for but %s: the weights are %s (recorded in report.json)", reason,
                       info["precision"])
    logger.info("model precision: %s", info["precision"])
