"""Fine-tune a chat model on single-choice questions with LoRA; keep the checkpoint with the best accuracy.

    python train_sft.py --config configs/qwen2.5-14b-4090.yaml
    python train_sft.py --config configs/demo-cpu.yaml --output_dir outputs/demo --num_train_epochs 2

Every option can come from the YAML file or the command line (the command line wins); `--help` lists them.
The backend (`unsloth`: 4-bit NF4 with Unsloth's fused LoRA kernels; `hf`: plain transformers + peft +
bitsandbytes, the reference recipe) is chosen before trl/transformers are imported. The output directory
ends up holding the LoRA adapter (`adapter/`), optionally merged 16-bit weights (`merged/`), Trainer
checkpoints (`checkpoint-*`, for `--resume`), `training_summary.json` and `training_curves.png`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from cli import ConfigError, parse_with, run_cli
from chat_template import find_answer_slot
from mcq_dataset import PromptOptions, check_prompt_options
from train_data import build_datasets, check_nothing_dropped, load_splits
from model_options import LoraOptions, WeightOptions, check_lora_options
from modeling import embedding_on_host, peek_backend, select_backend

logger = logging.getLogger("train_sft")

DEFAULTS_FILE = Path(__file__).resolve().parent / "configs" / "defaults.yaml"  # the recipe's defaults, in YAML


# Dataclass fields (and --help) follow the bases in reverse: the prompt's, the weights', LoRA's, then these.
@dataclass
class ScriptArguments(LoraOptions, WeightOptions, PromptOptions):
    train_file: str = field(default="", metadata={"help": "competition CSV with an answer column"})
    val_file: str | None = field(default=None, metadata={"help": "validation CSV; default: split train_file"})
    extra_train_files: list[str] = field(default_factory=list, metadata={
        "help": "more labelled CSVs in the same layout (public MCQ sets ...), added to the training rows only: "
                "validation and folds come from train_file, the one the leaderboard resembles"})
    extra_train_weights: list[float] = field(default_factory=list, metadata={
        "help": "per extra file, the share of its rows to use (0.5: a seeded half; 2: every row twice); default 1"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of train_file held out (stratified)"})
    model_name_or_path: str = field(default="", metadata={"help": "local model directory or hub id"})
    offload_embedding: bool = field(default=False, metadata={
        "help": "keep the input embedding table in host RAM, only looked-up rows go to the GPU (a lower GPU peak, "
                "bench/RESULTS.md; unsloth backend, one training process; not used with several)"})
    max_answer_tokens: int = field(default=48, metadata={"help": "answer tokens kept (letter + <|im_end|>)"})
    loss: str = field(default="answer", metadata={
        "help": "answer: cross-entropy of the answer tokens over the whole vocabulary (TRL's loss); letters: "
                "cross-entropy among A-D only, at the answer position, which is what the scorer reads: no gradient "
                "is spent on the rest of the vocabulary or <|im_end|> (one training process)",
        "choices": ["answer", "letters"]})
    augment_permutations: int = field(default=0, metadata={"help": "extra copies of each row, options shuffled"})
    export: str = field(default="adapter", metadata={"help": "adapter | merged (adapter + merged 16-bit weights)",
                                                     "choices": ["adapter", "merged"]})
    merged_dtype: str | None = field(default=None, metadata={"help": "dtype of merged weights (default: the base "
                                                                     "model's own; bfloat16, float16, float32)"})
    early_stopping_patience: int | None = field(default=None, metadata={"help": "evaluations without improvement"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})
    keep_effective_batch: bool = field(default=True, metadata={"help": "on N GPUs divide gradient_accumulation_steps "
                                                                      "by N so the effective batch stays the same"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use only the first N training rows"})
    encoding: str | None = field(default=None, metadata={"help": "CSV encoding if not UTF-8 (gb18030, big5)"})
    folds: int = field(default=1, metadata={"help": "k-fold: train K adapters into <output_dir>/fold-<i>/, each "
                                                    "validated on its own fold; out-of-fold predictions and "
                                                    "cv_report.md at the end"})
    fold: int | None = field(default=None, metadata={"help": "with --folds K: train only fold i (0..K-1), e.g. "
                                                             "one fold per GPU or machine"})


def recipe_defaults() -> dict:
    import yaml

    return yaml.safe_load(DEFAULTS_FILE.read_text())


def make_parser():
    from trl import SFTConfig, TrlParser

    parser = TrlParser((ScriptArguments, SFTConfig))
    parser.set_defaults(**recipe_defaults())
    return parser


def check_config(script_args: ScriptArguments, training_args) -> None:
    """Fail on impossible settings with one sentence, before any data or model is loaded."""
    problems = []
    if not script_args.train_file:
        problems.append("train_file is required")
    if not script_args.model_name_or_path:
        problems.append("model_name_or_path is required")
    if not 0 < script_args.val_fraction < 1 and not script_args.val_file:
        problems.append(f"val_fraction must be between 0 and 1, got {script_args.val_fraction}")
    problems += check_lora_options(script_args)
    problems += check_prompt_options(script_args)
    if script_args.folds < 1 or (script_args.fold is not None and not 0 <= script_args.fold < script_args.folds):
        problems.append(f"folds must be >= 1 and fold in 0..folds-1, got folds {script_args.folds}, fold "
                        f"{script_args.fold}")
    if len(script_args.extra_train_weights) > len(script_args.extra_train_files) or \
            any(w <= 0 for w in script_args.extra_train_weights):
        problems.append("extra_train_weights: one positive number per extra_train_files entry")
    if script_args.folds > 1 and script_args.val_file:
        problems.append("with --folds the validation rows are the folds of train_file: leave out val_file")
    if script_args.max_answer_tokens < 2:
        problems.append(f"max_answer_tokens must be >= 2 (the letter and the end of the turn), got "
                        f"{script_args.max_answer_tokens}")
    if training_args.per_device_train_batch_size < 1 or training_args.gradient_accumulation_steps < 1:
        problems.append("per_device_train_batch_size and gradient_accumulation_steps must be >= 1")
    if getattr(training_args, "padding_free", False) or getattr(training_args, "packing", False):
        problems.append("padding_free / packing put several questions into one sequence, which is right only with "
                        "FlashAttention's variable-length kernels; this recipe runs PyTorch's SDPA attention, where "
                        "the questions would attend to each other. To cut padding use --train_sampling_strategy "
                        "group_by_length instead")
    if problems:
        raise ConfigError("; ".join(problems))


def fit_max_length(script_args: ScriptArguments, training_args) -> None:
    """TRL's max_length follows the prompt and answer limits, so TRL never cuts a row that this script built."""
    wanted = script_args.max_prompt_tokens + script_args.max_answer_tokens
    if getattr(training_args, "max_length", None) != wanted:
        logger.info("max_length %s -> %d (max_prompt_tokens + max_answer_tokens)", training_args.max_length, wanted)
        training_args.max_length = wanted


