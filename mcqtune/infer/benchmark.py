"""Score a model the way published C-Eval / CMMLU numbers are scored, so its accuracy can be compared with them
(``mcq-tune benchmark``).

    mcq-tune benchmark --model_path outputs/qwen2.5-14b-lora/adapter --test_file cmmlu_test.csv \
        --dev_file cmmlu_dev.csv --shots 5 --circular true

The prompt is lm-evaluation-harness's ``cmmlu`` / ``ceval-valid`` task's, with no chat template: the task's
description (``以下是关于<subject>的单项选择题，请直接给出正确答案的选项。``), then ``--shots`` solved questions of
the same subject taken in file order from ``--dev_file`` (their ``first_n`` sampler), then the question, its four
options as ``A. ...`` lines and ``答案：``. Each letter's log-likelihood as the continuation `` A`` .. `` D`` decides
(``acc``; with one-token letters ``acc_norm`` is the same). ``--circular`` adds OpenCompass's CircularEval: a
question counts as right only if it is answered right under all four cyclic rotations of its options.

The subject's name in the description is the one lm-eval's own task of that subject uses, read from the installed
lm-evaluation-harness (``pip install -r requirements-export.txt``); a subject it does not know is named by the
CSV's ``subject`` text. Writes ``benchmark_report.json``, ``benchmark_report.md`` (overall and per subject) and
``benchmark_predictions.csv`` (every question's answer under each rotation) to ``--output_dir``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mcqtune.data.option_orders import cyclic_orders, permute_options
from mcqtune.data.questions import ANSWER_COLUMN, LETTERS, SUBJECT_COLUMN
from mcqtune.errors import ConfigError, DataError, UserError

logger = logging.getLogger("benchmark")
TASKS = {"cmmlu": "cmmlu/cmmlu_{subject}.yaml", "ceval": "ceval/ceval-valid_{subject}.yaml"}
DESCRIPTION = "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"
MAX_CONTEXT_TOKENS = 4096  # the sequence length the model is loaded for: five solved questions and the question fit


def lm_eval_description(task: str, subject: str) -> str | None:
    """lm-eval's own description of ``subject`` in ``task``, or None when its task has no such subject. lm-eval
    must be installed (the export extra): without it the prompt could not be the one it says it is."""
    import lm_eval
    import yaml

    path = Path(lm_eval.__file__).parent / "tasks" / TASKS[task].format(subject=subject)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))["description"]
    except (OSError, KeyError, TypeError):
        return None


def subject_description(task: str, subject: str | None) -> str:
    """The task's description for ``subject``: lm-eval's own when it has this subject, else built the same way
    (such subjects are listed in the report)."""
    if not subject:
        return ""
    return lm_eval_description(task, subject) or DESCRIPTION.format(subject=subject)


def question_text(row) -> str:
    """lm-eval's doc_to_text of both tasks."""
    return (f"{str(row['question']).strip()}\nA. {row['option_A']}\nB. {row['option_B']}\nC. {row['option_C']}\n"
            f"D. {row['option_D']}\n答案：")


def build_context(row, shots: pd.DataFrame, description: str) -> str:
    """The description, the solved shots (each its text, a space, its letter; blank lines between), the question."""
    solved = [question_text(shot) + " " + shot[ANSWER_COLUMN] for _, shot in shots.iterrows()]
    return description + "".join(s + "\n\n" for s in solved) + question_text(row)


def continuation_ids(tokenizer, context: str) -> list[int]:
    """The token of each letter as the continuation ' A'..' D' of ``context`` (lm-eval encodes context + continuation
    and takes what follows the context's tokens); refused unless each is one token."""
    base = tokenizer.encode(context, add_special_tokens=False)
    found = []
    for letter in LETTERS:
        ids = tokenizer.encode(context + " " + letter, add_special_tokens=False)
        if ids[:len(base)] != base or len(ids) != len(base) + 1:
            raise UserError("this tokenizer does not write ' A'..' D' after '答案：' as one token each, which this "
                            "command's one-position scoring needs")
        found.append(ids[-1])
    return found


