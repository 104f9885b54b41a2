"""Provenance: what one run hands another carries the identity it was made with, and every consumer that combines
runs checks it here, in one place, refusing in one line that names both sides.

    run folder / predictions.csv   report.json beside it: the test file's bytes (sha256), mode, models, and
                                   the predictions.csv bytes (sha256: an edited file is refused)
    k-fold folder                  fold_plan.json: the folds, their seed, the training file, each fold's identity
    adapter/                       mcq_provenance.json: the base model (and its config), the prompt settings it was
                                   trained with

A bare predictions.csv (no report.json beside it) cannot say what it answered; it is refused unless the user
says so (``--allow_bare_predictions true``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mcqtune.errors import DataError, UserError

logger = logging.getLogger(__name__)

PREDICTIONS_RECORD = "report.json"  # written by infer.py beside predictions.csv
PREDICTIONS_HASH = "predictions_sha256"  # report.json's record of the predictions.csv bytes beside it
OOF_PREDICTIONS, OOF_RECORD = "oof_predictions.csv", "cv_summary.json"  # written by the k-fold driver
FOLD_PLAN = "fold_plan.json"  # written by the k-fold driver at the k-fold folder's root
ADAPTER_RECORD = "mcq_provenance.json"  # written by training into adapter/
PROMPT_FIELDS = ("system_prompt", "user_template", "max_prompt_tokens", "enable_thinking", "chat_template",
                 "reasoning_instruction")
ALLOW_BARE_HINT = "--allow_bare_predictions true"


class ProvenanceError(UserError):
    """Two artifacts that are being combined were not made for each other."""


def read_json(path: Path) -> dict | None:
    """A JSON record, or None when it is missing or unreadable (a damaged record proves nothing)."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def predictions_record(predictions: str | Path) -> dict | None:
    """The provenance of a predictions.csv: its run's report.json, or for a k-fold run's oof_predictions.csv its
    cv_summary.json (None for a bare file). A predictions.csv changed since its run wrote it (its bytes no longer
    hash to what report.json records) is refused: the record would vouch for answers it never saw."""
    from mcqtune.runs.identity import sha256_file

    path = Path(predictions)
    record = read_json(path.with_name(OOF_RECORD if path.name == OOF_PREDICTIONS else PREDICTIONS_RECORD))
    recorded = (record or {}).get(PREDICTIONS_HASH)
    if isinstance(recorded, str) and path.is_file() and sha256_file(path) != recorded:
        raise ProvenanceError(f"{path} was changed after its run wrote it (its bytes no longer match the sha256 in "
                              f"{path.with_name(PREDICTIONS_RECORD)}); answer again with infer.py, or copy it out "
                              f"of its run folder, where a command that takes a bare file ({ALLOW_BARE_HINT}) "
                              "takes it as one")
    return record


def predictions_file(source: str | Path, consumer: str) -> Path:
    """A run folder -> its predictions.csv (or a k-fold folder's oof_predictions.csv); a file -> itself."""
    path = Path(source)
    if path.is_dir():
        for name in ("predictions.csv", OOF_PREDICTIONS):
            if (path / name).is_file():
                return path / name
        raise DataError(str(path), f"holds no predictions.csv or {OOF_PREDICTIONS} ({consumer}); give an infer.py "
                                   "run folder or a k-fold folder")
    if not path.is_file():
        raise DataError(str(path), f"no such file or folder ({consumer})")
    return path


def answered_sha(record: dict | None) -> str | None:
    return (record or {}).get("test_file_sha256")


def check_answered(predictions: str | Path, test_sha: str | None, *, consumer: str, test_name: str,
                   allow_bare: bool = False) -> dict | None:
    """``predictions`` must have answered the test file whose bytes hash to ``test_sha``. A file without a record
    is refused unless ``allow_bare``; a record of another test file is always refused."""
    record = predictions_record(predictions)
    found = answered_sha(record)
    if found is None:
        if allow_bare:
            return None
        raise ProvenanceError(f"{consumer}: {predictions} has no report.json beside it, so what it answered cannot "
                              f"be checked; give its infer.py run folder, or pass {ALLOW_BARE_HINT} if you are sure "
                              f"it answered {test_name}")
    if test_sha is not None and found != test_sha:
        raise ProvenanceError(f"{consumer}: {predictions} answered another test file ({record.get('test_file')}, "
                              f"sha256 {found[:12]}) than {test_name} (sha256 {test_sha[:12]}); the same IDs "
                              "need not be the same questions: use a run of this very file")
    return record


def check_same_answered(paths: list[Path], *, consumer: str, allow_bare: bool | None = False) -> str | None:
    """All ``paths`` (predictions.csv files) answered one test file, by their records; the test file's sha256.
    ``allow_bare`` None: the consumer has no option to accept a bare file, and its refusal names none."""
    shas = {}
    for path in paths:
        record = predictions_record(path)
        sha = answered_sha(record)
        if sha is None and not allow_bare:
            hint = "" if allow_bare is None else f", or pass {ALLOW_BARE_HINT}"
            raise ProvenanceError(f"{consumer}: {path} has no report.json beside it, so what it answered cannot be "
                                  f"checked; give its infer.py run folder{hint}")
        if sha is not None:
            shas.setdefault(sha, path)
    if len(shas) > 1:
        (a, first), (b, second) = list(shas.items())[:2]
        raise ProvenanceError(f"{consumer}: {first} and {second} answered different test files (sha256 {a[:12]} and "
                              f"{b[:12]}, by their report.json); combine runs of one test file only")
    return next(iter(shas), None)


