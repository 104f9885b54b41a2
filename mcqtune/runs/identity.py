"""Is this the same run? The one place that decides whether answers or a training checkpoint may be reused.

The identity of a run is built from the *whole* parsed options: every field of the argument dataclasses is in
it, unless it is named in one of the exclusion lists below with the reason beside it. A field whose value is
a path to something that decides the result is replaced by that thing's content (``resolved``): the input
CSV by its bytes and the text they decode to, a model or adapter by its files, a chat template by its text.
What the run found out at load time (the precision the weights were loaded in, the chat template, the batch
size used) is added by the caller. ``tests/runs/test_identity.py`` fails when an option is added without a
decision here.

Two runs are the same run only when their identities are equal; ``changed_keys`` names what differs, and the
callers (infer.py's answer checkpoint, train_sft.py's ``--resume``) say it in their message.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

IDENTITY_FORMAT = 3  # bump when the meaning of a key changes: older checkpoints are then never reused

# --- infer.py: options that do not decide the answers --------------------------------------------------------
INFER_EXCLUDED = {
    "output_file": "where the submission is written, not what it says",
    "output_dir": "where the run folder is",
    "resume": "the switch that asks for reuse",
    "gpu_memory_gb": "only plans the batch size, and the batch size used is in the identity",
    "allow_bare_predictions": "whether an unprovable --rescore input is accepted, not what is computed",
    "partial_folds": "which folds answer is in the identity through the adapters it resolves to",
    "prompt_mismatch_ok": "whether a prompt unlike training's is accepted; the prompt used is in the identity",
}
# ... and options replaced by what they resolve to (the caller passes the resolved values).
INFER_RESOLVED = ("test_file", "model_path", "base_model_id", "ensemble", "backend", "batch_size", "chat_template",
                  "rescore", "seed")

# --- train_sft.py: script options that do not change the trained weights ------------------------------------
TRAIN_SCRIPT_EXCLUDED = {
    "resume": "the switch that asks for reuse",
    "export": "what is written after training, not what is trained",
    "merged_dtype": "the dtype of the merged export, written after training",
    "offload_embedding": "where the embedding table is kept; the looked-up rows are the same",
    "early_stopping_patience": "when to stop, not what a step computes",
    "keep_effective_batch": "its effect, micro-batch x accumulation, is in the identity",
}
TRAIN_SCRIPT_RESOLVED = ("train_file", "val_file", "extra_train_files", "model_name_or_path", "chat_template",
                         "distill_from", "pseudo_label_from", "pseudo_label_file", "val_test_like")
# --- train_grpo.py: script options that do not change the trained weights ------------------------------------
GRPO_SCRIPT_EXCLUDED = {
    "resume": "the switch that asks for reuse",
    "offload_embedding": "where the embedding table is kept; the looked-up rows are the same",
}
GRPO_SCRIPT_RESOLVED = ("train_file", "val_file", "model_name_or_path", "adapter", "chat_template")
# --- train_sft.py: Trainer / SFTConfig options that do not change the trained weights --------------------------
# By prefix, since the Trainer has many of each kind; every other field (there are many) is in.
TRAINER_EXCLUDED_PREFIXES = {
    "logging_": "how often and where the log is written",
    "log_": "log verbosity and placement",
    "save_": "when and how checkpoints are written",
    "eval_": "when validation runs (it does not touch the weights)",
    "per_device_eval_batch_size": "validation batch size",
    "hub_": "uploading, off unless asked",
    "push_to_hub": "uploading, off unless asked",
    "report_to": "where metrics are sent",
    "run_name": "a label",
    "output_dir": "where the run folder is",
    "overwrite_output_dir": "folder handling, not training",
    "resume_from_checkpoint": "the switch that asks for reuse",
    "disable_tqdm": "progress bars",
    "dataloader_num_workers": "how batches are loaded, not which",
    "dataloader_pin_memory": "how batches are loaded, not which",
    "dataloader_persistent_workers": "how batches are loaded, not which",
    "dataloader_prefetch_factor": "how batches are loaded, not which",
    "ddp_timeout": "how long processes wait for each other",
    "load_best_model_at_end": "which checkpoint is exported at the end",
    "metric_for_best_model": "which checkpoint is exported at the end",
    "greater_is_better": "which checkpoint is exported at the end",
    "prediction_loss_only": "what validation returns",
    "include_": "what validation and logs include",
    "local_rank": "this process's place among several (the effective batch is in)",
    "torch_empty_cache_steps": "memory housekeeping",
    "skip_memory_metrics": "logging",
    "trust_remote_code": "the identity of the model's files is in",
}
TRAIN_DERIVED = ("effective_batch",)  # added by the caller: micro-batch x accumulation x processes


class IdentityError(KeyError):
    """A caller resolved an option that is not a field, or forgot one it must resolve."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str | None) -> str:
    return hashlib.sha256((text or "").encode("utf-8")).hexdigest()


