"""infer/setup.py: every problem with the options is named in one ConfigError before anything is loaded; a k-fold
training folder answers as the average of its fold adapters."""

import json

import pytest

from mcqtune.infer.run import InferArguments
from mcqtune.errors import ConfigError
from mcqtune.infer.setup import adapter_names, check_args, expand_fold_run


def test_every_problem_with_the_options_is_named_in_one_error(tmp_path):
    args = InferArguments(output_file=str(tmp_path / "s.csv"), permutations=5, batch_size=0, max_new_tokens=0,
                          debias_sample=0)
    with pytest.raises(ConfigError) as caught:
        check_args(args)
    problems = str(caught.value).split("; ")
    assert problems == ["test_file is required", "model_path is required", "permutations must be 1-4, got 5",
                        "batch_size must be >= 1", "max_new_tokens must be >= 1",
                        "max_new_tokens applies to generate mode only, not score", "debias_sample must be >= 1, got 0"]


@pytest.mark.parametrize("options, message", [
    ({"mode": "generate", "permutations": 2}, "apply to score mode only"),
    ({"mode": "generate", "debias_letters": True}, "apply to score mode only"),
    ({"rescore": "first_run", "rescore_fraction": 0}, "rescore needs score or reason mode and 0 < rescore_fraction"),
    ({"rescore": "first_run", "mode": "generate"}, "rescore needs score or reason mode"),
    ({"mode": "reason", "ensemble": ["other"]}, "apply to score mode only, not reason"),
    ({"mode": "reason", "max_reasoning_tokens": 0}, "max_reasoning_tokens must be >= 1"),
    ({"mode": "score", "temperature": 0.7}, "^temperature applies to reason mode only, not score mode$"),
    ({"mode": "reason", "temperature": 1e-40, "samples": 2}, "temperature must be 0 \\(greedy\\) or at least 0.01 "
                                                             ".*got 1e-40"),
    ({"mode": "reason", "temperature": -0.5}, "temperature must be 0 \\(greedy\\) or at least 0.01"),
    ({"output_file": "no-such-folder/s.csv"}, "the folder of output_file does not exist"),
    ({"mode": "reason", "max_new_tokens": 8}, "max_new_tokens applies to generate mode only, not reason \\(reasoning "
                                              "replies are bounded by --max_reasoning_tokens"),
    ({"mode": "score", "max_reasoning_tokens": 64}, "max_reasoning_tokens applies to reason mode only, not score"),
    ({"mode": "reason", "generation_engine": "nf4", "repetition_penalty": 1.0, "load_in_4bit": False},
     "generation_engine nf4 reads NF4 weights: keep --load_in_4bit true"),
])
def test_options_that_cannot_go_together_are_refused(tmp_path, monkeypatch, options, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "test.csv").write_text("ID,question\n", encoding="utf-8")
    args = InferArguments(**{"test_file": "test.csv", "model_path": "model", "output_file": "s.csv", **options})
    with pytest.raises(ConfigError, match=message):
        check_args(args)


