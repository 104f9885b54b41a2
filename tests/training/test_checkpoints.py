"""training/checkpoints.py: a seal detects truncated or overwritten files; a fresh run sets earlier checkpoints
aside."""

import torch
from safetensors.torch import save_file

from mcqtune.training.checkpoints import checkpoint_to_resume, seal, seal_problem, set_aside_previous_run


def test_checkpoint_seal_detects_truncated_files_and_fresh_runs_set_old_checkpoints_aside(tmp_path):
    def adapter_weights(path):
        save_file({"lora_A": torch.ones(4, 8), "lora_B": torch.zeros(8, 4)}, str(path))
        return path

    done = tmp_path / "checkpoint-3"
    done.mkdir()
    adapter_weights(done / "adapter_model.safetensors")
    (done / "trainer_state.json").write_text("{}")
    seal(done, {"lr": 1})
    assert seal_problem(done) is None
    newer = tmp_path / "checkpoint-6"
    newer.mkdir()
    weights = adapter_weights(newer / "adapter_model.safetensors")
    seal(newer, {"lr": 1})
    weights.write_bytes(weights.read_bytes()[:40])  # cut off after sealing (a damaged disk)
    assert "adapter_model.safetensors" in seal_problem(newer)
    same_size = tmp_path / "checkpoint-5"  # overwritten in place: the sizes still match, the header does not
    same_size.mkdir()
    weights = adapter_weights(same_size / "adapter_model.safetensors")
    seal(same_size, {"lr": 1})
    weights.write_bytes(b"\xff" * weights.stat().st_size)
    assert "not a readable safetensors file" in seal_problem(same_size)
    assert checkpoint_to_resume(tmp_path, {"lr": 1}) == str(done)
    assert (tmp_path / "incomplete-checkpoint-6").is_dir() and (tmp_path / "incomplete-checkpoint-5").is_dir()
    (tmp_path / "adapter").mkdir()  # and the earlier run's model and summary go with its checkpoints
    (tmp_path / "training_summary.json").write_text("{}")
    aside = set_aside_previous_run(tmp_path)
    assert (aside / "checkpoint-3").is_dir() and not done.exists()
    assert (aside / "adapter").is_dir() and (aside / "training_summary.json").is_file()
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "training_summary.json").exists()