def plain(value: Any) -> Any:
    """A JSON value that compares equal exactly when the option's value is the same."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if dataclasses.is_dataclass(value):
        return plain(dataclasses.asdict(value))
    return str(value)


def options_identity(options, excluded: Mapping[str, str], resolved: Mapping[str, Any],
                     excluded_prefixes: Mapping[str, str] = ()) -> dict:
    """Every field of the dataclass ``options`` (excluded ones left out), resolved ones by their given values."""
    names = [f.name for f in dataclasses.fields(options)]
    unknown = set(resolved) - set(names)
    if unknown:
        raise IdentityError(f"resolved values for options that do not exist: {sorted(unknown)}")
    identity = {}
    for name in names:
        if name in excluded or name.startswith("_") or any(name.startswith(p) for p in excluded_prefixes):
            continue
        identity[name] = resolved[name] if name in resolved else plain(getattr(options, name))
    return identity


def included_fields(options_class, excluded: Mapping[str, str], excluded_prefixes: Mapping[str, str] = ()) -> list[str]:
    """The option names that go into the identity (what the test pins)."""
    return [f.name for f in dataclasses.fields(options_class) if f.name not in excluded and not f.name.startswith("_")
            and not any(f.name.startswith(p) for p in excluded_prefixes)]


def csv_identity(path: str | Path | None, encoding: str | None) -> dict | None:
    """An input CSV by its bytes and by the text they decode to: the same bytes read with another encoding
    (mojibake that happens to decode) are another input."""
    if not path:
        return None
    from mcqtune.data.encoding import decode_csv_bytes

    data = Path(path).read_bytes()
    return {"bytes_sha256": hashlib.sha256(data).hexdigest(),
            "text_sha256": sha256_text(decode_csv_bytes(path, data, encoding))}


def rescore_identity(source: str | None) -> str | None:
    """A cascade's first run by the bytes of its predictions (they decide which rows are answered again)."""
    if not source:
        return None
    path = Path(source) / "predictions.csv" if Path(source).is_dir() else Path(source)
    return sha256_file(path)


def template_identity(chat_template: str | None) -> str | None:
    """A chat-template option by its text, whether it was given inline or as a file."""
    if not chat_template:
        return None
    path = Path(chat_template)
    return sha256_text(path.read_text(encoding="utf-8") if path.is_file() else chat_template)


