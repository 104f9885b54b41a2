"""Scale-out on one host: N processes (torchrun) shard inference and merge one submission in input order."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def torchrun(nproc, *argv, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def test_two_process_inference_equals_one_process_and_resumes(trained_run, tmp_path):
    common = ["infer.py", "--model_path", trained_run["dir"] / "adapter", "--test_file",
              trained_run["sample_dir"] / "test.csv", "--batch_size", 16]
    single = torchrun(1, *common, "--output_file", tmp_path / "one.csv")
    assert single.returncode == 0, single.stderr[-3000:]
    double = torchrun(2, *common, "--output_file", tmp_path / "two.csv")
    assert double.returncode == 0, double.stderr[-3000:]
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    run_dir = tmp_path / "two_run"
    assert {p.name for p in run_dir.glob("predictions.partial.rank*")} == {
        "predictions.partial.rank0-of-2.jsonl", "predictions.partial.rank1-of-2.jsonl"}
    # lose one shard's tail: the same command answers only what is missing and gives the same file
    shard = run_dir / "predictions.partial.rank1-of-2.jsonl"
    lines = shard.read_text().splitlines()
    shard.write_text("\n".join(lines[:-20]) + "\n")
    (tmp_path / "two.csv").unlink()
    again = torchrun(2, *common, "--output_file", tmp_path / "two.csv")
    assert again.returncode == 0, again.stderr[-3000:]
    assert '"rows": 160' in again.stdout
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    shutil.rmtree(run_dir)