def test_the_submission_may_not_overwrite_the_test_file(tmp_path):
    test_file = tmp_path / "test.csv"
    test_file.write_text("ID,question\n", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        check_args(InferArguments(test_file=str(test_file), model_path="m", output_file=str(test_file)))
    assert "would overwrite the input" in str(refused.value)
    assert "already exists and was not written by" not in str(refused.value)  # one reason, not two
    assert test_file.read_text(encoding="utf-8") == "ID,question\n"


def fake_fold(folder, fold, identity):
    """A finished fold as the k-fold driver leaves it: adapter, summary with its identity, validation predictions."""
    (folder / f"fold-{fold}" / "adapter").mkdir(parents=True)
    (folder / f"fold-{fold}" / "adapter" / "adapter_config.json").write_text("{}")
    (folder / f"fold-{fold}" / "training_summary.json").write_text(json.dumps({"run_identity": identity}))
    (folder / f"fold-{fold}" / "validation_predictions.csv").write_text("ID\n")


def test_a_kfold_folder_becomes_the_adapters_of_its_plan_in_fold_order(tmp_path):
    from mcqtune.runs.folds import write_fold_plan

    plan = {fold: {"fold": fold} for fold in range(11)}
    for fold in range(11):
        fake_fold(tmp_path, fold, plan[fold])
    write_fold_plan(tmp_path, 11, 42, None, plan)
    args, used = expand_fold_run(InferArguments(model_path=str(tmp_path), ensemble=["extra"]))
    assert args.model_path == str(tmp_path / "fold-0" / "adapter")
    assert args.ensemble == [str(tmp_path / f"fold-{f}" / "adapter") for f in range(1, 11)] + ["extra"]
    assert used["used"] == list(range(11)) and used["missing"] == []
    assert adapter_names(args)[:2] == ["default", "ensemble_0"]
    plain = InferArguments(model_path=str(tmp_path / "fold-0" / "adapter"))
    assert expand_fold_run(plain) == (plain, None) and adapter_names(plain) == [None]


def test_a_kfold_folder_uses_exactly_its_plan_and_refuses_an_unfinished_one(tmp_path):
    """--folds 3 then --folds 2 into one folder: the old plan's fold-2 is never averaged in; a fold of the plan
    that is missing or was trained with other settings stops the run unless --partial_folds."""
    from mcqtune.runs.folds import write_fold_plan
    from mcqtune.runs.provenance import ProvenanceError

    for fold in range(3):
        fake_fold(tmp_path, fold, {"plan": 3, "fold": fold})
    with pytest.raises(ProvenanceError, match="no readable fold_plan.json"):
        expand_fold_run(InferArguments(model_path=str(tmp_path)))
    write_fold_plan(tmp_path, 2, 42, None, {0: {"plan": 2, "fold": 0}, 1: {"plan": 3, "fold": 1}})
    with pytest.raises(ProvenanceError) as caught:  # fold 0 was trained under the 3-fold plan
        expand_fold_run(InferArguments(model_path=str(tmp_path)))
    assert "folds 0 of its 2-fold plan" in str(caught.value) and "\n" not in str(caught.value)
    args, used = expand_fold_run(InferArguments(model_path=str(tmp_path), partial_folds=True))
    assert args.model_path == str(tmp_path / "fold-1" / "adapter") and args.ensemble == []
    assert used == {"plan": str(tmp_path / "fold_plan.json"), "folds": 2, "used": [1], "missing": [0]}


def test_the_parser_identity_covers_its_rules_and_its_grammar(tmp_path, monkeypatch):
    from mcqtune.core import grammar as answer_grammar
    from mcqtune.core import parser as answer_parser
    from mcqtune.infer.setup import parser_identity

    before = parser_identity()
    assert parser_identity() == before
    for module in (answer_parser, answer_grammar):  # an edited copy of either file is another parser
        copy = tmp_path / f"{module.__name__}.py"
        copy.write_text(open(module.__file__, encoding="utf-8").read() + "\n# edited\n", encoding="utf-8")
        with monkeypatch.context() as patch:
            patch.setattr(module, "__file__", str(copy))
            assert parser_identity() != before


def test_a_reply_budget_past_the_models_context_is_refused_before_any_reply(tiny_model_dir, sample_dir, tmp_path,
                                                                           monkeypatch):
    """The tiny model's context is its config's max_position_embeddings: a budget past it is refused in one line
    naming the budget that fits, before a reply is generated (a cache sized for it exceeded the CPU's memory)."""
    import json

    from mcqtune.infer import modes
    from mcqtune.infer import run as infer

    context = json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    monkeypatch.setattr(modes, "reasoner_of", lambda *a, **k: pytest.fail("answered before refusing"))
    monkeypatch.setattr(infer, "reasoner_of", lambda *a, **k: pytest.fail("answered before refusing"))
    args = InferArguments(test_file=str(sample_dir / "test.csv"), model_path=str(tiny_model_dir), mode="reason",
                          max_reasoning_tokens=context, output_file=str(tmp_path / "s.csv"))
    with pytest.raises(ConfigError, match=f"max_reasoning_tokens {context} after the longest prompt \\(\\d+ tokens\\) "
                                          f"exceeds the model's context of {context} tokens \\(max_position_embeddings"
                                          f"\\): use --max_reasoning_tokens \\d+ or less$"):
        infer.run(args)
    assert not (tmp_path / "s.csv").exists()


def test_a_prompt_that_fills_the_context_is_refused_for_its_length_not_the_budget():
    from transformers import Qwen2Config

    from mcqtune.infer.setup import check_reply_room

    args = InferArguments(test_file="t.csv", model_path="m", mode="reason", max_reasoning_tokens=8)
    config = Qwen2Config(max_position_embeddings=100)
    check_reply_room(config, 92, args)  # 92 + 8 fits exactly
    with pytest.raises(ConfigError, match="max_reasoning_tokens 8 after the longest prompt \\(93 tokens\\) exceeds "
                                          "the model's context of 100 tokens .*use --max_reasoning_tokens 7 or less$"):
        check_reply_room(config, 93, args)
    with pytest.raises(ConfigError, match="longest prompt \\(100 tokens\\) leaves no room for a reply .*use "
                                          "--max_prompt_tokens 50 or less$"):
        check_reply_room(config, 100, args)
