"""model/model_card.py: the card states the LoRA settings, the data, the checkpoint's step and accuracy, and the
prompt."""

import json

from mcqtune.data.questions import DEFAULT_SYSTEM_PROMPT
from mcqtune.model.model_card import describe_dtype, model_card, training_facts


def test_a_checkpoint_card_states_its_step_accuracy_data_and_prompt(tmp_path):
    run = tmp_path / "run"
    checkpoint = run / "checkpoint-30"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_config.json").write_text(json.dumps(
        {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["v_proj", "q_proj"]}))
    (checkpoint / "trainer_state.json").write_text(json.dumps(
        {"global_step": 30, "log_history": [{"eval_accuracy": 0.5}, {"loss": 1.0}, {"eval_accuracy": 0.625}]}))
    (run / "training_summary.json").write_text(json.dumps(
        {"train_rows": 90, "val_rows": 10, "epochs": 2, "best_eval_accuracy": 0.7,
         "script_args": {"train_file": "train.csv", "system_prompt": None, "user_template": "Q: {question}"}}))
    facts = training_facts(checkpoint)
    card = model_card("merged", "base-model", facts, "load it like this", describe_dtype("float16", "bfloat16"))
    assert card.startswith("---\nbase_model: base-model\nlibrary_name: transformers\n")
    assert "- LoRA: r=16, alpha=32, dropout=0.05, modules: q_proj, v_proj" in card
    assert "- data: `train.csv` (90 training rows, 10 validation rows, 2 epochs)" in card
    assert "- checkpoint at step 30" in card and "- validation accuracy: 62.50%" in card  # the step's, not the best
    assert "- weights: float16 (asked for with --dtype; the base is bfloat16)" in card
    assert "Q: {question}" in card and card.rstrip().endswith("load it like this")
    assert DEFAULT_SYSTEM_PROMPT not in card  # the run's own (empty) system prompt, not the default


def test_an_adapter_without_a_summary_says_its_accuracy_is_not_recorded(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    card = model_card("adapter", "b", training_facts(tmp_path), "hint")
    assert "library_name: peft" in card and "validation accuracy: not recorded" in card
    assert DEFAULT_SYSTEM_PROMPT in card  # no summary: the default prompt the project trains with