def scale_for_processes(script_args: ScriptArguments, training_args) -> None:
    """Data-parallel on N GPUs: keep micro-batch x accumulation x N equal to the single-GPU recipe."""
    world = training_args.world_size
    launched = int(os.environ.get("WORLD_SIZE", 1))
    if launched > 1 and world != launched:
        raise ConfigError(f"launched as {launched} processes but the Trainer runs {world} (data parallelism needs "
                          "one GPU per process); without GPUs train in one process")
    if world <= 1 or not script_args.keep_effective_batch:
        return
    micro, accumulation = training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps
    effective = micro * accumulation
    if effective % world:
        logger.warning("the effective batch %d cannot be split over %d processes: it grows to %d", effective, world,
                       micro * accumulation * world)
        return
    share = effective // world  # samples each process contributes to one optimiser step
    micro = next(m for m in range(min(micro, share), 0, -1) if share % m == 0)
    training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps = micro, share // micro
    logger.info("%d processes: micro-batch %d x accumulation %d per process (effective batch %d unchanged)", world,
                micro, share // micro, effective)


def training_dtype(training_args):
    """The dtype the model is loaded in follows the training precision: fp16 training (T4-class cards,
    no bf16) needs fp16 weights, or Unsloth refuses to train."""
    import torch

    if not torch.cuda.is_available():
        return None
    if training_args.fp16:
        return torch.float16
    return torch.bfloat16 if training_args.bf16 else None


def embedding_offload_wanted(script_args: ScriptArguments, training_args, backend: str = "unsloth") -> bool:
    """``offload_embedding`` for a single training process on the unsloth backend only: DDP wraps a model on
    one device, and plain transformers has no such offload. Saying no is logged."""
    if not script_args.offload_embedding:
        return False
    if training_args.world_size > 1 or backend != "unsloth":
        logger.warning("offload_embedding is not used (%s): the embedding table stays with the rest of the model",
                       f"{training_args.world_size} processes" if training_args.world_size > 1 else
                       f"backend {backend}")
        return False
    return True


def load_model(script_args: ScriptArguments, training_args, backend: str):
    import torch

    from modeling import add_lora, load_base_model, load_tokenizer

    device_map = {"": training_args.local_process_index} if training_args.world_size > 1 and torch.cuda.is_available() \
        else None
    offload = embedding_offload_wanted(script_args, training_args, backend)  # a refusal is logged there, once
    model, tokenizer = load_base_model(
        script_args.model_name_or_path, backend, load_in_4bit=script_args.load_in_4bit,
        max_seq_length=script_args.max_prompt_tokens + script_args.max_answer_tokens,
        trust_remote_code=training_args.trust_remote_code, training=True, seed=training_args.seed,
        device_map=device_map, dtype=training_dtype(training_args), offload_embedding=offload)
    if offload and torch.cuda.is_available() and not embedding_on_host(model):
        logger.warning("offload_embedding was asked for but the embedding table is on the GPU "
                       "(training_summary.json: embedding_on_host false)")
    if script_args.chat_template:
        tokenizer = load_tokenizer(script_args.model_name_or_path, training_args.trust_remote_code,
                                   script_args.chat_template)
    model = add_lora(model, backend, script_args, training_args.gradient_checkpointing, training_args.seed)
    return model, tokenizer


def build_trainer(model, tokenizer, train_ds, val_ds, val_frame, script_args: ScriptArguments, training_args,
                  fingerprint: dict | None = None):
    from transformers import EarlyStoppingCallback

    from checkpoints import SealCheckpoints
    from mcq_trainer import MCQTrainer, PhaseTimer

    callbacks = [PhaseTimer()] + ([SealCheckpoints(fingerprint)] if fingerprint is not None else [])
    if str(training_args.eval_strategy) in ("no", "IntervalStrategy.NO"):
        val_ds = val_frame = None
    elif len(val_ds) == 0:
        raise ConfigError("the validation split is empty: raise val_fraction, pass val_file, or set eval_strategy no")
    if script_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=script_args.early_stopping_patience))
    return MCQTrainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=val_ds,
                      processing_class=tokenizer, callbacks=callbacks, val_frame=val_frame,
                      prompt_style=script_args.prompt_style, max_prompt_tokens=script_args.max_prompt_tokens,
                      loss=script_args.loss)


