"""infer/run.py (infer.py): complete submissions in both modes, resume after interruption, reports, and clear
failures."""


import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mcqtune.infer import run as infer
from tests.helpers import infer_args, run_script
from mcqtune.data.questions import load_mcq_csv


def check_submission(path, test_file):
    submission = pd.read_csv(path, dtype=str)
    expected_ids = list(load_mcq_csv(test_file)["ID"])
    assert list(submission.columns) == ["ID", "answer"]
    assert list(submission["ID"]) == expected_ids  # every ID once, in input order
    assert submission["answer"].isin(list("ABCD")).all()
    return submission


@pytest.mark.slow
def test_score_mode_writes_submission_predictions_and_report(trained_run, tmp_path):
    args = infer_args(trained_run, tmp_path, test_file=str(trained_run["sample_dir"] / "test.csv"))
    report = infer.run(args)
    check_submission(args.output_file, args.test_file)
    predictions = pd.read_csv(args.run_dir / "predictions.csv", dtype={"ID": str})
    probs = predictions[["p_A", "p_B", "p_C", "p_D"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert (np.array(list("ABCD"))[probs.argmax(axis=1)] == predictions["answer"]).all()
    assert report["accuracy"] >= 0.6 and len(report["accuracy_by_subject"]) == 8
    assert np.array(report["confusion_matrix"]).sum() == report["rows"]
    timing = report["answer_timing"]  # every batch timed; the first ones reported apart from the steady rate
    assert timing["batches"] == -(-report["rows"] // args.batch_size) and timing["warmup_batches"] == 2
    assert timing["steady_questions_per_second"] > 0 and 0 < timing["warmup_seconds"] < report["seconds"]
    assert 0 < report["cpu_peak_anon_gb"] <= report["cpu_peak_rss_gb"]  # the host peak, split
    markdown = (args.run_dir / "report.md").read_text()
    assert "host memory: peak" in markdown
    assert markdown.index("- speed:") < markdown.index("after the first 2 batches") < markdown.index("- answers:")
    for name in ("report.json", "report.md", "answer_distribution.png", "confusion_matrix.png",
                 "accuracy_by_subject.png"):
        assert (args.run_dir / name).is_file(), name
    assert "accuracy" in (args.run_dir / "report.md").read_text()
    # what it answered with, by content and by absolute path (runs are paired by the former: provenance.py)
    from mcqtune.runs.identity import sha256_file

    adapter = trained_run["dir"] / "adapter"
    assert report["adapters"] == [str(adapter.resolve())]
    (content,) = report["models_by_content"]
    assert content["adapter_model.safetensors_sha256"] == sha256_file(adapter / "adapter_model.safetensors")
    assert "path" not in content


@pytest.mark.slow
def test_generate_mode_parses_replies_and_scores_unreadable_ones(trained_run, tmp_path):
    args = infer_args(trained_run, tmp_path, mode="generate", max_new_tokens=6)
    report = infer.run(args)
    check_submission(args.output_file, args.test_file)
    predictions = pd.read_csv(args.run_dir / "predictions.csv", dtype={"ID": str, "raw": str})
    assert set(predictions["source"]) <= {"generate", "score_fallback"}
    fallback = predictions[predictions["source"] == "score_fallback"]
    assert (fallback["rule"].str.startswith("unparsed:")).all()
    assert report["unparsed"]["count"] == len(fallback) == len(report["unparsed"]["rows"])
    parsed = predictions[predictions["source"] == "generate"]
    assert len(parsed) > len(predictions) / 2  # the trained adapter answers with a letter most of the time
    assert (parsed["raw"].str.strip().str[0] == parsed["answer"]).all()


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_identical_submission(trained_run, tmp_path, monkeypatch):
    full = infer_args(trained_run, tmp_path / "full", output_file=str(tmp_path / "full.csv"), batch_size=24)
    infer.run(full)
    parted = infer_args(trained_run, tmp_path, output_file=str(tmp_path / "parted.csv"), batch_size=24)
    from mcqtune.runs.predictions import PredictionStore

    original_add, calls = PredictionStore.add, {"n": 0}

    def add_then_crash(self, records):
        original_add(self, records)
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupted

    monkeypatch.setattr(PredictionStore, "add", add_then_crash)
    with pytest.raises(Interrupted):
        infer.run(parted)
    monkeypatch.setattr(PredictionStore, "add", original_add)
    assert not (tmp_path / "parted.csv").exists()  # nothing half-written
    report = infer.run(parted)
    assert report["answered_this_run"] == report["rows"] - 3 * 24
    assert (tmp_path / "parted.csv").read_bytes() == (tmp_path / "full.csv").read_bytes()


@pytest.mark.slow
def test_checkpoint_from_other_settings_is_not_mixed_in(trained_run, tmp_path):
    first = infer.run(infer_args(trained_run, tmp_path))
    again = infer.run(infer_args(trained_run, tmp_path))
    assert again["answered_this_run"] == 0 and again["restarted"] is None  # identical run: everything reused
    changed = infer.run(infer_args(trained_run, tmp_path, permutations=2))
    assert changed["restarted"]["changed"] == ["permutations"]
    assert changed["answered_this_run"] == changed["rows"] == first["rows"]
    assert (tmp_path / "submission_run" / "predictions.partial.jsonl.stale").is_file()  # old answers kept aside
    (aside,) = (tmp_path / "submission_run").glob("previous-*")  # and the old submission and report with them
    assert (aside / "submission.csv").is_file() and (aside / "report.json").is_file()


def _perturb_safetensors(path, scale):
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    save_file({k: v * scale for k, v in tensors.items()}, path, metadata={"format": "pt"})


@pytest.mark.slow
def test_changed_adapter_base_or_ensemble_member_at_the_same_path_is_never_answered_from_the_old_checkpoint(
        trained_run, tmp_path):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(trained_run["dir"] / "adapter", adapter)
    test_file = str(trained_run["sample_dir"] / "test.csv")
    args = infer_args(trained_run, tmp_path, model_path=str(adapter), test_file=test_file)
    trained = infer.run(args)
    # Retraining into the same folder: same path, other weights (here: the adapter switched off).
    _perturb_safetensors(adapter / "adapter_model.safetensors", 0.0)
    retrained = infer.run(args)
    assert retrained["restarted"]["changed"] == ["model_path"]
    assert retrained["answered_this_run"] == retrained["rows"]
    fresh = infer.run(infer_args(trained_run, tmp_path / "fresh", model_path=str(adapter), test_file=test_file,
                                  output_file=str(tmp_path / "fresh" / "s.csv")))
    assert retrained["accuracy"] == fresh["accuracy"] < trained["accuracy"]
    assert (tmp_path / "submission.csv").read_bytes() == (tmp_path / "fresh" / "s.csv").read_bytes()

    base = tmp_path / "base"
    shutil.copytree(trained_run["model_dir"], base)
    plain = infer_args(trained_run, tmp_path / "b", model_path=str(base), output_file=str(tmp_path / "b" / "s.csv"))
    infer.run(plain)
    _perturb_safetensors(base / "model.safetensors", 1.5)
    assert infer.run(plain)["restarted"]["changed"] == ["model_path"]

    member = tmp_path / "member"
    shutil.copytree(trained_run["dir"] / "adapter", member)
    ensemble = infer_args(trained_run, tmp_path / "e", ensemble=[str(member)],
                          output_file=str(tmp_path / "e" / "s.csv"))
    infer.run(ensemble)
    _perturb_safetensors(member / "adapter_model.safetensors", 0.5)
    assert infer.run(ensemble)["restarted"]["changed"] == ["ensemble"]


@pytest.mark.slow
def test_pickle_weights_are_refused_unless_allowed(trained_run, tmp_path):
    import shutil

    from mcqtune.model.loading import ModelLoadError

    base = tmp_path / "bin-only"
    shutil.copytree(trained_run["model_dir"], base)
    (base / "model.safetensors").rename(base / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="only pickle weights.*--allow_pickle true"):
        infer.run(infer_args(trained_run, tmp_path, model_path=str(base)))
    import torch
    from safetensors.torch import load_file

    adapter = tmp_path / "bin-adapter"  # a real pickle adapter on the safetensors base
    shutil.copytree(trained_run["dir"] / "adapter", adapter)
    torch.save(load_file(adapter / "adapter_model.safetensors"), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="only pickle weights.*--allow_pickle true"):
        infer.run(infer_args(trained_run, tmp_path, model_path=str(adapter)))
    allowed = infer.run(infer_args(trained_run, tmp_path / "p", model_path=str(adapter), allow_pickle=True,
                                    test_file=str(trained_run["sample_dir"] / "test.csv")))
    same = infer.run(infer_args(trained_run, tmp_path / "s", test_file=str(trained_run["sample_dir"] / "test.csv")))
    assert allowed["accuracy"] == same["accuracy"]  # the base still loads from its safetensors
    (adapter / "adapter_model.bin").unlink()  # a checkpoint cut short: no weights at all, not "pickle"
    with pytest.raises(ModelLoadError, match="has no adapter weights.*cut short") as caught:
        infer.run(infer_args(trained_run, tmp_path, model_path=str(adapter), allow_pickle=True))
    assert "pickle weights" not in str(caught.value)


@pytest.mark.slow
def test_permutation_averaging_and_ensembles(trained_run, tmp_path):
    single = infer.run(infer_args(trained_run, tmp_path / "a", output_dir=str(tmp_path / "a"),
                                   test_file=str(trained_run["sample_dir"] / "test.csv")))
    adapter = str(trained_run["dir"] / "adapter")
    twice = infer_args(trained_run, tmp_path, output_dir=str(tmp_path / "b"), ensemble=[adapter],
                       output_file=str(tmp_path / "b.csv"), test_file=str(trained_run["sample_dir"] / "test.csv"))
    infer.run(twice)
    a = pd.read_csv(tmp_path / "a" / "predictions.csv")[["p_A", "p_B", "p_C", "p_D"]].to_numpy()
    b = pd.read_csv(tmp_path / "b" / "predictions.csv")[["p_A", "p_B", "p_C", "p_D"]].to_numpy()
    assert np.allclose(a, b, atol=1e-5)  # an ensemble of one adapter twice is that adapter
    permuted = infer.run(infer_args(trained_run, tmp_path, output_dir=str(tmp_path / "c"), permutations=4,
                                     output_file=str(tmp_path / "c.csv"),
                                     test_file=str(trained_run["sample_dir"] / "test.csv")))
    c = pd.read_csv(tmp_path / "c" / "predictions.csv")[["p_A", "p_B", "p_C", "p_D"]].to_numpy()
    assert np.allclose(c.sum(axis=1), 1, atol=1e-4) and not np.allclose(a, c, atol=1e-3)
    # The sample's answers follow the subject, not the option text, so the trained model keeps its letter
    # whatever the order: averaged over all four orders each option gets each letter once -> nearly flat.
    assert single["accuracy"] >= 0.6
    assert c.max(axis=1).mean() < a.max(axis=1).mean() and permuted["accuracy"] < single["accuracy"]


@pytest.mark.slow
def test_bad_input_exits_with_one_message_and_keeps_the_old_submission(trained_run, tmp_path):
    good = tmp_path / "submission.csv"
    good.write_text("ID,answer\n1,A\n")
    (tmp_path / "submission_run").mkdir()  # the earlier run that wrote it
    (tmp_path / "submission_run" / "report.json").write_text(json.dumps({"output_file": str(good.resolve())}))
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,question,option_A,option_B\n1,q,a,b\n", encoding="utf-8")
    result = run_script("infer.py", "--model_path", trained_run["dir"] / "adapter", "--test_file", bad,
                        "--output_file", good)
    assert result.returncode == 1 and "missing column(s) option_C, option_D" in result.stderr
    assert "Traceback" not in result.stderr and good.read_text() == "ID,answer\n1,A\n"
    result = run_script("infer.py", "--model_path", tmp_path / "nope", "--test_file",
                        trained_run["sample_dir"] / "test.csv", "--output_file", good)
    assert result.returncode == 1 and "does not exist" in result.stderr and good.read_text() == "ID,answer\n1,A\n"


@pytest.mark.slow
def test_adapter_on_the_wrong_base_model_is_refused(trained_run, tmp_path, qwen_tokenizer):
    from mcqtune.model.loading import ModelLoadError
    from mcqtune.tiny.qwen import write_tiny_qwen

    from mcqtune.runs.provenance import ADAPTER_RECORD, ProvenanceError

    other = write_tiny_qwen(tmp_path / "other-base", tokenizer=qwen_tokenizer, hidden_size=64, intermediate_size=128)
    with pytest.raises(ProvenanceError, match="trained on another model.*config.json differs.*hidden_size"):
        infer.run(infer_args(trained_run, tmp_path, base_model_id=str(other)))  # by the adapter's record
    unrecorded = shutil.copytree(trained_run["dir"] / "adapter", tmp_path / "unrecorded")
    (unrecorded / ADAPTER_RECORD).unlink()  # an adapter that is not ours: its shapes still refuse the base
    with pytest.raises(ModelLoadError, match="does not fit this base model.*size mismatch"):
        infer.run(infer_args(trained_run, tmp_path, model_path=str(unrecorded), base_model_id=str(other)))


@pytest.mark.slow
def test_merged_model_directory_answers_like_the_adapter(trained_run, tmp_path):
    test_file = str(trained_run["sample_dir"] / "test.csv")
    adapter = infer.run(infer_args(trained_run, tmp_path / "x", output_dir=str(tmp_path / "x"), test_file=test_file,
                                    load_in_4bit=False, backend="hf"))
    merged = infer.run(infer_args(trained_run, tmp_path / "y", output_dir=str(tmp_path / "y"), test_file=test_file,
                                   model_path=str(trained_run["dir"] / "merged"), load_in_4bit=False, backend="hf"))
    assert merged["accuracy"] == adapter["accuracy"]
    a = pd.read_csv(tmp_path / "x" / "predictions.csv")[["p_A", "p_B", "p_C", "p_D"]].to_numpy()
    b = pd.read_csv(tmp_path / "y" / "predictions.csv")[["p_A", "p_B", "p_C", "p_D"]].to_numpy()
    assert np.allclose(a, b, atol=1e-4)


@pytest.mark.slow
def test_letter_bias_correction_divides_out_the_estimated_prior_and_reports_both_distributions(trained_run, tmp_path):
    test_file = str(trained_run["sample_dir"] / "test.csv")
    plain = infer.run(infer_args(trained_run, tmp_path / "a", output_dir=str(tmp_path / "a"), test_file=test_file))
    corrected = infer.run(infer_args(trained_run, tmp_path / "b", output_dir=str(tmp_path / "b"), test_file=test_file,
                                      debias_letters=True, debias_sample=32))
    prior = np.array(corrected["letter_prior"])
    assert prior.shape == (4,) and np.isclose(prior.sum(), 1, atol=1e-4)
    assert corrected["answer_distribution_uncorrected"] == plain["answer_distribution"]
    a = pd.read_csv(tmp_path / "a" / "predictions.csv")[["p_A", "p_B", "p_C", "p_D"]].to_numpy()
    b = pd.read_csv(tmp_path / "b" / "predictions.csv")[["p_A", "p_B", "p_C", "p_D"]].to_numpy()
    expected = (a / prior) / (a / prior).sum(axis=1, keepdims=True)  # one order: positions are the options
    assert np.allclose(b, expected, atol=1e-4)
    again = infer.run(infer_args(trained_run, tmp_path / "b", output_dir=str(tmp_path / "b"), test_file=test_file,
                                  debias_letters=True, debias_sample=32))
    assert again["answered_this_run"] == 0  # the same prior comes out again: the answers are reused


@pytest.mark.slow
def test_options_too_long_for_the_adapters_prompt_length_name_both_options_that_answer_them(trained_run, tmp_path):
    """Raising --max_prompt_tokens alone would be refused in turn (the adapter was trained at another length)."""
    from mcqtune.model.prompts import PromptTooLong

    long_options = tmp_path / "long.csv"
    option = "很长的选项" * 400
    long_options.write_text("ID,question,option_A,option_B,option_C,option_D\n"
                            f"7,问题,{option},b,c,d\n8,问题,a,b,c,d\n", encoding="utf-8")
    with pytest.raises(PromptTooLong, match=r"raise --max_prompt_tokens to at least (\d+) with --prompt_mismatch_ok "
                                            r"true: the adapter was trained at --max_prompt_tokens 512") as caught:
        infer.run(infer_args(trained_run, tmp_path, test_file=str(long_options)))
    enough = int(str(caught.value).split("at least ")[1].split()[0])
    report = infer.run(infer_args(trained_run, tmp_path / "ok", test_file=str(long_options),
                                  max_prompt_tokens=enough, prompt_mismatch_ok=True))
    assert report["rows"] == 2