def models_of(record: dict | None) -> list[str] | None:
    """The models a run answered with, by its record: its adapters, or the base model when it used none (an
    adapter is checked against its base where it loads, so a 4-bit copy of that base is the same model here);
    None when the record does not say."""
    if not record or not record.get("base_model"):
        return None
    return list(record.get("adapters") or []) or [record["base_model"]]


def same_source(a: str, b: str) -> bool:
    """Two recorded model paths name one model: the same text, or folders that are one folder here."""
    if a == b:
        return True
    try:
        return Path(a).exists() and Path(b).exists() and Path(a).samefile(b)
    except OSError:
        return False


def content_of(found: dict) -> dict:
    """A model identity (runs/identity.py) without where the model lies (its path, its files' modification times):
    what two copies of one model share, and a retrained model in the same folder does not."""
    return {key: [{k: v for k, v in w.items() if k != "mtime_ns"} for w in value] if key == "weights" else value
            for key, value in found.items() if key != "path"}


def models_by_content(identity: dict) -> list[dict]:
    """An answering run's models by content, from its run identity: its adapters (model_path's, then --ensemble's),
    or its base model when it used none."""
    adapters = [a for a in [identity["model_path"]["adapter"], *identity["ensemble"]] if a]
    return [content_of(a) for a in adapters] or [content_of(identity["model_path"]["base"])]


def check_same_models(run: str | Path, member: str | Path, *, consumer: str, allow_bare: bool = False) -> None:
    """The predictions ``run`` (a validation run) were made by the models of ``member`` (a test run), by their
    records: weights fitted on one model's validation answers mean nothing for another model's test answers. Runs
    that record their models by content (``models_by_content``) are paired by it, never by path: an adapter retrained
    in the same folder is another model; older records are paired by path."""
    mine_record, theirs_record = predictions_record(run), predictions_record(member)
    if mine_record and theirs_record and "models_by_content" in mine_record and "models_by_content" in theirs_record:
        if mine_record["models_by_content"] != theirs_record["models_by_content"]:
            raise ProvenanceError(f"{consumer}: {run} and its member {member} were answered by models whose weights "
                                  "differ (their report.json's models_by_content: an adapter retrained in place, "
                                  "or another fold plan or seed, counts as another model); give one validation run "
                                  "per member, made by the very same model, in the members' order")
        return
    mine, theirs = models_of(mine_record), models_of(theirs_record)
    if mine is None or theirs is None:
        if allow_bare:
            return
        raise ProvenanceError(f"{consumer}: {run if mine is None else member} does not record the models it "
                              f"answered with (no report.json beside it), so it cannot be paired with "
                              f"{member if mine is None else run}; give infer.py run folders, or pass "
                              f"{ALLOW_BARE_HINT}")
    if len(mine) != len(theirs) or not all(same_source(a, b) for a, b in zip(mine, theirs)):
        raise ProvenanceError(f"{consumer}: {run} was answered by {', '.join(mine)} but its member {member} by "
                              f"{', '.join(theirs)}; give one validation run per member, made by the same model, in "
                              "the members' order")


def base_fingerprint(name_or_path: str) -> dict:
    """A base model as adapters record it, comparable across copies: its config and its weight files by name and
    size (a hub id by id and cached revision)."""
    from mcqtune.runs.identity import model_identity

    found = model_identity(name_or_path)
    if "hub_id" in found:
        return found
    return {"config_sha256": found["config_sha256"],
            "weights": [{"name": w["name"], "size": w["size"]} for w in found["weights"]]}


def check_same_base(base: str, member_base: str, member: str, *, consumer: str) -> None:
    """An adapter combined with others must have been trained on the base model the run loads."""
    if base == member_base or base_fingerprint(base) == base_fingerprint(member_base):
        return
    raise ProvenanceError(f"{consumer}: the adapter {member} was trained on {member_base}, another model than the "
                          f"run's base {base}; only adapters of one base model can be averaged (answer with each "
                          "model apart and combine the runs with ensemble.py)")


# Config keys that differ between copies of one model (a 4-bit copy, another transformers' save, Unsloth's).
CONFIG_NOISE = ("quantization_config", "dtype", "torch_dtype", "_name_or_path", "transformers_version", "use_cache",
                "pad_token_id", "architectures", "auto_map")


