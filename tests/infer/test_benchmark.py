"""mcq-tune benchmark scores like lm-evaluation-harness's own cmmlu task: the same prompt text, k-shot context and
answers (run through lm-eval's command line on the same CMMLU rows, a tiny model), and CircularEval counts a
question right only under all four rotations."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mcqtune.cli import benchmark as benchmark_cli
from mcqtune import errors as cli
from mcqtune.infer import benchmark
from tests.helpers import ROOT

CMMLU = ROOT.parent / "shared" / "data" / "cmmlu"
SUBJECT = "jurisprudence"


@pytest.fixture(scope="module")
def cmmlu_subject(tmp_path_factory):
    if not (CMMLU / "test.csv").is_file():
        pytest.skip("../shared/data/cmmlu is not on this machine")
    folder = tmp_path_factory.mktemp("cmmlu")
    test = pd.read_csv(CMMLU / "test.csv", dtype=str)
    dev = pd.read_csv(CMMLU / "train.csv", dtype=str)
    test[test["subject"] == SUBJECT].head(40).to_csv(folder / "test.csv", index=False)
    dev[dev["subject"] == SUBJECT].head(5).to_csv(folder / "dev.csv", index=False)
    return folder


def lm_eval_task(folder: Path, out: Path) -> str:
    """A task that is lm-eval's own cmmlu_<subject> (its YAML included) reading these rows from local files."""
    import lm_eval
    import yaml

    for split in ("test", "dev"):
        rows = pd.read_csv(folder / f"{split}.csv", dtype=str)
        rows.rename(columns={"question": "Question", "option_A": "A", "option_B": "B", "option_C": "C",
                             "option_D": "D", "answer": "Answer"}).to_json(out / f"{split}.jsonl", orient="records",
                                                                           lines=True, force_ascii=False)
    name = f"local_cmmlu_{SUBJECT}"
    task = {"include": str(Path(lm_eval.__file__).parent / "tasks" / "cmmlu" / f"cmmlu_{SUBJECT}.yaml"),
            "task": name, "dataset_path": "json", "dataset_name": None,
            "dataset_kwargs": {"data_files": {"test": str(out / "test.jsonl"), "dev": str(out / "dev.jsonl")}}}
    (out / f"{name}.yaml").write_text(yaml.safe_dump(task, allow_unicode=True), encoding="utf-8")
    return name


