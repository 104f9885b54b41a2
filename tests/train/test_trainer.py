"""mcq_trainer's losses on a tiny random Qwen2: the four-letter loss by hand, the answer loss as the model's own."""

import pytest
import torch

from mcqtune.train import trainer as mcq_trainer
from mcqtune.train.trainer import IGNORE_INDEX, answer_only_labels, answer_only_loss, check_loss, letters_only_loss


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def letter_ids(qwen_tokenizer):
    from mcqtune.core.scoring import letter_token_ids

    return letter_token_ids(qwen_tokenizer)


def make_batch(tokenizer, letter_ids, answers="BDAC", seed=0):
    """Rows of random prompt tokens of different lengths, then the answer letter and <|im_end|>; right-padded
    as the collator pads, with labels only on the answer (as TRL builds them from the completion mask)."""
    generator = torch.Generator().manual_seed(seed)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = [torch.randint(1000, 30000, (5 + 3 * i,), generator=generator).tolist() + [letter_ids["ABCD".index(a)], end]
            for i, a in enumerate(answers)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX)
    for i, row in enumerate(rows):
        input_ids[i, :len(row)] = torch.tensor(row)
        attention_mask[i, :len(row)] = 1
        labels[i, len(row) - 2:len(row)] = torch.tensor(row[-2:])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def hand_letters_loss(model, batch, letter_ids, answers):
    """Mean over rows of -log softmax over the four letters' logits, read from the model's full forward at the
    position before each answer letter."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    losses = []
    for i, answer in enumerate(answers):
        position = int((batch["labels"][i] != IGNORE_INDEX).nonzero()[0]) - 1
        four = logits[i, position, letter_ids]
        losses.append(-torch.log_softmax(four, dim=0)["ABCD".index(answer)])
    return torch.stack(losses).mean()


@torch.no_grad()
def test_letters_loss_is_the_four_way_cross_entropy_at_the_answer_position(model, qwen_tokenizer, letter_ids):
    batch = make_batch(qwen_tokenizer, letter_ids, "BDAC")
    expected = hand_letters_loss(model, batch, letter_ids, "BDAC")
    assert letters_only_loss(model, batch, letter_ids).item() == pytest.approx(expected.item(), rel=1e-5)
    # a uniform guess costs log 4; a random model is near it but the value depends on the right letter
    other = letters_only_loss(model, make_batch(qwen_tokenizer, letter_ids, "ACBD"), letter_ids)
    assert other.item() != pytest.approx(expected.item(), rel=1e-6)


@torch.no_grad()
def test_letters_loss_ignores_the_rest_of_the_vocabulary(model, qwen_tokenizer, letter_ids):
    batch = make_batch(qwen_tokenizer, letter_ids)
    head = model.get_output_embeddings()
    unused = 40000  # not a letter, not in the batch (its row may be tied to the input embedding)
    assert unused not in batch["input_ids"] and unused not in letter_ids
    letters_before, answer_before = letters_only_loss(model, batch, letter_ids), answer_only_loss(model, batch)
    saved = head.weight[unused].clone()
    try:
        head.weight[unused] = 50 * head.weight[letter_ids].mean(0) + 5  # a logit far above the letters'
        assert letters_only_loss(model, batch, letter_ids).item() == pytest.approx(letters_before.item(), rel=1e-6)
        assert answer_only_loss(model, batch).item() > answer_before.item() + 1  # the full-vocabulary loss sees it
    finally:
        head.weight[unused] = saved


@torch.no_grad()
def test_answer_loss_is_the_models_own_causal_lm_loss(model, qwen_tokenizer, letter_ids):
    batch = make_batch(qwen_tokenizer, letter_ids)
    own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert answer_only_loss(model, batch).item() == pytest.approx(own.item(), rel=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("loss", ["answer", "letters"])
def test_gradient_accumulation_sums_to_the_whole_batch_mean(model, qwen_tokenizer, letter_ids, loss):
    """Two micro-batches, each divided by the accumulated batch's item count, add up to the whole batch's mean;
    the letters loss counts one item per row (its answer position), the answer loss one per labelled token."""
    def run(batch, n=None):
        if loss == "letters":
            return letters_only_loss(model, batch, letter_ids, n)
        return answer_only_loss(model, batch, n)

    first, second = make_batch(qwen_tokenizer, letter_ids, "AB", 1), make_batch(qwen_tokenizer, letter_ids, "CDA", 2)
    labels = [answer_only_labels(b["labels"]) if loss == "letters" else b["labels"] for b in (first, second)]
    items = sum(int((lab[:, 1:] != IGNORE_INDEX).sum()) for lab in labels)  # as the Trainer counts them
    assert items == (5 if loss == "letters" else 10)
    accumulated = run(first, items) + run(second, items)
    expected = (run(first) * (2 if loss == "letters" else 4) + run(second) * (3 if loss == "letters" else 6)) / items
    assert accumulated.item() == pytest.approx(expected.item(), rel=1e-5)


def test_answer_only_labels_keeps_each_rows_first_label():
    labels = torch.tensor([[IGNORE_INDEX, 5, 6, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 7, 8],
                           [IGNORE_INDEX] * 4])
    kept = answer_only_labels(labels)
    assert kept.tolist() == [[IGNORE_INDEX, 5, IGNORE_INDEX, IGNORE_INDEX],
                             [IGNORE_INDEX, IGNORE_INDEX, 7, IGNORE_INDEX], [IGNORE_INDEX] * 4]


def test_an_answer_that_is_not_a_letter_token_is_refused(model, qwen_tokenizer, letter_ids):
    batch = make_batch(qwen_tokenizer, letter_ids)
    first = (batch["labels"][0] != IGNORE_INDEX).nonzero()[0]
    batch["labels"][0, first] = batch["input_ids"][0, first] = 12345
    with pytest.raises(ValueError, match="--loss answer"):
        letters_only_loss(model, batch, letter_ids)


def test_loss_choices():
    assert check_loss("letters", 1) == "letters"
    with pytest.raises(ValueError, match="one of answer, letters"):
        check_loss("focal", 1)
    with pytest.raises(ValueError, match="one process"):
        check_loss("letters", 2)
    assert mcq_trainer.LOSSES == ("answer", "letters")


def test_the_loss_option_reaches_the_trainer_and_the_identity(tmp_path, tiny_model_dir, sample_dir):
    from tests.helpers import train_args

    from mcqtune.train import run as train_run

    script_args, training_args = train_args(tiny_model_dir, sample_dir / "train.csv", tmp_path, "--loss", "letters")
    assert script_args.loss == "letters"
    default, _ = train_args(tiny_model_dir, sample_dir / "train.csv", tmp_path)
    assert default.loss == "answer"
    assert train_run.training_run_identity(script_args, training_args)["loss"] == "letters"
    assert train_run.training_run_identity(default, training_args)["loss"] == "answer"


@pytest.mark.slow
def test_training_with_the_letters_loss(tmp_path, tiny_model_dir, sample_dir):
    from tests.helpers import train_args

    from mcqtune.train import sft as train_sft
    script_args, training_args = train_args(tiny_model_dir, sample_dir / "train.csv", tmp_path, "--loss", "letters",
                                            "--max_steps", "3", "--eval_steps", "3", "--save_steps", "3")
    summary = train_sft.run(script_args, training_args)
    assert (tmp_path / "adapter").is_dir()
    assert 0 <= summary["best_eval_accuracy"] <= 1


@pytest.mark.slow
def test_the_answer_weight_counts_a_reasoning_replys_letter_that_many_times(tiny_model_dir, sample_dir, tmp_path):
    import pandas as pd
    import torch.nn.functional as F

    from mcqtune.train import run as train_run
    from mcqtune.train import sft as train_sft
    from tests.helpers import train_args

    frame = pd.read_csv(sample_dir / "train.csv", dtype=str).head(40)
    frame["explanation"] = [f"A项不对，B项也不对，{a}项最符合。" for a in frame["answer"]]  # letters inside too
    frame.to_csv(tmp_path / "train.csv", index=False)
    script_args, training_args = train_args(tiny_model_dir, tmp_path / "train.csv", tmp_path / "run",
                                            "--reasoning_column", "explanation", "--max_answer_tokens", 64,
                                            "--answer_weight", 3, "--per_device_train_batch_size", 4)
    train, val = train_sft.load_splits(script_args, training_args.seed)
    model, tokenizer = train_run.load_model(script_args, training_args, "hf")
    train_ds, val_ds = train_run.build_datasets(tokenizer, train, val, script_args)
    trainer = train_run.build_trainer(model, tokenizer, train_ds, val_ds, val, script_args, training_args)
    batch = next(iter(trainer.get_train_dataloader()))
    prefix = tokenizer.encode("答案：", add_special_tokens=False)
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    weights = keep.float()
    for row, ids in enumerate(batch["input_ids"].tolist()):  # the letter after the reply's last 答案：
        at = max(i for i in range(len(ids)) if ids[i:i + len(prefix)] == prefix) + len(prefix)
        assert keep[row, at - 1] and tokenizer.decode(ids[at]) in "ABCD"
        weights[row, at - 1] = 3.0
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        per_token = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
        weighted = trainer.compute_loss(model, batch)
        assert torch.allclose(weighted, (per_token * weights).sum() / keep.sum(), atol=1e-4)
        assert torch.allclose(answer_only_loss(model, batch), (per_token * keep).sum() / keep.sum(), atol=1e-4)
        assert not torch.allclose(weighted, answer_only_loss(model, batch), atol=1e-3)


@pytest.mark.parametrize("extra, message", [
    (["--answer_weight", 2], "answer_weight weighs the answer against the reasoning: it needs reasoning_column"),
    (["--answer_weight", 0, "--reasoning_column", "explanation"], "answer_weight must be a number > 0, got 0"),
    (["--answer_weight", "nan", "--reasoning_column", "explanation"], "answer_weight must be a number > 0, got nan"),
])
def test_an_answer_weight_without_reasoning_or_not_positive_is_refused(tiny_model_dir, sample_dir, tmp_path, extra,
                                                                       message):
    from mcqtune.errors import ConfigError
    from mcqtune.train.options import check_config
    from tests.helpers import train_args

    with pytest.raises(ConfigError, match=message):
        check_config(*train_args(tiny_model_dir, sample_dir / "train.csv", tmp_path / "run", *extra))