def training_run_identity(script_args: ScriptArguments, training_args) -> dict:
    """What must be equal to continue a checkpoint or reuse a finished run (run_identity.training_identity)."""
    from run_identity import model_identity, training_identity

    return training_identity(script_args, training_args, model=model_identity(script_args.model_name_or_path),
                             world_size=max(training_args.world_size, 1))


def prepare_output_dir(script_args: ScriptArguments, training_args) -> tuple[dict, str | None]:
    """The run's identity and the checkpoint to resume from (None: start fresh). A fresh run moves an earlier
    run's checkpoints and outputs aside; --resume refuses checkpoints made with other data, model or settings."""
    from checkpoints import checkpoint_to_resume, set_aside_previous_run

    identity = training_run_identity(script_args, training_args)
    node_local = training_args.save_on_each_node  # no shared filesystem: every node keeps its own checkpoints
    main_process = int(os.environ.get("LOCAL_RANK" if node_local else "RANK", 0)) == 0
    if not script_args.resume:
        if main_process:
            set_aside_previous_run(training_args.output_dir)
        return identity, None
    resume_from = checkpoint_to_resume(training_args.output_dir, identity, move_aside=main_process)
    if resume_from is None:
        logger.warning("--resume: no complete checkpoint in %s, starting from scratch", training_args.output_dir)
        if main_process:
            set_aside_previous_run(training_args.output_dir)
    else:
        logger.info("resuming from %s", resume_from)
    return identity, resume_from