def shots_for(dev: pd.DataFrame | None, subject: str | None, shots: int) -> pd.DataFrame:
    if dev is None or shots == 0:
        return pd.DataFrame()
    same = dev[dev[SUBJECT_COLUMN] == subject] if subject is not None and SUBJECT_COLUMN in dev else dev
    if len(same) < shots:
        raise DataError("--dev_file", f"{len(same)} solved question(s) of subject {subject!r}, {shots} needed")
    return same.head(shots)


def check_dev_apart(dev: pd.DataFrame, test: pd.DataFrame, dev_file: str) -> None:
    """Shots are solved questions shown before each test question: a dev file that holds test questions would show
    the model their answers. Refused before any model loads (exact or normalised matches, data/overlap.py)."""
    from mcqtune.data.overlap import overlap
    from mcqtune.data.questions import OPTION_COLUMNS

    found = overlap(dev, test, OPTION_COLUMNS)
    if found["normalised"]:
        first = found["pairs"][0]
        raise DataError(dev_file, f"holds {found['normalised']} of the {len(test)} test questions (first: test ID "
                                  f"{first['test_ID']} = dev ID {first['train_ID']}); shots from it would show the "
                                  "model their answers: give a --dev_file without them")


def score_contexts(model, tokenizer, contexts: list[str], letter_ids: list[int], batch_size: int) -> np.ndarray:
    """(len(contexts), 4) letter logits at each context's end (the argmax is the log-likelihood's)."""
    import torch

    from mcqtune.core.scoring import left_pad, letter_logits, model_device

    encoded = [tokenizer.encode(c, add_special_tokens=False) for c in contexts]
    order = np.argsort([len(e) for e in encoded], kind="stable")
    out = np.zeros((len(contexts), 4))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = model_device(model)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            input_ids, mask = left_pad([encoded[i] for i in rows], pad)
            out[rows] = letter_logits(model, input_ids.to(device), mask.to(device), letter_ids).cpu().numpy()
    return out


def benchmark(model, tokenizer, test: pd.DataFrame, dev: pd.DataFrame | None, *, task: str, shots: int,
              circular: bool, batch_size: int) -> pd.DataFrame:
    """Every question's answer under each rotation (``answer_r0`` .. ``answer_r3``) and whether it is right."""
    subjects = test[SUBJECT_COLUMN] if SUBJECT_COLUMN in test else pd.Series([None] * len(test), index=test.index)
    descriptions = {s: subject_description(task, s) for s in subjects.unique()}
    rotations = cyclic_orders(4 if circular else 1)
    letter_ids = None
    result = test[["ID"]].copy()
    right = np.ones(len(test), dtype=bool)
    for r, order in enumerate(rotations):
        rows = [permute_options(row, order) for _, row in test.iterrows()]
        contexts = [build_context(row, shots_for(dev, s, shots), descriptions[s]) for row, s in zip(rows, subjects)]
        letter_ids = letter_ids or continuation_ids(tokenizer, contexts[0])
        logits = score_contexts(model, tokenizer, contexts, letter_ids, batch_size)
        answers = np.array(LETTERS)[logits.argmax(axis=1)]
        truth = np.array([row[ANSWER_COLUMN] for row in rows])
        result[f"answer_r{r}"], result[f"right_r{r}"] = answers, answers == truth
        if r == 0:  # the letters' logits; their differences are those of the log-likelihoods lm-eval logs
            for k, letter in enumerate(LETTERS):
                result[f"logit_{letter}"] = np.round(logits[:, k], 5)
        right &= answers == truth
        logger.info("rotation %d of %d: acc %.4f", r + 1, len(rotations), float((answers == truth).mean()))
    result["subject"] = subjects.to_numpy()
    result["circular_right"] = right
    return result


def summarise(result: pd.DataFrame, circular: bool) -> dict:
    def figures(part: pd.DataFrame) -> dict:
        out = {"questions": len(part), "acc": round(float(part["right_r0"].mean()), 4)}
        if circular:
            out["circular_acc"] = round(float(part["circular_right"].mean()), 4)
        return out

    per_subject = {str(s): figures(part) for s, part in result.groupby("subject", dropna=False)} \
        if result["subject"].notna().any() else {}
    return {"overall": figures(result), "per_subject": per_subject}


