"""infer/traces.py: the command line (infer.py's options, --train_file for --test_file, --mode always reason)."""

import pytest

from mcqtune.errors import ConfigError
from mcqtune.infer.traces import parse_args


def test_the_training_file_stands_for_the_test_file_and_any_other_mode_is_refused(tmp_path):
    args, samples = parse_args(["--model_path", "m", "--train_file", "train.csv", "--output_file", "traces.csv"])
    assert args.test_file == "train.csv" and samples == 1
    for mode in (["--mode", "score"], ["--mode=generate"]):
        with pytest.raises(ConfigError, match=f"leave out --mode {mode[-1].split('=')[-1]} \\(it is always reason "
                                              "here\\)"):
            parse_args(["--model_path", "m", "--train_file", "t.csv", "--output_file", "o.csv", *mode])
    args, _ = parse_args(["--model_path", "m", "--train_file", "t.csv", "--output_file", "o.csv", "--mode", "reason"])
    assert args.test_file == "t.csv"
    config = tmp_path / "traces.yaml"
    config.write_text("mode: score\n")
    with pytest.raises(ConfigError, match="leave out --mode score"):
        parse_args(["--config", str(config), "--model_path", "m", "--train_file", "t.csv", "--output_file", "o.csv"])
