"""--distill_from: the teacher's letter probabilities reach every batch, the loss adds exactly the KL over A-D at
the answer position, and only teachers of this very train file are accepted."""

import pandas as pd
import pytest
import torch

from mcqtune.errors import ConfigError, DataError
from mcqtune.runs.provenance import ProvenanceError
from mcqtune.train import run as train_run
from mcqtune.train import sft as train_sft
from tests.helpers import train_args


@pytest.fixture(scope="module")
def teacher_run(trained_run, tmp_path_factory):
    """The trained run's adapter answering the training file: a teacher with a report.json."""
    from mcqtune.infer import run as infer

    out = tmp_path_factory.mktemp("teacher")
    args = infer.InferArguments(test_file=str(trained_run["sample_dir"] / "train.csv"),
                                model_path=str(trained_run["dir"] / "adapter"), output_file=str(out / "t.csv"),
                                backend="hf", load_in_4bit=False)
    infer.run(args)
    return args.run_dir


def distilled(trained_run, output_dir, *extra):
    return train_args(trained_run["model_dir"], trained_run["sample_dir"] / "train.csv", output_dir, *extra)


def test_teacher_probabilities_reach_the_batches_and_the_loss_adds_the_kl(trained_run, teacher_run, tmp_path):
    from mcqtune.train.trainer import answer_only_labels, answer_only_loss, distilled_answer_loss

    script_args, training_args = distilled(trained_run, tmp_path, "--distill_from", teacher_run,
                                           "--distill_weight", 0.7, "--distill_temperature", 2.0)
    train, val = train_sft.load_splits(script_args, training_args.seed)
    train = train_sft.with_teachers(script_args, train)
    model, tokenizer = train_run.load_model(script_args, training_args, "hf")
    train_ds, val_ds = train_run.build_datasets(tokenizer, train, val, script_args)
    trainer = train_run.build_trainer(model, tokenizer, train_ds, val_ds, val, script_args, training_args)
    batch = next(iter(trainer.get_train_dataloader()))
    teacher = pd.read_csv(teacher_run / "predictions.csv", dtype=str).set_index("ID")
    assert batch["teacher_probs"].shape == (batch["input_ids"].shape[0], 4)
    first = tokenizer.decode(batch["input_ids"][0])
    row = next(r for _, r in train.iterrows() if r["question"] in first)
    expected = teacher.loc[row["ID"], ["p_A", "p_B", "p_C", "p_D"]].astype(float).to_numpy()
    assert torch.allclose(batch["teacher_probs"][0], torch.tensor(expected, dtype=torch.float32), atol=1e-6)
    with torch.no_grad():
        loss = distilled_answer_loss(model, batch, trainer.letter_ids, 0.7, 2.0)
        plain = answer_only_loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        at = answer_only_labels(batch["labels"])[:, 1:] != -100
        student = torch.log_softmax(logits[at][:, list(trainer.letter_ids)] / 2.0, dim=-1)
        soft = torch.softmax(batch["teacher_probs"].clamp_min(1e-12).log() / 2.0, dim=-1)
        kl = (soft * (soft.clamp_min(1e-12).log() - student)).sum(dim=-1).mean() * 4.0
        assert torch.allclose(loss, plain + 0.7 * kl, atol=1e-4)
        none = {**batch, "teacher_probs": torch.full_like(batch["teacher_probs"], float("nan"))}
        assert torch.allclose(distilled_answer_loss(model, none, trainer.letter_ids, 0.7, 2.0), plain, atol=1e-5)
        # as the Trainer calls it: the step's labelled tokens given; two micro-batches add up to the whole batch
        tokens = int((batch["labels"][:, 1:] != -100).sum())
        half = batch["input_ids"].shape[0] // 2
        parts = [{k: v[rows] for k, v in batch.items()} for rows in (slice(0, half), slice(half, None))]
        summed = sum(distilled_answer_loss(model, part, trainer.letter_ids, 0.7, 2.0, tokens) for part in parts)
        assert torch.allclose(summed, loss, atol=1e-4)


@pytest.mark.slow
def test_a_distilled_run_counts_its_rows_and_a_missing_teacher_row_trains_on_the_label(trained_run, teacher_run,
                                                                                     tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    predictions = pd.read_csv(teacher_run / "predictions.csv", dtype=str)
    predictions.iloc[5:].to_csv(partial / "predictions.csv", index=False)  # the teacher skipped 5 rows
    record_beside(teacher_run, partial)
    summary = train_sft.run(*distilled(trained_run, tmp_path / "out", "--distill_from", partial, "--max_steps", 2,
                                        "--eval_steps", 2, "--save_steps", 2))
    counts = summary["rows"]["train"]
    skipped = set(predictions["ID"].iloc[:5])
    assert counts["distilled_rows"] == counts["rows"] - sum(i in skipped for i in summary_ids(trained_run, summary))


def record_beside(run, folder):
    """``run``'s report.json beside the predictions.csv written into ``folder``, as if that run had written it (its
    record of the predictions' bytes updated: an edited file is refused)."""
    import json

    from mcqtune.runs.identity import sha256_file

    record = json.loads((run / "report.json").read_text())
    (folder / "report.json").write_text(json.dumps({**record,
                                                    "predictions_sha256": sha256_file(folder / "predictions.csv")}))


def summary_ids(trained_run, summary):
    script_args, training_args = distilled(trained_run, "unused")
    train, _ = train_sft.load_splits(script_args, training_args.seed)
    return list(train["ID"])


def test_only_teachers_of_this_train_file_are_accepted(trained_run, teacher_run, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "predictions.csv").write_text((teacher_run / "predictions.csv").read_text())
    report = (teacher_run / "report.json").read_text().replace('"test_file_sha256": "', '"test_file_sha256": "0')
    (other / "report.json").write_text(report)
    with pytest.raises(ProvenanceError, match="answered another test file"):
        train_sft.run(*distilled(trained_run, tmp_path / "a", "--distill_from", other))
    (other / "report.json").unlink()
    with pytest.raises(ProvenanceError, match="no report.json"):
        train_sft.run(*distilled(trained_run, tmp_path / "b", "--distill_from", other))
    broken = tmp_path / "broken"
    broken.mkdir()
    frame = pd.read_csv(teacher_run / "predictions.csv", dtype=str)
    frame.loc[3, "p_B"] = "abc"
    frame.to_csv(broken / "predictions.csv", index=False)
    record_beside(teacher_run, broken)
    with pytest.raises(DataError, match="not a number"):
        train_sft.run(*distilled(trained_run, tmp_path / "e", "--distill_from", broken))
    with pytest.raises(DataError, match="no such file"):
        train_sft.run(*distilled(trained_run, tmp_path / "c", "--distill_from", tmp_path / "missing"))
    with pytest.raises(ConfigError, match="not supported with --loss letters"):
        train_sft.run(*distilled(trained_run, tmp_path / "d", "--distill_from", teacher_run, "--loss", "letters"))