OUTPUTS = ("benchmark_predictions.csv", "benchmark_report.md", "benchmark_report.json")  # the record last


def output_paths(out_dir: Path) -> list[Path]:
    """The files a benchmark writes into ``out_dir``; its record (benchmark_report.json) is the last."""
    return [out_dir / name for name in OUTPUTS]


def is_earlier_benchmark(record: Path) -> bool:
    """A benchmark report written before reports listed their files (no ``written_files``): its folder's
    benchmark files are that benchmark's."""
    import json

    try:
        found = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and "written_files" not in found and \
        {"task", "shots", "summary", "prompt"} <= set(found)


def check_outputs(out_dir: Path) -> None:
    """Before any model loads: the benchmark writes only where nothing is, or over an earlier benchmark's files
    (those its benchmark_report.json records), never into a file or over a file of the user's."""
    from mcqtune.runs.folder import ownership_problem

    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--output_dir {out_dir} is a file; name a folder")
    paths = output_paths(out_dir)
    if is_earlier_benchmark(paths[-1]):
        return
    problem = ownership_problem(paths, paths[-1], "--output_dir: the file")
    if problem:
        raise ConfigError(problem)


def write_outputs(out_dir: Path, result: pd.DataFrame, report: dict) -> None:
    from mcqtune.files import write_atomic, write_csv_atomic, write_json_atomic
    from mcqtune.runs.folder import WRITTEN_FILES

    paths = output_paths(out_dir)
    report = {**report, WRITTEN_FILES: [str(p.resolve()) for p in paths]}
    write_csv_atomic(result, paths[0])
    overall = report["summary"]["overall"]
    circular = "circular_acc" in overall
    lines = [f"# {report['task']} protocol, {report['shots']}-shot: {report['model_path']}", "",
             f"{report['test_file']}: {overall['questions']} questions, acc **{overall['acc']:.4f}**"
             + (f", CircularEval acc **{overall['circular_acc']:.4f}**" if circular else ""), "",
             "| subject | questions | acc |" + (" circular acc |" if circular else ""),
             "|---|---|---|" + ("---|" if circular else "")]
    lines += [f"| {s} | {f['questions']} | {f['acc']:.4f} |" + (f" {f['circular_acc']:.4f} |" if circular else "")
              for s, f in report["summary"]["per_subject"].items()]
    write_atomic(paths[1], "\n".join(lines) + "\n")
    write_json_atomic(report, paths[2])


def make_parser() -> argparse.ArgumentParser:
    from mcqtune.reporting.compare import refuse_usage

    parser = argparse.ArgumentParser(prog="mcq-tune benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", required=True, help="a base model, an adapter folder or merged weights")
    parser.add_argument("--base_model_id", default=None, help="the adapter's base, if not the one it records")
    parser.add_argument("--test_file", required=True, help="labelled questions in the competition layout, "
                                                           "with a subject column for per-subject figures")
    parser.add_argument("--dev_file", default=None, help="solved questions for the shots (first of each subject)")
    parser.add_argument("--shots", type=int, default=0, help="0 or up to 5, as the published numbers use")
    parser.add_argument("--task", default="cmmlu", choices=sorted(TASKS), help="whose subject descriptions")
    parser.add_argument("--circular", type=lambda v: v.lower() in ("1", "true", "yes"), default=False,
                        help="true: also CircularEval (four rotations of the options)")
    parser.add_argument("--output_dir", default=None, help="default: <test file stem>_benchmark/ beside it")
    parser.add_argument("--batch_size", type=int, default=8, help="questions scored at once")
    parser.add_argument("--backend", default="auto", choices=["auto", "unsloth", "hf"],
                        help="auto: Unsloth where it is installed and a GPU is there, else transformers (hf)")
    parser.add_argument("--load_in_4bit", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                        help="true (the default): the weights in 4-bit NF4, as training and infer.py load them")
    parser.error = refuse_usage
    return parser
