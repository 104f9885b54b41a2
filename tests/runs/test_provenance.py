"""runs/provenance.py: runs are combined only with runs made for the same inputs; a bare predictions.csv (no
report.json) is refused unless asked for; every refusal is one line naming both sides."""

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from mcqtune.infer.cascade import read_first_run
from mcqtune.runs.provenance import ProvenanceError, check_answered, check_same_answered
from tests.helpers import IDS, random_probs, run_ensemble, write_member


def sha(name):
    return hashlib.sha256(name.encode()).hexdigest()  # the helpers' stand-in for a test file's bytes


def frame():
    return pd.DataFrame({"ID": list(IDS)})


def test_rescore_refuses_a_first_run_of_another_test_file_with_the_same_ids(tmp_path):
    first = write_member(tmp_path / "a_run", random_probs(1), test_file="other.csv")
    with pytest.raises(ProvenanceError) as caught:
        read_first_run(first, frame(), test_sha=sha("test.csv"), test_name="test.csv")
    message = str(caught.value)
    assert "\n" not in message and "another test file" in message and "other.csv" in message and "test.csv" in message
    assert len(read_first_run(first, frame(), test_sha=sha("other.csv"), test_name="other.csv")) == len(IDS)


def test_a_bare_predictions_file_is_refused_unless_asked_for(tmp_path):
    first = write_member(tmp_path / "a_run", random_probs(1))
    (first / "report.json").unlink()
    with pytest.raises(ProvenanceError, match="--allow_bare_predictions true"):
        read_first_run(first, frame(), test_sha=sha("test.csv"), test_name="test.csv")
    assert len(read_first_run(first, frame(), test_sha=sha("test.csv"), allow_bare=True)) == len(IDS)
    (first / "report.json").write_text("{not json")  # a damaged record proves nothing either
    with pytest.raises(ProvenanceError, match="no report.json"):
        check_answered(first / "predictions.csv", sha("test.csv"), consumer="x", test_name="test.csv")


