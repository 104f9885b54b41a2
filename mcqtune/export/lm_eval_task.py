r"""An lm-evaluation-harness task over the user's CSV with the project's prompt, so lm-eval can check a merged
model against infer.py's answers.

    python export.py --lm_eval_task val.csv --output_dir exports/lm_eval
    lm_eval --model hf --model_args pretrained=MERGED_DIR --tasks mcq_val --include_path exports/lm_eval \
        --apply_chat_template --system_instruction "$(cat exports/lm_eval/system_prompt.txt)"
"""

from __future__ import annotations

import logging
from pathlib import Path

from mcqtune.files import write_atomic
from mcqtune.data.questions import DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE, OPTION_COLUMNS, load_mcq_csv

logger = logging.getLogger("export")


def to_jinja(user_template: str) -> str:
    """The project's user template ({question}, {A}..{D}) as lm-eval's Jinja doc_to_text."""
    text = user_template.replace("{question}", "{{question}}")
    for letter, column in zip("ABCD", OPTION_COLUMNS):
        text = text.replace("{" + letter + "}", "{{" + column + "}}")
    return text


def write_lm_eval_task(csv_path: str | Path, output_dir: str | Path, task_name: str | None = None,
                       user_template: str = DEFAULT_USER_TEMPLATE, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> Path:
    """An lm-evaluation-harness task over the user's CSV with the project's prompt: the rows are validated by
    mcq_dataset and written as JSON lines (every value a string, as infer.py reads them)."""
    import yaml

    frame = load_mcq_csv(csv_path, require_answer=True)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task_name = task_name or "mcq_" + "".join(c if c.isalnum() else "_" for c in Path(csv_path).stem)
    data_file = out_dir / f"{task_name}.jsonl"
    write_atomic(data_file, frame.to_json(orient="records", lines=True, force_ascii=False))
    task = {
        "task": task_name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": to_jinja(user_template),
        "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer)}}",
        "target_delimiter": "", "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    task_file = out_dir / f"{task_name}.yaml"
    write_atomic(task_file, yaml.safe_dump(task, allow_unicode=True, sort_keys=False))
    write_atomic(out_dir / "system_prompt.txt", system_prompt)
    logger.info("wrote %s. Run: lm_eval --model hf --model_args pretrained=MERGED_DIR --tasks %s --include_path %s "
                "--apply_chat_template --system_instruction \"$(cat %s)\"", task_file, task_name, out_dir,
                out_dir / "system_prompt.txt")
    return task_file