@pytest.mark.slow
def test_five_shot_answers_agree_with_lm_evals_cmmlu_task_run_through_its_cli(cmmlu_subject, tiny_model_dir, tmp_path):
    pytest.importorskip("lm_eval")
    name = lm_eval_task(cmmlu_subject, tmp_path)
    subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                    f"pretrained={tiny_model_dir},dtype=float32", "--tasks", name, "--include_path", str(tmp_path),
                    "--num_fewshot", "5", "--batch_size", "8", "--device", "cpu", "--log_samples", "--output_path",
                    str(tmp_path / "lm_eval_out")], check=True, capture_output=True, timeout=900)
    samples_file, = (tmp_path / "lm_eval_out").rglob(f"samples_{name}_*.jsonl")
    samples = sorted((json.loads(line) for line in samples_file.read_text(encoding="utf-8").splitlines()),
                     key=lambda s: s["doc_id"])
    theirs = ["ABCD"[int(np.argmax([float(r[0]) for r in s["filtered_resps"]]))] for s in samples]  # logged as text

    out = tmp_path / "ours"
    assert cli.run_cli(benchmark_cli.main, ["--model_path", str(tiny_model_dir), "--test_file",
                                        str(cmmlu_subject / "test.csv"), "--dev_file", str(cmmlu_subject / "dev.csv"),
                                        "--shots", "5", "--backend", "hf", "--load_in_4bit", "false",
                                        "--output_dir", str(out), "--circular", "true"]) == 0
    ours = pd.read_csv(out / "benchmark_predictions.csv", dtype=str)
    agreement = float(np.mean(np.array(theirs) == ours["answer_r0"].to_numpy()))
    assert len(theirs) == len(ours) == 40 and agreement >= 0.98, agreement
    # not only the argmax: the letters' log-likelihoods differ by what our logits differ by
    their_ll = np.array([[float(r[0]) for r in s["filtered_resps"]] for s in samples])
    our_logits = ours[[f"logit_{x}" for x in "ABCD"]].astype(float).to_numpy()
    np.testing.assert_allclose(their_ll - their_ll[:, :1], our_logits - our_logits[:, :1], atol=2e-3)
    # the very context lm-eval scored, character for character
    test = pd.read_csv(cmmlu_subject / "test.csv", dtype=str)
    dev = pd.read_csv(cmmlu_subject / "dev.csv", dtype=str)
    description = benchmark.subject_description("cmmlu", SUBJECT)
    assert description.startswith("以下是关于法理学的单项选择题")
    for sample in samples[:5]:
        context = benchmark.build_context(test.iloc[sample["doc_id"]], dev.head(5), description)
        assert sample["arguments"]["gen_args_0"]["arg_0"] == context
        assert sample["arguments"]["gen_args_0"]["arg_1"] == " A"
    report = json.loads((out / "benchmark_report.json").read_text())
    right = ours[[f"right_r{r}" for r in range(4)]] == "True"
    assert report["summary"]["overall"]["circular_acc"] == pytest.approx(round(right.all(axis=1).mean(), 4))
    assert report["summary"]["overall"]["acc"] == pytest.approx(round(right["right_r0"].mean(), 4))
    # again into the same folder with other settings: the earlier benchmark's files are kept aside, not replaced
    assert cli.run_cli(benchmark_cli.main, ["--model_path", str(tiny_model_dir), "--test_file",
                                        str(cmmlu_subject / "test.csv"), "--backend", "hf", "--load_in_4bit", "false",
                                        "--output_dir", str(out)]) == 0
    earlier, = out.glob("previous-*")
    assert json.loads((earlier / "benchmark_report.json").read_text())["shots"] == 5
    assert json.loads((out / "benchmark_report.json").read_text())["shots"] == 0


def test_the_prompt_is_lm_evals_cmmlu_template_and_circular_rotations_move_the_answer():
    row = {"ID": "1", "question": " 中国的首都是？ ", "option_A": "北京", "option_B": "上海", "option_C": "广州",
           "option_D": "深圳", "answer": "A"}
    shot = pd.DataFrame([{**row, "question": "一加一等于？", "option_A": "1", "option_B": "2", "answer": "B"}])
    text = benchmark.build_context(row, shot, "以下是关于常识的单项选择题，请直接给出正确答案的选项。\n\n")
    assert text == ("以下是关于常识的单项选择题，请直接给出正确答案的选项。\n\n"
                    "一加一等于？\nA. 1\nB. 2\nC. 广州\nD. 深圳\n答案： B\n\n"
                    "中国的首都是？\nA. 北京\nB. 上海\nC. 广州\nD. 深圳\n答案：")
    from mcqtune.data.option_orders import cyclic_orders, permute_options

    answers = [permute_options(row, order)["answer"] for order in cyclic_orders(4)]
    assert sorted(answers) == list("ABCD")  # each rotation puts the right option under another letter


def test_without_lm_eval_the_benchmark_is_refused_naming_the_extra(monkeypatch, tmp_path, capsys):
    """Its prompt is lm-eval's: without lm-eval it would be another prompt under the same name, so it is refused
    before anything loads."""
    import sys

    from mcqtune.errors import EXIT_USER_ERROR, run_cli

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ModuleNotFoundError
    test = tmp_path / "test.csv"
    test.write_text("ID,question,option_A,option_B,option_C,option_D,answer,subject\n1,q,a,b,c,d,A,法理学\n",
                    encoding="utf-8")
    assert run_cli(benchmark_cli.main, ["--model_path", str(tmp_path / "none"), "--test_file", str(test)]) \
        == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "pip install 'mcq-tune[export]'" in err and "lm-eval" in err


