"""export/lm_eval_task.py: the lm-eval task renders the project's prompt over the CSV, and lm-eval's answers with it
agree with infer.py's."""

import numpy as np
import pandas as pd
import pytest

from mcqtune.data.questions import DEFAULT_SYSTEM_PROMPT


@pytest.mark.slow
def test_lm_eval_task_reproduces_infer_answers(trained_run, merged_model, tmp_path):
    from mcqtune.infer import run as infer
    from mcqtune.export.lm_eval_task import write_lm_eval_task
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    test_file = trained_run["sample_dir"] / "test.csv"
    task_file = write_lm_eval_task(test_file, tmp_path / "task")
    results = simple_evaluate(model="hf", model_args={"pretrained": str(merged_model), "dtype": "float32"},
                              tasks=[task_file.stem], task_manager=TaskManager(include_path=str(task_file.parent)),
                              apply_chat_template=True, system_instruction=DEFAULT_SYSTEM_PROMPT, log_samples=True,
                              batch_size=16, device="cpu")
    samples = sorted(results["samples"][task_file.stem], key=lambda s: s["doc_id"])
    harness = ["ABCD"[int(np.argmax([r[0] for r in s["filtered_resps"]]))] for s in samples]
    report = infer.run(infer.InferArguments(test_file=str(test_file), model_path=str(merged_model),
                                             output_file=str(tmp_path / "sub.csv"), load_in_4bit=False, backend="hf"))
    ours = list(pd.read_csv(tmp_path / "sub.csv", dtype=str)["answer"])
    agreement = float(np.mean(np.array(harness) == np.array(ours)))
    assert len(harness) == report["rows"] == 160 and agreement >= 0.98, agreement


def test_the_task_renders_the_project_prompt_over_the_csv_rows_as_strings(sample_dir, tmp_path):
    import json

    import yaml

    from mcqtune.export.lm_eval_task import to_jinja, write_lm_eval_task
    from mcqtune.data.questions import DEFAULT_USER_TEMPLATE

    text = to_jinja(DEFAULT_USER_TEMPLATE)
    assert "{{question}}" in text and all("{{option_" + letter + "}}" in text for letter in "ABCD")
    assert not any("{" + letter + "}" in text for letter in "ABCD")
    task_file = write_lm_eval_task(sample_dir / "test.csv", tmp_path)
    task = yaml.safe_load(task_file.read_text(encoding="utf-8"))
    assert task["task"] == task_file.stem == "mcq_test" and task["doc_to_text"] == text
    rows = [json.loads(line) for line in (tmp_path / "mcq_test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 160 and all(isinstance(v, str) for row in rows for v in row.values())
    assert (tmp_path / "system_prompt.txt").read_text(encoding="utf-8") == DEFAULT_SYSTEM_PROMPT
