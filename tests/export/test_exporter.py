"""export.py: merged weights that plain transformers loads, GGUF that llama.cpp runs, an lm-eval task that agrees;
damaged weights and conflicting options fail with one line."""

import shutil

import pytest

from mcqtune.cli import export as export_cli
from mcqtune.export import exporter as export
from mcqtune.errors import run_cli
from tests.helpers import run_script


@pytest.mark.slow
def test_a_checkpoint_exports_as_a_clean_adapter_with_its_step_and_accuracy(trained_run, tmp_path):
    from mcqtune.export.exporter import export_adapter

    checkpoint = sorted((trained_run["dir"]).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[0]
    out = export_adapter(checkpoint, tmp_path / "shared")
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json", "README.md"} <= files
    assert not files & {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "mcq_checkpoint.json"}
    card = (out / "README.md").read_text()
    assert f"checkpoint at step {checkpoint.name.split('-')[1]}" in card and "validation accuracy: " in card


def test_cli_refuses_a_folder_that_is_no_adapter(tmp_path):
    result = run_script("export.py", "--adapter_path", tmp_path, "--format", "merged", "--output_dir", tmp_path / "out")
    assert result.returncode == 1 and "is not a LoRA adapter folder" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ dtype of merged weights


# ------------------------------------------------------------------------------------------ damaged weights


def damaged_copy(adapter, folder):
    shutil.copytree(adapter, folder)
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return folder


@pytest.mark.parametrize("format_", ["adapter", "merged"])
def test_a_cut_short_adapter_fails_with_one_line(random_adapter, tmp_path, capsys, format_):
    adapter = damaged_copy(random_adapter, tmp_path / "cut")
    status = run_cli(export_cli.main, ["--adapter_path", str(adapter), "--format", format_,
                                   "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert "adapter_model.safetensors" in err[0] and "cut short" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()


def test_a_copy_that_comes_out_short_fails(random_adapter, tmp_path, capsys, monkeypatch):
    copy2 = shutil.copy2

    def short_copy(source, target):
        copy2(source, target)
        if str(target).endswith(".safetensors"):
            data = open(target, "rb").read()
            open(target, "wb").write(data[:-100])

    monkeypatch.setattr(shutil, "copy2", short_copy)
    status = run_cli(export_cli.main, ["--adapter_path", str(random_adapter), "--format", "adapter",
                                   "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and "bytes: check the free space" in err[0], err


def test_a_copy_that_comes_out_damaged_fails(random_adapter, tmp_path, capsys, monkeypatch):
    copy2 = shutil.copy2

    def garbling_copy(source, target):
        copy2(source, target)
        if str(target).endswith(".safetensors"):
            data = bytearray(open(target, "rb").read())
            data[:8] = (2**40).to_bytes(8, "little")  # a header length far past the end of the file
            open(target, "wb").write(bytes(data))

    monkeypatch.setattr(shutil, "copy2", garbling_copy)
    status = run_cli(export_cli.main, ["--adapter_path", str(random_adapter), "--format", "adapter",
                                   "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and str(tmp_path / "out" / "adapter_model.safetensors") in err[0], err


def test_a_whole_adapter_exports_and_its_copy_is_verified(random_adapter, tmp_path):
    assert run_cli(export_cli.main, ["--adapter_path", str(random_adapter), "--format", "adapter",
                                 "--output_dir", str(tmp_path / "out")]) == 0
    copied = tmp_path / "out" / "adapter_model.safetensors"
    assert copied.read_bytes() == (random_adapter / "adapter_model.safetensors").read_bytes()


# ------------------------------------------------------------------------------------------ options


@pytest.mark.parametrize("extra, message", [
    (["--format", "gguf"], "--lm_eval_task writes an lm-eval task and exports no model"),
    (["--format", "merged"], "--lm_eval_task writes an lm-eval task and exports no model"),
    (["--dtype", "float16"], "--dtype does not apply to --lm_eval_task"),
    (["--adapter_path", "x"], "--adapter_path x: no such folder"),
])
def test_lm_eval_task_refuses_model_options(sample_dir, tmp_path, capsys, extra, message):
    status = run_cli(export_cli.main, ["--lm_eval_task", str(sample_dir / "test.csv"), *extra,
                                   "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--format", "adapter", "--dtype", "float16"], "--dtype does not apply to --format adapter"),
    (["--format", "gguf", "--dtype", "float32"], "--dtype does not apply to --format gguf"),
    (["--format", "merged", "--gguf_type", "f16"], "--gguf_type does not apply to --format merged"),
    (["--model", "Qwen/Qwen2.5-0.5B"],
     "--model does not apply to --format merged: leave it out (it is for --format 4bit)"),
])
def test_options_the_format_does_not_use_are_refused(random_adapter, tmp_path, capsys, argv, message):
    status = run_cli(export_cli.main, ["--adapter_path", str(random_adapter), *argv,
                                       "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_lm_eval_task_alone_is_written(sample_dir, tmp_path):
    assert run_cli(export_cli.main, ["--lm_eval_task", str(sample_dir / "test.csv"),
                                     "--output_dir", str(tmp_path)]) == 0
    assert (tmp_path / "mcq_test.yaml").is_file()


def test_main_raises_what_run_cli_prints(tmp_path):
    with pytest.raises(export.ExportError, match="is not a LoRA adapter folder"):
        export_cli.main(["--adapter_path", str(tmp_path), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(export.ExportError, match="needs --adapter_path"):
        export_cli.main(["--format", "adapter", "--output_dir", str(tmp_path / "out")])


def test_an_export_never_writes_into_a_used_folder(random_adapter, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in random_adapter.iterdir() if p.is_file()}
    for target in (random_adapter, random_adapter.parent):  # the adapter itself, the run folder around it
        status = run_cli(export_cli.main, ["--adapter_path", str(random_adapter), "--format", "adapter",
                                       "--output_dir", str(target)])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 1 and len(err) == 1 and "is not an empty folder" in err[0], err
    assert {p.name: p.read_bytes() for p in random_adapter.iterdir() if p.is_file()} == before


def test_an_lm_eval_task_for_an_adapter_has_the_prompt_it_was_trained_with(sample_dir, tmp_path, capsys):
    import json

    import yaml

    from mcqtune.export.lm_eval_task import to_jinja

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    prompt = {"system_prompt": "", "user_template": "题目：{question}\nA:{A}\nB:{B}\nC:{C}\nD:{D}\n答：",
              "reasoning": False}
    (adapter / "mcq_provenance.json").write_text(json.dumps({"prompt": prompt}))
    assert run_cli(export_cli.main, ["--lm_eval_task", str(sample_dir / "test.csv"), "--adapter_path", str(adapter),
                                     "--output_dir", str(tmp_path / "task")]) == 0
    task = yaml.safe_load((tmp_path / "task" / "mcq_test.yaml").read_text(encoding="utf-8"))
    assert task["doc_to_text"] == to_jinja(prompt["user_template"])
    assert (tmp_path / "task" / "system_prompt.txt").read_text(encoding="utf-8") == ""
    for change, message in (({"reasoning": True}, "was trained to reason before its letter"),
                            ({"enable_thinking": True}, "thinking switch on"), (None, "holds no mcq_provenance.json")):
        if change is None:
            (adapter / "mcq_provenance.json").unlink()
        else:
            (adapter / "mcq_provenance.json").write_text(json.dumps({"prompt": {**prompt, **change}}))
        assert run_cli(export_cli.main, ["--lm_eval_task", str(sample_dir / "test.csv"), "--adapter_path",
                                         str(adapter), "--output_dir", str(tmp_path / "task2")]) == 1
        assert message in capsys.readouterr().err