def changed_keys(old: Mapping, new: Mapping) -> list[str]:
    """The top-level keys whose values differ (a key present on one side only counts as changed)."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def same_json(value: Any) -> Any:
    """``value`` as it reads back from a JSON file (tuples become lists), so a stored identity compares equal."""
    return json.loads(json.dumps(value, ensure_ascii=False))


# ------------------------------------------------------------------------------------------ the two runs


def inference_identity(args, *, base: dict, adapter: dict | None, ensemble: list[dict], backend: str,
                       batch_size: int, precision: str, tokenizer_template: str | None,
                       parser_sha256: str | None, letter_prior: list[float] | None = None) -> dict:
    """What decides infer.py's answers. ``base``, ``adapter`` (the one in model_path, or None) and ``ensemble``
    are identities by content (``model_identity``, ``adapter_identity``); ``precision`` is what the weights were
    loaded in; ``tokenizer_template`` the chat template the tokenizer renders; ``parser_sha256`` the answer
    parser's source (core/parser.py and grammar.py) in generate mode (its rules decide which replies
    count); ``letter_prior`` the prior that --debias_letters estimated (an estimate that comes out otherwise is
    another run)."""
    resolved = {"test_file": csv_identity(args.test_file, args.encoding),
                "model_path": {"base": base, "adapter": adapter},
                "base_model_id": None,  # the base it names is in model_path's identity
                "ensemble": ensemble, "backend": backend, "batch_size": batch_size,
                "chat_template": template_identity(args.chat_template), "rescore": rescore_identity(args.rescore),
                "seed": args.seed if args.temperature > 0 else None}  # greedy replies use no seed
    identity = options_identity(args, INFER_EXCLUDED, resolved)
    identity.update(format=IDENTITY_FORMAT, precision=precision, chat_template_rendered=sha256_text(tokenizer_template),
                    answer_parser_sha256=parser_sha256, letter_prior=letter_prior)
    return same_json(identity)


def training_identity(script_args, training_args, *, model: dict, world_size: int = 1) -> dict:
    """What must be equal for a training checkpoint to be continued: the data by content, the model by its
    files, every script and Trainer option that changes the weights, and the effective batch."""
    resolved = {"train_file": csv_identity(script_args.train_file, script_args.encoding),
                "val_file": csv_identity(script_args.val_file, script_args.encoding),
                "extra_train_files": [csv_identity(p, script_args.encoding) for p in script_args.extra_train_files],
                "model_name_or_path": model,
                "chat_template": template_identity(script_args.chat_template),
                "distill_from": [teacher_identity(p) for p in script_args.distill_from],
                "pseudo_label_from": [teacher_identity(p) for p in script_args.pseudo_label_from],
                "pseudo_label_file": csv_identity(script_args.pseudo_label_file, script_args.encoding),
                "val_test_like": csv_identity(script_args.val_test_like, None)}
    return run_options_identity(options_identity(script_args, TRAIN_SCRIPT_EXCLUDED, resolved), training_args,
                                world_size)


def run_options_identity(script: dict, training_args, world_size: int, **extra) -> dict:
    """A training job's identity: its script options (resolved), every Trainer option that changes the weights,
    and the effective batch."""
    trainer = options_identity(training_args, {}, {}, TRAINER_EXCLUDED_PREFIXES)
    overlap = set(script) & set(trainer)
    if overlap:
        raise IdentityError(f"options in both argument classes: {sorted(overlap)}")
    effective = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world_size
    return same_json({"format": IDENTITY_FORMAT, **extra, **script, **trainer, "effective_batch": effective})


def teacher_identity(source: str) -> dict:
    """A --distill_from teacher (or a --pseudo_label_from run) by the bytes of its predictions (a run folder by the
    predictions files in it)."""
    path = Path(source)
    files = [path] if path.is_file() else [p for p in (path / "predictions.csv", path / "oof_predictions.csv")
                                           if p.is_file()]
    return {"path": str(path.resolve()), "sha256": {p.name: sha256_file(p) for p in files}}


def grpo_identity(args, training_args, *, model: dict, world_size: int = 1) -> dict:
    """What must be equal for a GRPO checkpoint to be continued: as ``training_identity``, with the starting
    adapter by content and GRPOConfig's options (rollouts, rewards, KL) in."""
    resolved = {"train_file": csv_identity(args.train_file, args.encoding),
                "val_file": csv_identity(args.val_file, args.encoding),
                "model_name_or_path": model,
                "adapter": adapter_identity(args.adapter) if args.adapter else None,
                "chat_template": template_identity(args.chat_template)}
    return run_options_identity(options_identity(args, GRPO_SCRIPT_EXCLUDED, resolved), training_args, world_size,
                                job="grpo")


# ------------------------------------------------------------------------------------------ models by content

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# Weights up to this size are identified by content; larger ones (a 14B base) by name, size and modification
# time, since hashing them would add minutes to every start.
CONTENT_HASH_LIMIT = 256 * 2**20


def model_identity(name_or_path: str | Path) -> dict:
    """A model's weights: for a local directory its config and weight files (by content when small, else by
    name, size and modification time); for a hub id the id and the cached revision."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return {"hub_id": str(name_or_path), "revision": cached_revision(str(name_or_path))}
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    by_content = sum(p.stat().st_size for p in files) <= CONTENT_HASH_LIMIT
    identity = {"path": str(folder.resolve()),
                "config_sha256": sha256_file(folder / "config.json") if (folder / "config.json").is_file() else None}
    identity["weights"] = [{"name": p.name, "size": p.stat().st_size,
                            **({"sha256": sha256_file(p)} if by_content else {"mtime_ns": p.stat().st_mtime_ns})}
                           for p in files]
    return identity


def cached_revision(hub_id: str) -> str | None:
    """The snapshot of a hub model in the local cache (its folder name is the commit), if there is one."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(hub_id, "config.json")
    except Exception:  # noqa: BLE001  (no cache, odd id: the id alone identifies it)
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def adapter_identity(adapter_dir: str | Path) -> dict:
    """An adapter by content: the hashes of its weights and its config."""
    folder = Path(adapter_dir)
    return {"path": str(folder.resolve()),
            **{f"{p.name}_sha256": sha256_file(p) for p in sorted(folder.glob("adapter_model.*")) if p.is_file()},
            "adapter_config.json_sha256": sha256_file(folder / "adapter_config.json")}
