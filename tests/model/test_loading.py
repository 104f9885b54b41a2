"""model/loading.py: a failure to attach an adapter keeps its real cause in the message."""

import peft
import pytest
import torch

from mcqtune.model.loading import ModelLoadError, attach_adapter


def test_adapter_out_of_memory_keeps_its_real_cause(random_adapter, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB")

    monkeypatch.setattr(peft.PeftModel, "from_pretrained", no_memory)
    with pytest.raises(ModelLoadError, match="out of GPU memory while attaching") as caught:
        attach_adapter(object(), random_adapter, "hf")
    assert "does not fit" not in str(caught.value)


def fake_hub_cache(root, repo_id: str) -> None:
    """The hub cache's layout for one model: refs/main names a snapshot that holds config.json."""
    folder = root / ("models--" + repo_id.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (folder / "snapshots" / ("0" * 40) / "config.json").write_text("{}")


def test_offline_hub_id_must_be_in_the_cache(tmp_path, monkeypatch):
    """With HF_HUB_OFFLINE=1 a name that is neither a local folder nor cached stops with what to pass (a
    mistyped local path such as outputs/tiny-qwen looks like a hub id); a cached one is accepted."""
    from huggingface_hub import constants

    from mcqtune.model.loading import check_model_source

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="outputs/tiny-qwen is not a local folder, and it is not in the hub cache"):
        check_model_source("outputs/tiny-qwen")
    fake_hub_cache(tmp_path, "Qwen/Qwen2.5-14B-Instruct-1M")
    check_model_source("Qwen/Qwen2.5-14B-Instruct-1M")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    check_model_source("outputs/tiny-qwen")  # online, a hub id is for the hub to answer


def test_plain_peft_adapters_start_from_the_seed(tiny_model_dir):
    """With the hf backend the adapters' random start comes from --seed, as Unsloth's random_state does: the same
    seed gives the same start whatever used the random generator before, another seed another start."""
    from mcqtune.model.options import LoraOptions
    from mcqtune.model.loading import add_lora, load_base_model

    def start(seed: int) -> dict:
        model, _ = load_base_model(tiny_model_dir, "hf", load_in_4bit=False, training=True)
        torch.rand(1000)  # what ran before in this process
        peft_model = add_lora(model, "hf", LoraOptions(), gradient_checkpointing=False, seed=seed)
        return {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_A" in n}

    first, again, other = start(7), start(7), start(8)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)


REMOTE_CODE_CONFIG = {"model_type": "internlm3", "architectures": ["InternLM3ForCausalLM"],
                      "auto_map": {"AutoConfig": "configuration_internlm3.InternLM3Config",
                                   "AutoModelForCausalLM": "modeling_internlm3.InternLM3ForCausalLM"}}


def test_a_model_that_needs_its_own_code_is_refused_in_one_line_without_trust_remote_code(tmp_path, sample_dir):
    import json

    from mcqtune.model.loading import ModelLoadError, check_remote_code, remote_code_of
    from tests.helpers import run_script

    model = tmp_path / "internlm3"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(REMOTE_CODE_CONFIG))
    assert remote_code_of(model) == "internlm3"
    with pytest.raises(ModelLoadError, match="model type 'internlm3' is not in transformers"):
        check_remote_code(model, trust_remote_code=False)
    check_remote_code(model, trust_remote_code=True)  # asked for: allowed
    native = tmp_path / "qwen2-with-auto-map"  # a type transformers has: its own class, no code runs
    native.mkdir()
    (native / "config.json").write_text(json.dumps({**REMOTE_CODE_CONFIG, "model_type": "qwen2"}))
    assert remote_code_of(native) is None
    for script, argv in (("infer.py", ["--model_path", model, "--test_file", sample_dir / "test.csv",
                                       "--output_file", tmp_path / "s.csv"]),
                         ("train_sft.py", ["--config", "demo-cpu.yaml", "--model_name_or_path", model,
                                           "--train_file", sample_dir / "train.csv", "--output_dir", tmp_path / "o"])):
        result = run_script(script, *argv)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "--trust_remote_code true" in \
            result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_unsloths_cpu_banner_stays_out_of_a_commands_output():
    """On a machine without a GPU, importing Unsloth prints "no GPU found, training on CPU" even for a run that only
    answers; select_backend keeps it out of stdout (a debug line of the log)."""
    import subprocess
    import sys

    pytest.importorskip("unsloth")
    code = ("import torch; from mcqtune.model.loading import select_backend; "
            "print('backend', select_backend('auto'), torch.cuda.is_available())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    if result.stdout.split()[-1] == "True":
        pytest.skip("a GPU is present: Unsloth's banner is its own")
    assert result.stdout.strip() == "backend unsloth False", result.stdout


def test_a_checkpoints_trainer_state_is_not_taken_for_pickle_weights(tmp_path):
    """A checkpoint that lost its adapter weights still holds the Trainer's pickles (optimizer, scheduler, random
    state): they are not weights, so loading says the weights are missing instead of offering --allow_pickle."""
    import pytest

    from mcqtune.model.loading import ModelLoadError, check_safetensors

    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "rng_state_1.pth", "training_args.bin"):
        (tmp_path / name).write_bytes(b"pickle")
    check_safetensors(tmp_path)  # nothing here to refuse: the missing weights are named where they are loaded
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match=r"only pickle weights \(adapter_model.bin\)"):
        check_safetensors(tmp_path)
