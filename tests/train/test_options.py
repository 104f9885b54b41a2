"""train/options.py: what a backend would switch off while the config is built is refused from the command line
and the YAML file first (Unsloth turns packing and padding_free off, so the parsed config cannot show them)."""

import pytest

from mcqtune.errors import ConfigError
from mcqtune.train.options import check_requested


@pytest.mark.parametrize("argv", [["--packing", "true"], ["--packing"], ["--padding_free=True"],
                                  ["--padding-free", "1"]])
def test_packing_or_padding_free_asked_on_the_command_line_is_refused(argv):
    with pytest.raises(ConfigError, match="padding_free / packing"):
        check_requested(["--train_file", "x.csv", *argv])


def test_packing_asked_in_the_config_file_is_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("packing: true\n")
    with pytest.raises(ConfigError, match="padding_free / packing"):
        check_requested(["--config", str(config)])
    config.write_text("packing: false\npadding_free: false\n")
    check_requested(["--config", str(config), "--packing", "false"])
    check_requested(["--config", "demo-cpu.yaml"])  # the shipped configs ask for neither
