"""One training run in its output folder: lock it, load the model, train, export, summarise.

The k-fold driver (folds.py) and the command (sft.py) call ``train_locked``; nothing here knows about folds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from mcqtune.errors import ConfigError
from mcqtune.model.prompts import find_answer_slot
from mcqtune.model.loading import embedding_on_host
from mcqtune.train.data import build_datasets, check_nothing_dropped
from mcqtune.train.options import ScriptArguments
from mcqtune.training.run import check_answer_slot, embedding_offload_wanted, prepare_output_dir, training_dtype

logger = logging.getLogger("train_sft")


def load_model(script_args: ScriptArguments, training_args, backend: str):
    import torch

    from mcqtune.model.loading import add_lora, load_base_model, load_tokenizer

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

    from mcqtune.training.checkpoints import SealCheckpoints
    from mcqtune.train.trainer import MCQTrainer
    from mcqtune.training.trainer import PhaseTimer

    callbacks = [PhaseTimer()] + ([SealCheckpoints(fingerprint)] if fingerprint is not None else [])
    if str(training_args.eval_strategy) in ("no", "IntervalStrategy.NO"):
        val_ds = val_frame = None
    elif len(val_ds) == 0:
        raise ConfigError("the validation split is empty: raise val_fraction, pass val_file, or train without "
                          "validation (--eval_strategy no --load_best_model_at_end false)")
    if script_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=script_args.early_stopping_patience))
    return MCQTrainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=val_ds,
                      processing_class=tokenizer, callbacks=callbacks, val_frame=val_frame,
                      prompt_style=script_args.prompt_style, max_prompt_tokens=script_args.max_prompt_tokens,
                      loss=script_args.loss, answer_weight=script_args.answer_weight,
                      distill=(script_args.distill_weight, script_args.distill_temperature)
                      if script_args.distill_from else None)


def training_run_identity(script_args: ScriptArguments, training_args) -> dict:
    """What must be equal to continue a checkpoint or reuse a finished run (run_identity.training_identity)."""
    from mcqtune.runs.identity import model_identity, training_identity

    return training_identity(script_args, training_args, model=model_identity(script_args.model_name_or_path),
                             world_size=max(training_args.world_size, 1))


def export_results(trainer, tokenizer, script_args: ScriptArguments, training_args) -> dict[str, str]:
    from mcqtune.model.loading import save_adapter

    from mcqtune.runs.identity import csv_identity
    from mcqtune.runs.provenance import write_adapter_record

    adapter = save_adapter(trainer.model, tokenizer, Path(training_args.output_dir) / "adapter")
    write_adapter_record(adapter, script_args, csv_identity(script_args.train_file, script_args.encoding))
    return {"adapter": str(adapter)}


def export_merged_weights(script_args: ScriptArguments, training_args, summary: dict) -> dict:
    """``--export merged``: export.py's merge (after the summary exists, so the model card can cite it)."""
    from mcqtune.model.merged import export_merged
    from mcqtune.files import write_json_atomic

    out = Path(training_args.output_dir)
    summary["outputs"]["merged"] = str(export_merged(out / "adapter", out / "merged", script_args.model_name_or_path,
                                                     dtype=script_args.merged_dtype,
                                                     trust_remote_code=training_args.trust_remote_code))
    write_json_atomic(summary, out / "training_summary.json")
    return summary


def write_summary(trainer, script_args, training_args, backend, started, paths, rows: dict, identity: dict) -> dict:
    from mcqtune.reporting.report import plot_training_curves
    from mcqtune.files import write_json_atomic

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


def train_utilisation(trainer, train_rows: dict) -> dict:
    """Model-FLOP utilisation of the steady steps (mfu.py): real tokens only, from the rows' mean length."""
    from mcqtune.reporting.mfu import utilisation

    steady = trainer.phase_times().get("steady_train_samples_per_second")
    tokens = train_rows.get("mean_tokens")
    return utilisation(steady * tokens if steady and tokens else None, trainer.model.config, training=True,
                       sequence=round(tokens or 0))


def train_locked(script_args: ScriptArguments, training_args, backend: str, train, val) -> dict:
    """One training run in its output folder, holding the folder's lock throughout; the data is checked by now,
    the template's answer slot next, both before any weights load."""
    from mcqtune.runs.folder import lock_run_folder

    check_answer_slot(script_args.model_name_or_path, script_args, training_args.trust_remote_code)
    with lock_run_folder(training_args.output_dir, training_args.process_index, max(training_args.world_size, 1)):
        return train_in_folder(script_args, training_args, backend, train, val)


def write_validation_predictions(trainer, tokenizer, val, script_args: ScriptArguments, out: Path) -> str | None:
    """The final model's four letter probabilities for every validation question (infer.py's predictions.csv
    format): the input of ensemble weights and, with --folds, of the out-of-fold predictions."""
    from mcqtune.runs.predictions import assemble_predictions, score_record
    from mcqtune.files import write_csv_atomic
    from mcqtune.core.scoring import score_frame

    if val is None or not len(val) or script_args.reasoning:  # reasoning replies answer after their reasoning
        return None
    probs = score_frame(trainer.model, tokenizer, val, script_args.prompt_style,
                        batch_size=trainer.args.per_device_eval_batch_size,
                        max_prompt_tokens=script_args.max_prompt_tokens)
    records = {id_: score_record(id_, p, "validation") for id_, p in zip(val["ID"], probs)}
    return str(write_csv_atomic(assemble_predictions(val, records), out / "validation_predictions.csv"))


def train_in_folder(script_args: ScriptArguments, training_args, backend: str, train, val) -> dict:
    started = time.time()
    identity = training_run_identity(script_args, training_args)
    identity, resume_from = prepare_output_dir(script_args, training_args, identity)
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
