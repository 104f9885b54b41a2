"""Reinforce a chat model on single-choice questions with GRPO and a correctness reward; keep the checkpoint with
the best validation accuracy.

    mcq-tune grpo --config qwen2.5-14b-grpo-4090.yaml --train_file train.csv --adapter outputs/qwen2.5-14b-lora/adapter
    python train_grpo.py --config demo-grpo-cpu.yaml --adapter outputs/demo/adapter

Starts from the base model (fresh LoRA weights) or from an SFT adapter of train_sft.py; the prompt, the chat
template and the answer slot are train_sft.py's and infer.py's. The output folder ends up like train_sft.py's:
``adapter/`` (answer it with infer.py; with ``--reasoning true`` in ``--mode reason``), sealed ``checkpoint-*``
folders for ``--resume``, ``training_summary.json`` (rewards, reply lengths, rollout speed, memory per phase)
and ``training_curves.png``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from mcqtune.errors import ConfigError
from mcqtune.model.loading import select_backend
from mcqtune.grpo.options import GRPOArguments, check_grpo_config

logger = logging.getLogger("train_grpo")


def load_questions(args: GRPOArguments, seed: int):
    """Train and validation frames: val_file, else a stratified split of train_file (the original option order:
    validation is never shuffled)."""
    from mcqtune.data.questions import describe, load_mcq_csv
    from mcqtune.training.data import check_held_out, split_train_val

    frame = load_mcq_csv(args.train_file, require_answer=True, encoding=args.encoding, number_rows=True)
    if args.val_file:
        train, val = frame, load_mcq_csv(args.val_file, require_answer=True, encoding=args.encoding, number_rows=True)
        check_held_out(train, val, args.val_file)
    else:
        train, val = split_train_val(frame, args.val_fraction, seed)
    if args.max_train_samples:
        train = train.head(args.max_train_samples)
    logger.info("train: %s", describe(train))
    logger.info("validation: %s", describe(val))
    return train, val


UNSUPPORTED_LORA_KEYS = ("use_rslora", "use_dora", "rank_pattern", "alpha_pattern", "modules_to_save",
                         "layers_to_transform")


def adopt_adapter(args: GRPOArguments) -> None:
    """Starting from an SFT adapter of train_sft.py: its record must say it was trained on this base with these
    prompt settings, and its LoRA shape (rank, alpha, targets, dropout) is the one rebuilt here; an adapter
    without a record, or with LoRA features this rebuild does not carry, is refused."""
    from mcqtune.model.loading import is_adapter_dir
    from mcqtune.runs.provenance import ProvenanceError, adapter_prompt, check_base_of_adapter, prompt_differences

    if not args.adapter:
        return
    if not is_adapter_dir(args.adapter):
        raise ConfigError(f"--adapter {args.adapter}: no adapter_config.json there (give train_sft.py's adapter/ "
                          "folder)")
    trained = adapter_prompt(args.adapter)
    if trained is None:
        raise ProvenanceError(f"grpo: {args.adapter} has no mcq_provenance.json, so its base model and prompt "
                              "cannot be checked; start from an adapter written by train_sft.py")
    check_base_of_adapter(args.adapter, args.model_name_or_path, consumer="grpo")
    differ = prompt_differences(args, trained)
    if differ:
        raise ProvenanceError(f"grpo: {args.adapter} was trained with another {', '.join('--' + n for n in differ)}"
                              " than this command gives; use the training run's values")
    config = json.loads(Path(args.adapter, "adapter_config.json").read_text(encoding="utf-8"))
    targets = config.get("target_modules")
    unsupported = [k for k in UNSUPPORTED_LORA_KEYS if config.get(k)]
    if not isinstance(targets, list) or unsupported:
        layout = ", ".join(unsupported) if isinstance(targets, list) else f"target_modules {targets!r}"
        raise ConfigError(f"--adapter {args.adapter}: its LoRA layout ({layout}) is not one train_sft.py writes; "
                          "start from an adapter of train_sft.py")
    args.lora_r, args.lora_alpha = int(config["r"]), int(config["lora_alpha"])
    args.lora_dropout = float(config.get("lora_dropout") or 0.0)
    args.lora_target_modules = sorted(targets)
    logger.info("starting from %s: LoRA r %d, alpha %d, targets %s", args.adapter, args.lora_r, args.lora_alpha,
                ", ".join(args.lora_target_modules))


def load_policy(args: GRPOArguments, training_args, backend: str):
    """The base model with trainable LoRA weights: fresh, or the starting adapter's."""
    from mcqtune.model.loading import add_lora, load_base_model, load_tokenizer
    from mcqtune.training.run import embedding_offload_wanted, training_dtype

    model, tokenizer = load_base_model(
        args.model_name_or_path, backend, load_in_4bit=args.load_in_4bit,
        max_seq_length=args.max_prompt_tokens + training_args.max_completion_length,
        trust_remote_code=training_args.trust_remote_code, training=True, seed=training_args.seed,
        dtype=training_dtype(training_args), offload_embedding=embedding_offload_wanted(args, training_args, backend))
    if args.chat_template:
        tokenizer = load_tokenizer(args.model_name_or_path, training_args.trust_remote_code, args.chat_template)
    model = add_lora(model, backend, args, training_args.gradient_checkpointing, training_args.seed)
    if args.adapter:
        load_adapter_weights(model, args.adapter)
    return model, tokenizer


