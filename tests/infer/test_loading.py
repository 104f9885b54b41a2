"""infer/loading.py: the ways a model is loaded in, in order; a failed load stops with the option to change unless
the ladder is asked for; the precision reported is the one the weights got."""

import pytest
import torch

from mcqtune.infer import run as infer
from mcqtune.infer import loading as infer_loading
from tests.helpers import infer_args
from mcqtune.infer.loading import InferenceLoad, load_inference_model, loading_advice, precision_of
from mcqtune.model.options import InferenceWeightOptions


def _ways(**options) -> list[str]:
    return [name for name, _ in InferenceLoad(base="m", weights=InferenceWeightOptions(**options)).ways()]


@pytest.mark.parametrize("options, ways", [
    ({}, ["4-bit"]),
    ({"load_in_8bit": True}, ["8-bit"]),  # --load_in_8bit overrides the 4-bit default
    ({"load_in_4bit": False}, ["16-bit"]),
    ({"offload": True}, ["4-bit with CPU offload"]),
    ({"fallback_ladder": True}, ["4-bit", "8-bit", "16-bit with CPU offload"]),
    ({"fallback_ladder": True, "load_in_8bit": True}, ["8-bit", "16-bit with CPU offload"]),
    ({"fallback_ladder": True, "offload": True}, ["4-bit with CPU offload", "8-bit", "16-bit with CPU offload"]),
])
def test_the_ways_tried_follow_the_loading_options(options, ways):
    assert _ways(**options) == ways


def test_each_way_asks_load_base_model_for_its_precision_and_placement():
    request = InferenceLoad(base="m", weights=InferenceWeightOptions(fallback_ladder=True), device_map={"": 1})
    assert dict(request.ways()) == {
        "4-bit": {"load_in_4bit": True, "device_map": {"": 1}},
        "8-bit": {"load_in_4bit": False, "load_in_8bit": True, "device_map": {"": 1}},
        "16-bit with CPU offload": {"load_in_4bit": False, "device_map": "auto"}}


def test_the_advice_names_the_option_to_change():
    no_memory = loading_advice("4-bit", torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 MiB"))
    assert no_memory.startswith("out of GPU memory loading the model in 4-bit (CUDA out of memory")
    assert "--offload true" in no_memory and "--fallback_ladder true" in no_memory
    other = loading_advice("8-bit", RuntimeError("no kernel image\nsecond line"))
    assert other.startswith("could not load the model in 8-bit: RuntimeError: no kernel image.")
    assert "second line" not in other and "--load_in_4bit false --load_in_8bit true" in other


class _Loaded(torch.nn.Linear):
    def __init__(self, device_map=None, **flags):
        super().__init__(2, 2)
        self.hf_device_map = device_map
        for name, value in flags.items():
            setattr(self, name, value)


@pytest.mark.parametrize("model, precision", [
    (_Loaded(), "float32"),
    (_Loaded(is_loaded_in_4bit=True), "4-bit NF4"),
    (_Loaded(is_loaded_in_8bit=True, device_map={"a": 0, "b": "cpu"}), "8-bit + CPU offload"),
    (_Loaded(device_map={"a": 0, "b": 0}), "float32"),
])
def test_the_precision_is_the_one_the_weights_got(model, precision):
    assert precision_of(model) == precision


def test_an_unquantised_load_answers_in_eval_mode_with_left_padding(tiny_model_dir):
    request = InferenceLoad(base=str(tiny_model_dir), weights=InferenceWeightOptions(backend="hf", load_in_4bit=False))
    model, tokenizer, info = load_inference_model(request)
    assert info == {"precision_requested": "16-bit", "loaded_as": "16-bit", "precision": "float32", "fallbacks": []}
    assert not model.training and tokenizer.padding_side == "left"


@pytest.mark.slow
def test_a_failed_4bit_load_stops_loudly_unless_the_ladder_is_asked_for(trained_run, tmp_path, monkeypatch):
    import json

    import torch

    from mcqtune.model.loading import ModelLoadError

    real_load = infer_loading.load_base_model

    def no_memory_when_quantised(*args, **kwargs):
        if kwargs.get("load_in_4bit") or kwargs.get("load_in_8bit"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(infer_loading, "load_base_model", no_memory_when_quantised)
    with pytest.raises(ModelLoadError, match="out of GPU memory loading the model in 4-bit.*--offload true"):
        infer.run(infer_args(trained_run, tmp_path))
    assert not (tmp_path / "submission.csv").exists()
    report = infer.run(infer_args(trained_run, tmp_path, fallback_ladder=True))
    assert [f["way"] for f in report["fallbacks"]] == ["4-bit", "8-bit"]
    assert report["loaded_as"] == "16-bit with CPU offload" and report["precision_requested"] == "4-bit"
    saved = json.loads((tmp_path / "submission_run" / "report.json").read_text())
    assert saved["precision"] == report["precision"] and saved["precision"].startswith("float32")
    header = json.loads((tmp_path / "submission_run" / "predictions.partial.jsonl").read_text().splitlines()[0])
    assert header["fingerprint"]["precision"] == report["precision"]