def export_results(trainer, tokenizer, script_args: ScriptArguments, training_args) -> dict[str, str]:
    from modeling import save_adapter

    return {"adapter": str(save_adapter(trainer.model, tokenizer, Path(training_args.output_dir) / "adapter"))}


def export_merged_weights(script_args: ScriptArguments, training_args, summary: dict) -> dict:
    """``--export merged``: export.py's merge (after the summary exists, so the model card can cite it)."""
    from export import export_merged
    from run_folder import write_json_atomic

    out = Path(training_args.output_dir)
    summary["outputs"]["merged"] = str(export_merged(out / "adapter", out / "merged", script_args.model_name_or_path,
                                                     dtype=script_args.merged_dtype,
                                                     trust_remote_code=training_args.trust_remote_code))
    write_json_atomic(summary, out / "training_summary.json")
    return summary


def write_summary(trainer, script_args, training_args, backend, started, paths, rows: dict, identity: dict) -> dict:
    from report import plot_training_curves
    from run_folder import write_json_atomic

    out = Path(training_args.output_dir)
    history = trainer.state.log_history
    accuracies = [e["eval_accuracy"] for e in history if "eval_accuracy" in e]
    summary = {
        "backend": backend, "model": script_args.model_name_or_path, "train_rows": rows["train"]["rows"],
        "val_rows": rows["validation"]["rows"], "rows": rows, "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "seconds": round(time.time() - started, 1),
        "train_samples_per_second": next((e["train_samples_per_second"] for e in reversed(history)
                                          if "train_samples_per_second" in e), None),
        **trainer.phase_times(),
        "train_mfu": train_utilisation(trainer, rows["train"]),
        "answer_slot": find_answer_slot(trainer.processing_class, script_args.prompt_style).describe(
            trainer.processing_class, script_args.prompt_style),
        "best_checkpoint": trainer.state.best_model_checkpoint, "best_eval_accuracy": max(accuracies, default=None),
        "final_eval_accuracy": accuracies[-1] if accuracies else None,
        "peak_gpu_memory_gb": trainer.peak_gpu_gb(), "embedding_on_host": embedding_on_host(trainer.model),
        "outputs": paths,
        "script_args": asdict(script_args), "run_identity": identity, "log_history": history,
    }
    write_json_atomic(summary, out / "training_summary.json")
    plot_training_curves(history, out / "training_curves.png")
    return summary


def main(script_args: ScriptArguments, training_args, backend: str | None = None) -> dict:
    """Validate, lock the output folder, load, train, export, summarise. Returns training_summary.json's content
    (with --folds, cross_validation's summary of all folds)."""
    check_config(script_args, training_args)
    scale_for_processes(script_args, training_args)
    fit_max_length(script_args, training_args)
    backend = select_backend(backend or script_args.backend)
    if script_args.folds > 1:
        from cross_validation import train_folds

        return train_folds(script_args, training_args, backend)
    train, val = load_splits(script_args, training_args.seed)
    return train_locked(script_args, training_args, backend, train, val)