def load_adapter_weights(model, adapter: str) -> None:
    """The starting adapter's weights into the LoRA layers just made with its shape; every one must land."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(adapter, "adapter_model.safetensors")
    if not path.is_file():
        raise ConfigError(f"--adapter {adapter}: no adapter_model.safetensors (a checkpoint cut short, or a pickle "
                          "adapter: save it again as safetensors)")
    weights = load_file(str(path))
    result = set_peft_model_state_dict(model, weights)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ConfigError(f"--adapter {adapter}: {len(unexpected)} of its weights have no place in this model (first:"
                          f" {unexpected[0]}); was it trained on another architecture?")
    missing = [k for k in getattr(result, "missing_keys", []) or [] if "lora_" in k]
    if missing:
        raise ConfigError(f"--adapter {adapter}: {len(missing)} LoRA weights of this model are not in it (first: "
                          f"{missing[0]}); the adapter is incomplete or of another shape")


def set_stop_tokens(model, tokenizer, style) -> list[int]:
    """Rollouts stop where infer.py's replies stop: the template's end of turn, EOS, pad."""
    from mcqtune.model.prompts import stop_token_ids

    stops = stop_token_ids(tokenizer, model, style)
    model.generation_config.eos_token_id = stops
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # TRL asks for max_new_tokens; a config's own max_length (the 1M model's 1,010,000) beside it would print
    # transformers' "Both `max_new_tokens` and `max_length`" notice at every rollout
    model.generation_config.max_length = None
    return stops


def build_datasets(tokenizer, train, val, args: GRPOArguments, training_args, world: int, counts: dict):
    """The shuffled training prompts (enough rounds for the run's length) and the validation prompts (TRL wants an
    evaluation dataset; validation itself scores ``val``)."""
    from datasets import Dataset

    from mcqtune.grpo.data import prompt_records, rounds_needed, shuffled_rounds

    per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world
    rounds = rounds_needed(len(train), training_args.num_train_epochs, training_args.max_steps,
                           per_step // training_args.num_generations)
    if training_args.max_steps <= 0:  # the rounds are the epochs: one pass over them
        training_args.num_train_epochs = training_args.num_train_epochs / rounds
    shuffled = shuffled_rounds(train, rounds, training_args.seed)
    records, prompt_ids, shortened = prompt_records(tokenizer, shuffled, args.prompt_style, args.max_prompt_tokens)
    val_records, val_ids, _ = prompt_records(tokenizer, val, args.prompt_style, args.max_prompt_tokens)
    counts.update({"train_rows": len(train), "val_rows": len(val), "rounds": rounds, "prompts": len(records),
                   "questions_shortened": shortened,
                   "label_letters": shuffled["answer"].value_counts().sort_index().to_dict()})
    return Dataset.from_list(records), Dataset.from_list(val_records), {**prompt_ids, **val_ids}


def grpo_run_identity(args: GRPOArguments, training_args) -> dict:
    from mcqtune.runs.identity import grpo_identity, model_identity

    return grpo_identity(args, training_args, model=model_identity(args.model_name_or_path),
                         world_size=max(training_args.world_size, 1))


def build_trainer(model, tokenizer, datasets, val, args: GRPOArguments, training_args, stops, identity: dict):
    from mcqtune.model.prompts import opens_thinking
    from mcqtune.model.prompts import render_prompt
    from mcqtune.grpo.rewards import ReplyReader, reward_functions
    from mcqtune.grpo.trainer import MCQGRPOTrainer
    from mcqtune.training.checkpoints import SealCheckpoints
    from mcqtune.training.trainer import PhaseTimer

    train_ds, val_ds, prompt_ids = datasets
    style = args.prompt_style
    opened = opens_thinking(render_prompt(tokenizer, val.iloc[0] if len(val) else train_ds[0], style))
    reader = ReplyReader(tokenizer, frozenset(stops), reasoning=style.reasoning, opened=opened)
    with_format = args.format_reward_weight > 0
    training_args.reward_weights = [1.0, args.format_reward_weight] if with_format else None
    callbacks = [PhaseTimer(), SealCheckpoints(identity)]
    no_eval = str(training_args.eval_strategy) in ("no", "IntervalStrategy.NO")
    return MCQGRPOTrainer(model=model, reward_funcs=reward_functions(reader, with_format), args=training_args,
                          train_dataset=train_ds, eval_dataset=None if no_eval else val_ds,
                          processing_class=tokenizer, callbacks=callbacks, prompt_ids=prompt_ids,
                          val_frame=None if no_eval else val, prompt_style=style,
                          max_prompt_tokens=args.max_prompt_tokens, stop_ids=stops, opened=opened,
                          rollout_engine=args.rollout_engine)


def summarise(trainer, args: GRPOArguments, training_args, backend: str, started: float, paths: dict,
              counts: dict, identity: dict) -> dict:
    from mcqtune.reporting.report import plot_training_curves
    from mcqtune.files import write_json_atomic

    history = trainer.state.log_history
    accuracies = [e["eval_accuracy"] for e in history if "eval_accuracy" in e]
    steps = [e for e in history if "rewards/correct/mean" in e]
    timer = trainer.phase_times()
    steady = timer.get("steady_steps") or 0
    summary = {
        "job": "grpo", "backend": backend, "model": args.model_name_or_path, "start_adapter": args.adapter,
        **counts, "steps": trainer.state.global_step, "seconds": round(time.time() - started, 1),
        "reward_correct_first": steps[0]["rewards/correct/mean"] if steps else None,
        "reward_correct_last": steps[-1]["rewards/correct/mean"] if steps else None,
        "rewards": [{k: e[k] for k in e if k.startswith(("rewards/", "reward", "replies/", "completions/mean"))}
                    | {"step": e.get("step")} for e in steps],
        "steady_seconds_per_step": round(timer["steady_seconds"] / steady, 3) if steady else None,
        **trainer.rollout_summary(), **timer,
        "best_checkpoint": trainer.state.best_model_checkpoint, "best_eval_accuracy": max(accuracies, default=None),
        "final_eval_accuracy": accuracies[-1] if accuracies else None,
        "peak_gpu_memory_gb": trainer.peak_gpu_gb(), "outputs": paths,
        "script_args": asdict(args), "run_identity": identity, "log_history": history,
    }
    out = Path(training_args.output_dir)
    write_json_atomic(summary, out / "training_summary.json")
    plot_training_curves(history, out / "training_curves.png")
    return summary


def export_adapter(trainer, tokenizer, args: GRPOArguments, training_args) -> dict:
    from mcqtune.model.loading import save_adapter
    from mcqtune.files import write_json_atomic
    from mcqtune.runs.identity import adapter_identity, csv_identity
    from mcqtune.runs.provenance import ADAPTER_RECORD, read_json, write_adapter_record

    adapter = save_adapter(trainer.model, tokenizer, Path(training_args.output_dir) / "adapter")
    record_path = write_adapter_record(adapter, args, csv_identity(args.train_file, args.encoding))
    record = read_json(record_path) or {}
    record["reinforced"] = {"method": "grpo", "start_adapter": adapter_identity(args.adapter) if args.adapter
                            else None}
    write_json_atomic(record, Path(adapter) / ADAPTER_RECORD)
    return {"adapter": str(adapter)}


def reinforce_in_folder(args: GRPOArguments, training_args, backend: str, train, val) -> dict:
    from mcqtune.training.run import prepare_output_dir

    started = time.time()
    identity, resume_from = prepare_output_dir(args, training_args, grpo_run_identity(args, training_args))
    model, tokenizer = load_policy(args, training_args, backend)
    stops = set_stop_tokens(model, tokenizer, args.prompt_style)
    counts: dict = {}
    datasets = build_datasets(tokenizer, train, val, args, training_args, max(training_args.world_size, 1), counts)
    logger.info("%d shuffled round(s) of %d questions; label letters %s", counts["rounds"], counts["train_rows"],
                counts["label_letters"])
    trainer = build_trainer(model, tokenizer, datasets, val, args, training_args, stops, identity)
    trainer.train(resume_from_checkpoint=resume_from)
    if not training_args.should_save:
        return {"rank": training_args.process_index, "steps": trainer.state.global_step}
    paths = export_adapter(trainer, tokenizer, args, training_args)
    summary = summarise(trainer, args, training_args, backend, started, paths, counts, identity)
    logger.info("correctness reward %s -> %s; best validation accuracy %s; adapter in %s",
                summary["reward_correct_first"], summary["reward_correct_last"], summary["best_eval_accuracy"],
                paths["adapter"])
    return summary


def check_rollout_engine(engine: str, backend: str, processes: int = 1, base: str | None = None) -> None:
    """The nf4 and continuous rollouts run transformers' own layers (Unsloth's generation replaces them); nf4 needs a
    GPU; continuous runs in one process (as infer.py's) and refuses a local base that varlen attention cannot
    serve. Checked before any data or model loads."""
    if engine == "generate":
        return
    if backend != "hf":
        raise ConfigError(f"rollout_engine {engine} runs transformers' own layers, which the {backend} backend's "
                          "generation replaces: add --backend hf")
    if engine == "continuous":
        from mcqtune.core.engines import GRPO_REMEDIES
        from mcqtune.core.varlen import check_base

        if processes > 1:
            raise ConfigError(f"rollout_engine continuous runs in one process, not {processes}: launch one "
                              "process, or use --rollout_engine generate")
        if base:
            check_base(base, GRPO_REMEDIES.attention)
        return
    from mcqtune.core.nf4 import nf4_problem

    problem = nf4_problem("rollout_engine", "generate")
    if problem:
        raise ConfigError(problem)


def run(args: GRPOArguments, training_args, backend: str | None = None) -> dict:
    """Validate, lock the output folder, load, reinforce, export, summarise; training_summary.json's content."""
    from mcqtune.runs.folder import lock_run_folder
    from mcqtune.training.data import check_validation_rows
    from mcqtune.training.run import check_answer_slot

    check_grpo_config(args, training_args)
    backend = select_backend(backend or args.backend)
    check_rollout_engine(args.rollout_engine, backend, max(training_args.world_size, 1), args.model_name_or_path)
    adopt_adapter(args)
    train, val = load_questions(args, training_args.seed)
    check_validation_rows(val, training_args, args)
    check_answer_slot(args.model_name_or_path, args, training_args.trust_remote_code)
    with lock_run_folder(training_args.output_dir, training_args.process_index, max(training_args.world_size, 1)):
        return reinforce_in_folder(args, training_args, backend, train, val)