def model_config(name_or_path: str) -> dict | None:
    """A base model's config.json (a folder, or a hub id in the local cache) without the keys in which copies of
    one model differ; None when it cannot be read here."""
    folder = Path(name_or_path)
    if folder.is_dir():
        config_file = folder / "config.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(str(name_or_path), "config.json")
        except Exception:  # noqa: BLE001  (an odd id: nothing cached)
            found = None
        config_file = Path(found) if isinstance(found, str) else None
    config = read_json(config_file) if config_file else None
    if config is None:
        return None
    return {k: v for k, v in config.items() if k not in CONFIG_NOISE and not k.startswith(("unsloth", "_attn"))}


def config_differences(a: dict, b: dict) -> list[str]:
    """The keys both configs have and give different values (a key one of them lacks proves nothing)."""
    return sorted(k for k in set(a) & set(b) if a[k] != b[k])


def check_base_of_adapter(adapter_dir: str | Path, base: str, *, consumer: str) -> None:
    """The base a run loads under an adapter must be the model it was trained on, by the config the adapter
    recorded (another copy of that model, 4-bit or 16-bit, anywhere, passes; a base model of another training
    -- Instruct or not, another context length -- does not). Adapters without a record are checked by shape
    only, when they load."""
    record = read_json(Path(adapter_dir) / ADAPTER_RECORD) or {}
    trained_on, given = record.get("base_config"), model_config(base)
    if not isinstance(trained_on, dict) or given is None:
        return
    differ = config_differences(trained_on, given)
    if differ:
        shown = ", ".join(f"{k} {trained_on[k]!r} vs {given[k]!r}" for k in differ[:3])
        raise ProvenanceError(f"{consumer}: the adapter {adapter_dir} was trained on another model than {base} "
                              f"(config.json differs: {shown}{' ...' if len(differ) > 3 else ''}); give the base "
                              f"it was trained on ({record.get('base_model')})")
    trained_base = record.get("base_model")
    if trained_base and Path(trained_base).is_dir() and Path(base).is_dir() and not same_source(trained_base, base):
        # one config, two folders: a copy of the model (a 4-bit save of it), or another model of the same shape
        # (another fine-tune or seed), which no config can tell apart
        logger.warning("%s: the adapter %s was trained on %s; %s has the same config and is taken as a copy of it. "
                       "If it is another model of that shape (another fine-tune), give the base it was trained on",
                       consumer, adapter_dir, trained_base, base)


def prompt_record(options) -> dict:
    """The prompt settings of a training run (PromptOptions), as an adapter records them: the values, and a
    custom chat template by its text."""
    from mcqtune.runs.identity import template_identity

    record = {name: getattr(options, name) for name in PROMPT_FIELDS if name != "chat_template"}
    template = options.chat_template
    record["chat_template"] = None if not template else \
        (Path(template).read_text(encoding="utf-8") if Path(template).is_file() else template)
    record["chat_template_sha256"] = template_identity(template)
    record["reasoning"] = options.reasoning  # trained to reason before the answer (train --reasoning_column)
    return record


def write_adapter_record(adapter_dir: str | Path, script_args, train_file: dict | None) -> Path:
    """adapter/mcq_provenance.json: how the adapter was trained (base model, prompt settings, training file)."""
    from mcqtune.files import write_json_atomic

    record = {"base_model": script_args.model_name_or_path, "base_config": model_config(script_args.model_name_or_path),
              "train_file": train_file, "prompt": prompt_record(script_args)}
    return write_json_atomic(record, Path(adapter_dir) / ADAPTER_RECORD)


def prompt_differences(options, trained: dict) -> list[str]:
    """The prompt settings (PROMPT_FIELDS) in which ``options`` differ from an adapter's recorded ``trained`` ones
    (a custom chat template compared by its text; the reasoning instruction only when both reason)."""
    differ = []
    for name in PROMPT_FIELDS:
        if name not in trained or (name == "reasoning_instruction" and not (trained.get("reasoning")
                                                                            and options.reasoning)):
            continue
        mine = getattr(options, name)
        if name == "chat_template" and mine and Path(mine).is_file():
            mine = Path(mine).read_text(encoding="utf-8")
        if mine != trained[name]:
            differ.append(name)
    return differ


def adapter_prompt(adapter_dir: str | Path) -> dict | None:
    """The prompt settings an adapter was trained with (None: an adapter without a record, e.g. not ours)."""
    record = read_json(Path(adapter_dir) / ADAPTER_RECORD)
    return record.get("prompt") if record and isinstance(record.get("prompt"), dict) else None


def training_prompt(adapters: list[str]) -> dict | None:
    """The one prompt the adapters (a run's adapter and its ensemble) were trained with; adapters trained with
    different prompts cannot be answered in one pass and are refused."""
    found = [(a, adapter_prompt(a)) for a in adapters]
    found = [(a, p) for a, p in found if p is not None]
    for adapter, prompt in found[1:]:
        differ = [k for k in (*PROMPT_FIELDS, "reasoning") if prompt.get(k) != found[0][1].get(k)]
        if differ:
            raise ProvenanceError(f"--ensemble: {adapter} was trained with another {', '.join(differ)} than "
                                  f"{found[0][0]}; adapters answered together must share the prompt (combine "
                                  "separate runs with ensemble.py instead)")
    return found[0][1] if found else None
