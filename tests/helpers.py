"""Helpers shared by several test files (fixtures live in conftest.py)."""

import contextlib
import hashlib
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mcqtune.config_files import config_dir
from mcqtune import errors as cli
from mcqtune.cli import ensemble as ensemble_cli
from mcqtune.runs import predictions as prediction_store
from mcqtune.data.questions import LETTERS
from mcqtune.files import write_csv_atomic, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]  # the checkout: its root scripts and data/sample
SHARED_DATA = ROOT.parent / "shared" / "data" / "cmmlu"  # real CMMLU rows, where ../shared is laid beside


def train_args(model_dir, train_file, output_dir, *extra):
    """Parsed (script_args, training_args) for the CPU demo config with overrides, as the CLI builds them."""
    from mcqtune.train.options import make_parser

    argv = ["--config", str(config_dir() / "demo-cpu.yaml"), "--model_name_or_path", str(model_dir),
            "--train_file", str(train_file), "--output_dir", str(output_dir), *map(str, extra)]
    return make_parser().parse_args_and_config(argv)


try:  # dev-only (requirements-dev.txt): the parser itself never uses it
    import opencc
except ImportError:
    opencc = None
# Simplified -> Traditional converters (mainland, Taiwan, Hong Kong forms) for the parser's Traditional tests.
TO_TRADITIONAL = [opencc.OpenCC(config) for config in ("s2t", "s2tw", "s2hk")] if opencc else []
needs_opencc = pytest.mark.skipif(opencc is None, reason="opencc is not installed")

# One competition question, shared by the prompt tests (tests/data/test_questions.py) and the option-order tests.
ROW = {"ID": "9", "question": "中国的首都是哪里？", "option_A": "北京", "option_B": "上海", "option_C": "广州",
       "option_D": "深圳", "answer": "A"}

# A competition CSV as the CSV-contract and encoding tests write it.
HEADER = "ID,question,option_A,option_B,option_C,option_D,answer,subject\n"
GOOD_ROWS = ("1,中国的首都是哪里？,北京,上海,广州,深圳,A,geo\n"
             "2,\"含逗号，和\"\"引号\"\"的题目\",甲,乙,丙,丁,c,misc\n"
             "3,下列哪个是水果？,汽车,苹果,桌子,铅笔,Ｂ,misc\n")


def write(tmp_path: Path, text: str, name: str = "data.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def run_script(script, *argv, cwd=ROOT, limit_file_bytes=None, timeout=300):
    """One of the project's scripts run as a user runs it, in a subprocess (optionally under a file-size limit,
    like a nearly full disk); the completed process with its text output."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    return subprocess.run([sys.executable, str(ROOT / script), *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, preexec_fn=limit if limit_file_bytes else None)


def run_interpreted(test_file: str, tmp_path: Path) -> None:
    """Run ``tests/core/<test_file>`` under Triton's interpreter in a pytest process of its own (Triton reads
    TRITON_INTERPRET when it is first imported) and require every test in it to pass, none skipped."""
    import os

    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                             str(tmp_path / "t"), str(ROOT / "tests" / "core" / test_file)],
                            cwd=ROOT, env={**os.environ, "TRITON_INTERPRET": "1", "PYTEST_XDIST_WORKER": ""},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


def letter_logits_hf(model, tokenizer, frame):
    """(rows, 4) logits of the letters A-D after each row's prompt, one prompt at a time (the plain reference)."""
    import torch

    from mcqtune.model.prompts import encode_prompt

    letters = [tokenizer.convert_tokens_to_ids(x) for x in "ABCD"]
    rows = []
    with torch.no_grad():
        for _, row in frame.iterrows():
            rows.append(model(torch.tensor([encode_prompt(tokenizer, row)])).logits[0, -1, letters].numpy())
    return np.array(rows)