def test_a_dev_file_holding_test_questions_is_refused_before_loading(tmp_path, capsys):
    """Shots from a dev file that holds a test question would show the model its answer: one line naming the
    pair, before any model loads (the model path does not exist)."""
    from mcqtune.errors import EXIT_USER_ERROR, run_cli

    header = "ID,question,option_A,option_B,option_C,option_D,answer,subject\n"
    test = tmp_path / "test.csv"
    test.write_text(header + "1,中国的首都是哪里？,北京,上海,广州,深圳,A,地理\n2,一加一,1,2,3,4,B,数学\n",
                    encoding="utf-8")
    dev = tmp_path / "dev.csv"
    dev.write_text(header + "d1,一加一 ,2,1,3,4,A,数学\nd2,二加二,4,2,3,1,A,数学\n", encoding="utf-8")
    argv = ["--model_path", str(tmp_path / "none"), "--test_file", str(test), "--dev_file", str(dev), "--shots", "1"]
    assert run_cli(benchmark_cli.main, argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dev.csv" in err[0] and "test ID 2 = dev ID d1" in err[0], err


def test_the_benchmark_writes_over_its_own_outputs_only(tmp_path, capsys):
    """An earlier benchmark's files (its record names them) are replaced; a file of the user's under one of the
    names, a record that is not a benchmark's, or a file given as the folder is refused before any model loads."""
    import pandas as pd

    from mcqtune.errors import EXIT_USER_ERROR, run_cli
    from mcqtune.infer.benchmark import check_outputs, output_paths, write_outputs

    report = {"task": "cmmlu", "shots": 0, "model_path": "m", "test_file": "t.csv",
              "summary": {"overall": {"questions": 1, "acc": 1.0}, "per_subject": {}}}
    ours = tmp_path / "ours"
    ours.mkdir()
    write_outputs(ours, pd.DataFrame({"ID": ["1"]}), report)
    check_outputs(ours)  # an earlier benchmark's: may be replaced
    legacy = tmp_path / "legacy"  # a benchmark of an older version: its report lists no files
    legacy.mkdir()
    (legacy / "benchmark_report.md").write_text("# cmmlu")
    (legacy / "benchmark_report.json").write_text(json.dumps({**report, "prompt": "lm-eval's"}))
    check_outputs(legacy)
    assert all(p.is_file() for p in output_paths(ours))

    test = tmp_path / "test.csv"
    test.write_text("ID,question,option_A,option_B,option_C,option_D,answer\n1,q,a,b,c,d,A\n", encoding="utf-8")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "benchmark_report.md").write_text("my notes")
    argv = ["--model_path", str(tmp_path / "none"), "--test_file", str(test), "--output_dir", str(mine)]
    assert run_cli(benchmark_cli.main, argv) == EXIT_USER_ERROR
    assert "benchmark_report.md already exists and was not written by" in capsys.readouterr().err
    assert (mine / "benchmark_report.md").read_text() == "my notes"
    (mine / "benchmark_report.md").unlink()
    (mine / "benchmark_report.json").write_text('{"output_file": "elsewhere.csv"}')  # another kind of record
    assert run_cli(benchmark_cli.main, argv) == EXIT_USER_ERROR
    assert "benchmark_report.json already exists" in capsys.readouterr().err
    argv[-1] = str(test)
    assert run_cli(benchmark_cli.main, argv) == EXIT_USER_ERROR
    assert "is a file; name a folder" in capsys.readouterr().err


def test_a_dev_file_without_shots_for_a_test_subject_is_refused_before_loading(tmp_path, capsys):
    from mcqtune.errors import EXIT_USER_ERROR, run_cli

    header = "ID,question,option_A,option_B,option_C,option_D,answer,subject\n"
    test = tmp_path / "test.csv"
    test.write_text(header + "1,中国的首都是哪里？,北京,上海,广州,深圳,A,地理\n2,一加一,1,2,3,4,B,数学\n",
                    encoding="utf-8")
    dev = tmp_path / "dev.csv"
    dev.write_text(header + "d1,二加二,4,2,3,1,A,数学\n", encoding="utf-8")  # no 地理 question
    argv = ["--model_path", str(tmp_path / "none"), "--test_file", str(test), "--dev_file", str(dev), "--shots", "1"]
    assert run_cli(benchmark_cli.main, argv) == EXIT_USER_ERROR
    assert "0 solved question(s) of subject '地理', 1 needed" in capsys.readouterr().err
