"""runs/distributed.py: N processes (torchrun, one host or two nodes) shard inference and training, and their results
meet over the process group: one submission in input order, the same LoRA weights on every rank."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def torchrun(nproc, *argv, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def answer_in_one_process(trained_run, output_file):
    """The infer.py command line every launch shares, after one process answered with it into ``output_file``."""
    common = ["infer.py", "--model_path", trained_run["dir"] / "adapter", "--test_file",
              trained_run["sample_dir"] / "test.csv", "--batch_size", 16]
    single = torchrun(1, *common, "--output_file", output_file)
    assert single.returncode == 0, single.stderr[-3000:]
    return common


@pytest.mark.slow
def test_two_process_inference_equals_one_process_and_resumes(trained_run, tmp_path):
    common = answer_in_one_process(trained_run, tmp_path / "one.csv")
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


def two_node_launch(argv_for_node, port, timeout=900):
    """Two torchrun launches on localhost, as on two machines: --nnodes 2, one process each, c10d rendezvous,
    each node in its own working folder (no shared filesystem)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launches = []
    for node in (0, 1):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
                   "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                   "--rdzv_id", "mcq-test", *map(str, argv_for_node(node))]
        launches.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                         env=env))
    results = []
    for launch in launches:
        out, err = launch.communicate(timeout=timeout)
        results.append((launch.returncode, out, err))
    return results


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_answer_like_one_process_without_a_shared_filesystem(trained_run, tmp_path):
    common = answer_in_one_process(trained_run, tmp_path / "one.csv")
    for node in (0, 1):
        (tmp_path / f"node{node}").mkdir()
    results = two_node_launch(lambda node: [*common, "--output_file", tmp_path / f"node{node}" / "sub.csv"],
                              free_port())
    for code, _, err in results:
        assert code == 0, err[-3000:]
    # rank 0 gathered every answer over the process group; the other node wrote nothing but its checkpoint
    assert (tmp_path / "node0" / "sub.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert not (tmp_path / "node1" / "sub.csv").exists()
    assert (tmp_path / "node1" / "sub_run" / "predictions.partial.rank1-of-2.jsonl").is_file()


@pytest.mark.slow
def test_two_nodes_train_in_step_and_each_keeps_its_checkpoints(tiny_model_dir, sample_dir, tmp_path):
    import re

    results = two_node_launch(lambda node: [  # bench/ddp_checksum.py: train_sft.run, then each rank's LoRA sum
        "bench/ddp_checksum.py", "--config", "demo-cpu.yaml",
        "--model_name_or_path", tiny_model_dir, "--train_file",
        sample_dir / "train.csv", "--output_dir", tmp_path / f"node{node}", "--max_steps", 4, "--eval_steps", 2,
        "--save_steps", 2, "--save_on_each_node", "true", "--per_device_eval_batch_size", 8], free_port())
    sums, shares, accuracies = [], [], []
    for code, out, err in results:
        assert code == 0, err[-3000:]
        sums += re.findall(r"lora-sum (\S+) wrapped DistributedDataParallel", out)
        shares.append([tuple(map(int, m)) for m in re.findall(r"rank \d+ scored (\d+) of (\d+) questions", err)])
        accuracies.append(re.findall(r"eval-accuracies (\[.*\])", out))
    assert len(sums) == 2 and sums[0] == sums[1]  # data parallel: both ranks end with the same LoRA weights
    # validation is sharded: at each evaluation the two ranks scored complementary parts of the questions,
    # and both logged the same metrics from the whole table
    assert len(shares[0]) == len(shares[1]) >= 2
    for (mine, total), (theirs, total_too) in zip(*shares):
        assert total == total_too and mine + theirs == total and 0 < mine < total
    assert accuracies[0] and accuracies[0] == accuracies[1]
    for node in (0, 1):  # no shared filesystem: each node sealed the checkpoints it would resume from
        assert (tmp_path / f"node{node}" / "checkpoint-4" / "mcq_checkpoint.json").is_file()
    assert (tmp_path / "node0" / "adapter" / "adapter_model.safetensors").is_file()