def train_utilisation(trainer, train_rows: dict) -> dict:
    """Model-FLOP utilisation of the steady steps (mfu.py): real tokens only, from the rows' mean length."""
    from mfu import utilisation

    steady = trainer.phase_times().get("steady_train_samples_per_second")
    tokens = train_rows.get("mean_tokens")
    return utilisation(steady * tokens if steady and tokens else None, trainer.model.config, training=True,
                       sequence=round(tokens or 0))


def check_answer_slot(model_name_or_path: str, options: PromptOptions, trust_remote_code: bool = False) -> str:
    """Where the answer letter goes in the model's chat template, from the tokenizer alone, before any weights
    are loaded; a template that cannot carry the answer stops the run here (chat_template.py)."""
    from modeling import check_model_source, load_tokenizer

    check_model_source(model_name_or_path)  # a missing model: its own one-line error, not the hub's
    tokenizer = load_tokenizer(model_name_or_path, trust_remote_code, options.chat_template)
    line = find_answer_slot(tokenizer, options.prompt_style).describe(tokenizer, options.prompt_style)
    logger.info(line)
    return line


def train_locked(script_args: ScriptArguments, training_args, backend: str, train, val) -> dict:
    """One training run in its output folder, holding the folder's lock throughout; the data is checked by now,
    the template's answer slot next, both before any weights load."""
    from run_folder import lock_run_folder

    check_answer_slot(script_args.model_name_or_path, script_args, training_args.trust_remote_code)
    with lock_run_folder(training_args.output_dir, training_args.process_index, max(training_args.world_size, 1)):
        return train_in_folder(script_args, training_args, backend, train, val)


def write_validation_predictions(trainer, tokenizer, val, script_args: ScriptArguments, out: Path) -> str | None:
    """The final model's four letter probabilities for every validation question (infer.py's predictions.csv
    format): the input of ensemble weights and, with --folds, of the out-of-fold predictions."""
    from prediction_store import assemble_predictions, score_record
    from run_folder import write_csv_atomic
    from scoring import score_frame

    if val is None or not len(val):
        return None
    probs = score_frame(trainer.model, tokenizer, val, script_args.prompt_style,
                        batch_size=trainer.args.per_device_eval_batch_size,
                        max_prompt_tokens=script_args.max_prompt_tokens)
    records = {id_: score_record(id_, p, "validation") for id_, p in zip(val["ID"], probs)}
    return str(write_csv_atomic(assemble_predictions(val, records), out / "validation_predictions.csv"))


def train_in_folder(script_args: ScriptArguments, training_args, backend: str, train, val) -> dict:
    started = time.time()
    identity, resume_from = prepare_output_dir(script_args, training_args)
    model, tokenizer = load_model(script_args, training_args, backend)
    rows: dict = {}
    train_ds, val_ds = build_datasets(tokenizer, train, val, script_args, rows)
    trainer = build_trainer(model, tokenizer, train_ds, val_ds, val, script_args, training_args, identity)
    check_nothing_dropped(trainer, train_ds, val_ds)
    trainer.train(resume_from_checkpoint=resume_from)
    if not training_args.should_save:  # other data-parallel ranks: rank 0 (or each node's first) writes
        return {"rank": training_args.process_index, "steps": trainer.state.global_step}
    paths = export_results(trainer, tokenizer, script_args, training_args)
    if trainer.is_world_process_zero():
        paths["validation_predictions"] = write_validation_predictions(trainer, tokenizer, val, script_args,
                                                                       Path(training_args.output_dir))
    summary = write_summary(trainer, script_args, training_args, backend, started, paths, rows, identity)
    if script_args.export == "merged" and trainer.is_world_process_zero():
        summary = export_merged_weights(script_args, training_args, summary)
    logger.info("best validation accuracy %s; adapter in %s", summary["best_eval_accuracy"], paths["adapter"])
    return summary


def cli_main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = select_backend(peek_backend(argv))
    script_args, training_args = parse_with(make_parser(), argv, ConfigError)
    main(script_args, training_args, backend)
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: every expected failure becomes one line on stderr and a non-zero exit status."""
    return run_cli(cli_main, argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