def test_ensemble_refuses_members_of_different_test_files_and_bare_members(tmp_path, capsys):
    a = write_member(tmp_path / "a_run", random_probs(1))
    b = write_member(tmp_path / "b_run", random_probs(2), test_file="shifted.csv")
    status, out = run_ensemble([a, b, "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and out.err.count("\n") == 1 and "different test files" in out.err
    assert not (tmp_path / "sub.csv").exists()
    bare = write_member(tmp_path / "c_run", random_probs(3))
    (bare / "report.json").unlink()
    status, out = run_ensemble([a, bare / "predictions.csv", "--output_file", tmp_path / "sub.csv"], capsys)
    assert status == 1 and "--allow_bare_predictions true" in out.err and not (tmp_path / "sub.csv").exists()
    status, out = run_ensemble([a, bare / "predictions.csv", "--output_file", tmp_path / "sub.csv",
                                "--allow_bare_predictions", "true"], capsys)
    assert status == 0 and (tmp_path / "sub.csv").is_file()


def test_same_answered_names_the_two_files(tmp_path):
    a = write_member(tmp_path / "a", random_probs(1)) / "predictions.csv"
    b = write_member(tmp_path / "b", random_probs(1), test_file="b.csv") / "predictions.csv"
    assert check_same_answered([a, a], consumer="x") == sha("test.csv")
    with pytest.raises(ProvenanceError) as caught:
        check_same_answered([a, b], consumer="ensemble")
    assert str(a) in str(caught.value) and str(b) in str(caught.value)


def test_ensemble_adapters_of_another_base_model_are_refused(tiny_model_dir, random_adapter, qwen_tokenizer,
                                                              tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mcqtune.infer.options import InferArguments
    from mcqtune.infer.setup import load_request
    from mcqtune.tiny.qwen import write_tiny_qwen

    other_base = write_tiny_qwen(tmp_path / "other-base", tokenizer=qwen_tokenizer, hidden_size=64,
                                 intermediate_size=128)
    torch.manual_seed(0)
    other = get_peft_model(AutoModelForCausalLM.from_pretrained(other_base, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    other.save_pretrained(tmp_path / "other-adapter")
    args = InferArguments(test_file="t.csv", model_path=str(random_adapter), ensemble=[str(tmp_path / "other-adapter")])
    with pytest.raises(ProvenanceError) as caught:
        load_request(args, "hf")
    message = str(caught.value)
    assert "\n" not in message and "other-adapter" in message and str(other_base) in message
    same = InferArguments(test_file="t.csv", model_path=str(random_adapter), ensemble=[str(random_adapter)])
    assert load_request(same, "hf").ensemble == [str(random_adapter)]


def fake_adapter(folder, **prompt):
    """An adapter folder with the provenance record training writes (the default prompt, overridden)."""
    from mcqtune.infer.options import InferArguments
    from mcqtune.runs.provenance import write_adapter_record

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    options = InferArguments(**prompt)
    options.model_name_or_path = "base"
    write_adapter_record(folder, options, None)
    return folder


def test_an_adapter_answers_with_its_training_prompt_unless_told_otherwise(tmp_path):
    from mcqtune.infer.options import InferArguments
    from mcqtune.infer.setup import adopt_training_prompt

    adapter = fake_adapter(tmp_path / "adapter", system_prompt="", max_prompt_tokens=384)
    args, info = adopt_training_prompt(InferArguments(model_path=str(adapter)))
    assert args.system_prompt == "" and args.max_prompt_tokens == 384  # the defaults give way to training's
    assert info == {"adopted_from_adapter": ["max_prompt_tokens", "system_prompt"], "differs_from_training": [],
                    "trained_max_prompt_tokens": 384}
    with pytest.raises(ProvenanceError) as caught:  # an explicit other value is refused
        adopt_training_prompt(InferArguments(model_path=str(adapter), user_template="{question} {A}{B}{C}{D}"))
    assert "--user_template" in str(caught.value) and "--prompt_mismatch_ok true" in str(caught.value)
    args, info = adopt_training_prompt(InferArguments(model_path=str(adapter), user_template="{question}{A}{B}{C}{D}",
                                                      prompt_mismatch_ok=True))
    assert args.user_template == "{question}{A}{B}{C}{D}" and info["differs_from_training"] == ["user_template"]
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages }}")
    trained_with_file = fake_adapter(tmp_path / "templated", chat_template=str(template))
    args, _ = adopt_training_prompt(InferArguments(model_path=str(trained_with_file)))
    assert args.chat_template == "{{ messages }}"  # the template's text travels with the adapter
    plain = tmp_path / "not-ours"
    plain.mkdir()
    (plain / "adapter_config.json").write_text("{}")
    untouched = InferArguments(model_path=str(plain), system_prompt="x")
    assert adopt_training_prompt(untouched) == (untouched, None)


def test_ensemble_adapters_trained_with_different_prompts_are_refused(tmp_path):
    from mcqtune.infer.options import InferArguments
    from mcqtune.infer.setup import adopt_training_prompt

    a = fake_adapter(tmp_path / "a")
    b = fake_adapter(tmp_path / "b", system_prompt="")
    with pytest.raises(ProvenanceError, match="system_prompt"):
        adopt_training_prompt(InferArguments(model_path=str(a), ensemble=[str(b)]))


@pytest.mark.slow
def test_training_records_how_the_adapter_was_trained(trained_run):
    record = json.loads((trained_run["dir"] / "adapter" / "mcq_provenance.json").read_text())
    script_args = trained_run["summary"]["script_args"]
    assert record["base_model"] == script_args["model_name_or_path"]
    assert {k: record["prompt"][k] for k in ("system_prompt", "user_template", "max_prompt_tokens")} == \
        {k: script_args[k] for k in ("system_prompt", "user_template", "max_prompt_tokens")}
    assert record["train_file"]["bytes_sha256"]
    assert record["base_config"]["hidden_size"] == json.loads(
        (Path(script_args["model_name_or_path"]) / "config.json").read_text())["hidden_size"]


def test_nothing_is_written_into_an_input(tiny_model_dir, random_adapter, tmp_path):
    """The submission or run folder inside the base model, the adapter or the adapter's base is refused; so is a
    training output folder inside the model."""
    from mcqtune.infer.options import InferArguments
    from mcqtune.infer.outputs import output_problems
    from mcqtune.errors import ConfigError
    from mcqtune.train import options as train_options
    from tests.helpers import train_args

    test_file = tmp_path / "test.csv"
    test_file.write_text("ID,question\n")
    for output in (tiny_model_dir / "model.safetensors", random_adapter / "adapter_config.json",
                   tiny_model_dir / "sub.csv"):
        problems = output_problems(InferArguments(test_file=str(test_file), model_path=str(random_adapter),
                                                  output_file=str(output)))
        assert any("would overwrite the input" in p for p in problems), (output, problems)
    inside_run = InferArguments(test_file=str(test_file), model_path=str(random_adapter),
                                output_file=str(tmp_path / "sub.csv"), output_dir=str(tiny_model_dir / "run"))
    assert output_problems(inside_run)
    fine = InferArguments(test_file=str(test_file), model_path=str(random_adapter), output_file=str(tmp_path / "s.csv"))
    assert output_problems(fine) == []
    with pytest.raises(ConfigError, match="lies inside the model folder"):
        train_options.check_config(*train_args(tiny_model_dir, test_file, tiny_model_dir / "out"))


def test_a_new_training_run_never_overwrites_a_readme_it_did_not_write(tmp_path):
    """TRL writes its model card to <output_dir>/README.md: an earlier one is moved aside first, kept whole."""
    from mcqtune.training.checkpoints import set_aside_previous_run

    (tmp_path / "README.md").write_text("my notes")
    kept = set_aside_previous_run(tmp_path)
    assert not (tmp_path / "README.md").exists() and (kept / "README.md").read_text() == "my notes"


def write_config(folder, **config):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_an_adapter_is_used_only_on_the_model_it_was_trained_on(tmp_path, caplog):
    from mcqtune.model.merged import resolve_base
    from mcqtune.runs.provenance import ADAPTER_RECORD, check_base_of_adapter, model_config

    trained_on = write_config(tmp_path / "instruct", hidden_size=64, max_position_embeddings=32768, eos_token_id=2,
                              torch_dtype="bfloat16")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    record = {"base_model": trained_on, "base_config": model_config(trained_on)}
    (adapter / ADAPTER_RECORD).write_text(json.dumps(record))
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": trained_on}))
    four_bit_copy = write_config(tmp_path / "copy-nf4", hidden_size=64, max_position_embeddings=32768, eos_token_id=2,
                                 torch_dtype="float16", quantization_config={"load_in_4bit": True})
    with caplog.at_level("WARNING", logger="mcqtune.runs.provenance"):
        check_base_of_adapter(adapter, four_bit_copy, consumer="export")  # another copy of that model: fine, said
        check_base_of_adapter(adapter, trained_on, consumer="export")  # the very folder: nothing to say
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "is taken as a copy of it" in said[0] and "copy-nf4" in said[0], said
    same_shape_other = write_config(tmp_path / "base", hidden_size=64, max_position_embeddings=131072, eos_token_id=1)
    with pytest.raises(ProvenanceError) as caught:
        check_base_of_adapter(adapter, same_shape_other, consumer="export")
    message = str(caught.value)
    assert "\n" not in message and "eos_token_id 2 vs 1" in message and "instruct" in message
    with pytest.raises(ProvenanceError, match="trained on another model"):  # export checks it before merging
        resolve_base(adapter, same_shape_other)
    assert resolve_base(adapter, None) == trained_on
    (adapter / ADAPTER_RECORD).write_text(json.dumps({"base_model": trained_on}))  # an older record: shape only
    check_base_of_adapter(adapter, same_shape_other, consumer="export")


def test_a_predictions_file_edited_after_its_run_is_refused_wherever_its_record_is_read(tmp_path):
    """report.json records the sha256 of the predictions.csv beside it: a hand-edited file (its probabilities may
    still sum to 1) would otherwise be vouched for by a record of other answers."""
    import json

    from mcqtune.runs.identity import sha256_file
    from mcqtune.runs.provenance import PREDICTIONS_HASH, check_same_answered, predictions_record

    predictions = tmp_path / "predictions.csv"
    predictions.write_text("ID,answer,p_A,p_B,p_C,p_D\n1,A,0.7,0.1,0.1,0.1\n")
    record = {"test_file_sha256": "ab" * 32, PREDICTIONS_HASH: sha256_file(predictions)}
    (tmp_path / "report.json").write_text(json.dumps(record))
    assert predictions_record(predictions) == record
    predictions.write_text("ID,answer,p_A,p_B,p_C,p_D\n1,B,0.1,0.7,0.1,0.1\n")
    with pytest.raises(ProvenanceError, match=r"predictions.csv was changed after its run wrote it"):
        check_same_answered([predictions], consumer="ensemble")
    (tmp_path / "report.json").write_text(json.dumps({"test_file_sha256": "ab" * 32}))  # a run from before the hash
    assert predictions_record(predictions) == {"test_file_sha256": "ab" * 32}