def infer_args(trained_run, tmp_path, **overrides):
    """InferArguments answering the sample's test file with the trained run's adapter, into ``tmp_path``."""
    from mcqtune.infer import run as infer
    values = dict(test_file=str(trained_run["sample_dir"] / "test_no_answer.csv"),
                  model_path=str(trained_run["dir"] / "adapter"), output_file=str(tmp_path / "submission.csv"),
                  batch_size=16)
    values.update(overrides)
    Path(values["output_file"]).parent.mkdir(parents=True, exist_ok=True)
    return infer.InferArguments(**values)


# ------------------------------------------------------------------------------------------ ensemble members


IDS = ["007", "10", "2", "x-1", "3", "1"]  # text IDs, not sorted: order and leading zeros must survive


def softmax(logits):
    logits = np.asarray(logits, dtype=float)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def write_member(folder, probs, ids=IDS, truth=None, subject=None, test_file="test.csv", model="model"):
    """A run folder as infer.py leaves it: predictions.csv (assemble_predictions' layout) and report.json."""
    frame = pd.DataFrame({"ID": list(ids)})
    if truth is not None:
        frame["answer"] = list(truth)
    if subject is not None:
        frame["subject"] = list(subject)
    records = {id_: prediction_store.score_record(id_, np.asarray(p)) for id_, p in zip(ids, probs)}
    write_csv_atomic(prediction_store.assemble_predictions(frame, records), folder / "predictions.csv")
    # infer.py records the test file's bytes; a stand-in hash of its name keeps "another file" distinguishable
    write_json_atomic({"test_file": test_file, "rows": len(ids), "base_model": model, "adapters": [],
                       "test_file_sha256": hashlib.sha256(test_file.encode()).hexdigest()}, folder / "report.json")
    return folder


def random_probs(seed, n=len(IDS), sharpness=1.0):
    return softmax(sharpness * np.random.default_rng(seed).normal(size=(n, 4)))


def run_ensemble(argv, capsys):
    """ensemble.py's command line as run_cli runs it: (exit status, captured output)."""
    status = cli.run_cli(ensemble_cli.main, [str(a) for a in argv])
    return status, capsys.readouterr()


def read_predictions(path):
    return pd.read_csv(path, dtype={"ID": str, "answer": str, "true_answer": str})


def confident(truth, strength, seed):
    """Probabilities that put ``strength`` logits on the true letter, plus noise."""
    rng = np.random.default_rng(seed)
    onehot = np.eye(4)[[LETTERS.index(t) for t in truth]]
    return softmax(strength * onehot + rng.normal(size=onehot.shape))


def fitted_setup(tmp_path, test_truth):
    val_ids = [f"v{i}" for i in range(200)]
    val_truth = [LETTERS[i % 4] for i in range(200)]
    good = write_member(tmp_path / "val_good", confident(val_truth, 3.0, 1), ids=val_ids, truth=val_truth,
                        test_file="val.csv", model="good")
    bad = write_member(tmp_path / "val_bad", confident(val_truth, 0.0, 2), ids=val_ids, truth=val_truth,
                       test_file="val.csv", model="bad")
    test_good = write_member(tmp_path / "test_good", random_probs(3), truth=test_truth, model="good")
    test_bad = write_member(tmp_path / "test_bad", random_probs(4), truth=test_truth, model="bad")
    return [test_good, test_bad, "--validation", good, bad]


class StoppedAtSave(Exception):
    """A run stopped by ``stop_after_save`` right after a checkpoint was written, as a killed run stops."""


@contextlib.contextmanager
def stop_after_save(module, step: int):
    """Within: the trainers ``module.build_trainer`` builds stop (StoppedAtSave) right after saving checkpoint
    ``step``; the block must end that way. ``module.build_trainer`` is restored afterwards."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise StoppedAtSave

    original = module.build_trainer

    def build_interrupted(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.add_callback(Interrupt())
        return trainer

    module.build_trainer = build_interrupted
    try:
        with pytest.raises(StoppedAtSave):
            yield
    finally:
        module.build_trainer = original
