"""What infer.py settles before the first answer: the options checked, the models that answer, the run's identity.

``check_args`` names every problem with the options in one ``cli.ConfigError`` before anything is loaded. A k-fold
training folder as ``--model_path`` becomes the average of its fold adapters; an adapter's base comes from its
adapter_config.json unless ``--base_model_id`` names it. ``run_identity_of`` is what the answer checkpoint is
kept under (``run_identity.inference_identity``): the same command continues it, any other run starts over.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from mcqtune.errors import ConfigError
from mcqtune.core.engines import ATTENTION_CHOICES, GENERATION_ENGINES, KV_CACHE_DTYPES, PAGED_ENGINES
from mcqtune.infer.options import InferArguments
from mcqtune.infer.outputs import output_problems
from mcqtune.data.questions import check_prompt_options

logger = logging.getLogger(__name__)


# options read in some modes only; a value other than the default in another mode is refused
MIN_TEMPERATURE = 0.01  # below it sampling is greedy in all but name, and logits over 1e-40 overflowed float32
MODE_ONLY = {"max_new_tokens": ("generate",), "max_reasoning_tokens": ("reason",)}
DEFAULTS = {f.name: f.default for f in dataclasses.fields(InferArguments) if f.name in MODE_ONLY}


def check_args(args: InferArguments) -> None:
    """Every problem with the options in one sentence, before anything is loaded."""
    problems = check_prompt_options(args)
    if not args.test_file:
        problems.append("test_file is required")
    if not args.model_path:
        problems.append("model_path is required")
    if not 1 <= args.permutations <= 4:
        problems.append(f"permutations must be 1-4, got {args.permutations}")
    if args.batch_size is not None and args.batch_size < 1:
        problems.append("batch_size must be >= 1")
    if args.max_new_tokens < 1:
        problems.append("max_new_tokens must be >= 1")
    if not (args.temperature == 0 or MIN_TEMPERATURE <= args.temperature < float("inf")):
        problems.append(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE} (below that, sampling "
                        f"overflows and is greedy in all but name), got {args.temperature}")
    elif args.temperature > 0 and args.mode != "reason":
        problems.append(f"temperature applies to reason mode only, not {args.mode} mode")
    if args.samples < 1:
        problems.append(f"samples must be >= 1, got {args.samples}")
    elif args.samples > 1 and (args.mode != "reason" or not args.temperature > 0):
        problems.append(f"samples {args.samples} votes over sampled reasoning replies: it needs --mode reason and "
                        f"--temperature above 0 (got {args.mode} mode, temperature {args.temperature})")
    if args.max_reasoning_tokens < 1:
        problems.append("max_reasoning_tokens must be >= 1")
    for name, modes in MODE_ONLY.items():  # set for another mode, it would change nothing but the run's identity
        if args.mode not in modes and getattr(args, name) != DEFAULTS[name]:
            problems.append(f"{name} applies to {' and '.join(modes)} mode only, not {args.mode}"
                            + (" (reasoning replies are bounded by --max_reasoning_tokens)"
                               if name == "max_new_tokens" and args.mode == "reason" else ""))
    if args.mode != "score" and (args.permutations > 1 or args.ensemble or args.debias_letters):
        problems.append(f"permutations, ensemble and debias_letters apply to score mode only, not {args.mode}")
    if args.rescore and (args.mode == "generate" or not 0 < args.rescore_fraction <= 1):
        problems.append(f"rescore needs score or reason mode and 0 < rescore_fraction <= 1, got {args.mode}, "
                        f"{args.rescore_fraction}")
    if args.debias_sample < 1:
        problems.append(f"debias_sample must be >= 1, got {args.debias_sample}")
    problems += engine_problems(args.generation_engine, args.mode, args.repetition_penalty)
    problems += attention_problems(args.paged_attention, args.generation_engine, args.mode)
    problems += varlen_only_problems(args)
    if args.generation_engine == "nf4" and (not args.load_in_4bit or args.load_in_8bit):
        problems.append("generation_engine nf4 reads NF4 weights: keep --load_in_4bit true (and no --load_in_8bit), "
                        "or use --generation_engine continuous")
    problems += output_problems(args)
    if problems:
        raise ConfigError("; ".join(problems))


def engine_problems(engine: str, mode: str, repetition_penalty: float) -> list[str]:
    """What is wrong with ``--generation_engine`` for these options (backend, processes, GPU: ``check_engine``)."""
    if engine not in GENERATION_ENGINES:
        return [f"generation_engine must be one of {', '.join(GENERATION_ENGINES)}, got {engine!r}"]
    if engine in PAGED_ENGINES and mode != "reason":
        return [f"generation_engine {engine} applies to reason mode only, not {mode}"]
    if engine in PAGED_ENGINES and repetition_penalty != 1.0:
        return [f"generation_engine {engine} has no repetition penalty (transformers' continuous batching drops "
                f"it): pass --repetition_penalty 1.0, or --generation_engine generate to keep {repetition_penalty}"]
    return []


def attention_problems(attention: str, engine: str, mode: str) -> list[str]:
    """What is wrong with ``--paged_attention`` for this engine and mode."""
    if attention not in ATTENTION_CHOICES:
        return [f"paged_attention must be one of {', '.join(ATTENTION_CHOICES)}, got {attention!r}"]
    if attention != "auto" and (mode != "reason" or engine not in PAGED_ENGINES):
        return [f"paged_attention {attention} applies to reason mode with a paged engine ({', '.join(PAGED_ENGINES)}), "
                f"not {mode} mode with --generation_engine {engine}"]
    return []


# options only varlen attention serves: (option, its value when off, why it needs varlen)
VARLEN_ONLY = (("kv_cache_dtype", "auto", "is read by varlen attention only"),
               ("async_batching", False, "overlaps steps with varlen attention only"))


def varlen_only_set(args: InferArguments) -> list[tuple[str, str, str]]:
    """(how it reads, why it needs varlen, how to turn it off) for each of ``VARLEN_ONLY`` that ``args`` sets."""
    return [(name if value is True else f"{name} {value}", why, f"--{name} {str(off).lower()}")
            for name, off, why in VARLEN_ONLY if (value := getattr(args, name)) != off]


def varlen_only_problems(args: InferArguments) -> list[str]:
    """What is wrong with the varlen-only options ``args`` sets, for its attention, engine and mode."""
    if args.kv_cache_dtype not in KV_CACHE_DTYPES:
        return [f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {args.kv_cache_dtype!r}"]
    problems = []
    for label, why, remedy in varlen_only_set(args):
        if args.mode != "reason" or args.generation_engine not in PAGED_ENGINES:
            problems.append(f"{label} applies to reason mode with a paged engine ({', '.join(PAGED_ENGINES)}), not "
                            f"{args.mode} mode with --generation_engine {args.generation_engine}")
        elif args.paged_attention == "sdpa":
            problems.append(f"{label} {why}, not --paged_attention sdpa: use --paged_attention varlen, or {remedy}")
    return problems


def check_reply_room(config, longest_prompt: int, args: InferArguments) -> None:
    """In reason mode the longest prompt and its reply budget must fit the model's context
    (``max_position_embeddings``): positions past it are ones the model never saw, and a cache sized for them can
    exceed the machine's memory. Checked after the prompts are encoded, before any reply."""
    context = getattr(config.get_text_config(), "max_position_embeddings", None)
    if args.mode == "reason" and context and longest_prompt >= context:
        raise ConfigError(f"the longest prompt ({longest_prompt} tokens) leaves no room for a reply in the model's "
                          f"context of {context} tokens (max_position_embeddings): use --max_prompt_tokens "
                          f"{context // 2} or less")
    if args.mode == "reason" and context and longest_prompt + args.max_reasoning_tokens > context:
        raise ConfigError(f"max_reasoning_tokens {args.max_reasoning_tokens} after the longest prompt "
                          f"({longest_prompt} tokens) exceeds the model's context of {context} tokens "
                          f"(max_position_embeddings): use --max_reasoning_tokens {context - longest_prompt} or less")


def check_device_options(kv_cache_dtype: str, async_batching: bool = False) -> None:
    """An FP8 cache is read by a Triton kernel that needs FP8 support on the GPU (compute capability 8.9+); on a
    CPU the same arithmetic runs in torch. Async batching overlaps GPU steps: a CPU has none to overlap. Checked
    before the model loads."""
    import torch

    if async_batching and not torch.cuda.is_available():
        raise ConfigError("async_batching overlaps GPU decoding steps; this machine has no CUDA GPU: use "
                          "--async_batching false")
    if kv_cache_dtype != "fp8" or not torch.cuda.is_available():
        return
    capability = torch.cuda.get_device_capability()
    if capability < (8, 9):
        raise ConfigError(f"kv_cache_dtype fp8 needs a GPU with FP8 (compute capability 8.9+: RTX 4090, H100, H200); "
                          f"{torch.cuda.get_device_name()} has {capability[0]}.{capability[1]}: use "
                          f"--kv_cache_dtype auto")


def resolve_paged_attention(args: InferArguments, config) -> None:
    """``--paged_attention auto`` made what runs, once the model's config is known and before the run's identity is
    taken: varlen for a paged engine in reason mode where the model allows it, else sdpa (said in the log)."""
    if args.paged_attention != "auto":
        return
    if args.mode != "reason" or args.generation_engine not in PAGED_ENGINES:
        args.paged_attention = "sdpa"
        return
    from mcqtune.core.varlen import varlen_problem

    problem = varlen_problem(config)
    needs_varlen = varlen_only_set(args)
    if problem and needs_varlen:
        label, why, remedy = needs_varlen[0]
        raise ConfigError(f"{label} {why}, and {problem}: use {remedy}")
    args.paged_attention = "sdpa" if problem else "varlen"
    if problem:
        logger.info("paged_attention auto: sdpa (%s)", problem)


def check_engine(engine: str, backend: str, world: int) -> None:
    """The paged engines run transformers' own attention classes (Unsloth replaces them), in one process
    (transformers seeds its sampling per process rank, so shards would not answer as one process does); fp8 needs
    FP8 tensor cores, nf4 a CUDA GPU (and NF4 weights: refused where it is installed). Checked before the model
    loads."""
    if engine not in PAGED_ENGINES:
        return
    if backend != "hf":
        raise ConfigError(f"generation_engine {engine} runs transformers' own attention, which the {backend} "
                          f"backend replaces: add --backend hf")
    if world > 1:
        raise ConfigError(f"generation_engine {engine} runs in one process, not {world}: answer in one process "
                          f"or use --generation_engine generate")
    if engine == "fp8":
        from mcqtune.core.fp8 import fp8_problem

        problem = fp8_problem()
        if problem:
            raise ConfigError(problem)
    if engine == "nf4":
        from mcqtune.core.nf4 import nf4_problem

        problem = nf4_problem()
        if problem:
            raise ConfigError(problem)


def resolve_sources(model_path: str, base_model_id: str | None = None) -> tuple[str, str | None]:
    """(base model, adapter or None) from --model_path / --base_model_id."""
    from mcqtune.model.loading import check_model_source, is_adapter_dir, resolve_adapter_base
    from mcqtune.runs.provenance import check_base_of_adapter

    check_model_source(model_path)
    if not is_adapter_dir(model_path):
        return model_path, None
    base = base_model_id or resolve_adapter_base(model_path)
    check_base_of_adapter(model_path, base, consumer="--base_model_id" if base_model_id else "infer")
    return base, model_path


def check_answer_slot(args: InferArguments) -> None:
    """The chat template can carry the answer (model/prompts.py), checked on the tokenizer alone before any
    weights load: a refusal (a thinking template with --enable_thinking true, say) costs no loading time."""
    from mcqtune.model.prompts import closing_letter_ids
    from mcqtune.model.prompts import find_answer_slot
    from mcqtune.model.loading import load_tokenizer

    base, adapter = resolve_sources(args.model_path, args.base_model_id)
    source = adapter if adapter and Path(adapter, "tokenizer_config.json").is_file() else base
    tokenizer = load_tokenizer(source, args.trust_remote_code, args.chat_template)
    find_answer_slot(tokenizer, args.prompt_style)
    if args.reasoning:
        closing_letter_ids(tokenizer)





def load_request(args: InferArguments, backend: str, device_map=None):
    """What to load: the models from the sources, infer's loading options with ``backend`` resolved from 'auto'."""
    from mcqtune.model.options import InferenceWeightOptions
    from mcqtune.infer.loading import InferenceLoad

    from mcqtune.runs.provenance import check_base_of_adapter, check_same_base

    base, adapter = resolve_sources(args.model_path, args.base_model_id)
    for extra in args.ensemble:
        extra_base, extra_adapter = resolve_sources(extra)
        check_same_base(base, extra_base, extra, consumer="--ensemble")
        check_base_of_adapter(extra, base, consumer="--ensemble")
    return InferenceLoad(base=base, weights=InferenceWeightOptions.of(args, backend=backend), adapter=adapter,
                         ensemble=list(args.ensemble), chat_template=args.chat_template,
                         max_seq_length=args.max_prompt_tokens + reply_tokens(args), device_map=device_map)


def reply_tokens(args: InferArguments) -> int:
    """The most tokens a reply may add to its prompt: a reasoning reply, closed, holds its budget and the closing."""
    from mcqtune.core.reasoning import CLOSING_TOKENS

    return args.max_reasoning_tokens + CLOSING_TOKENS if args.reasoning else args.max_new_tokens


def expand_fold_run(args: InferArguments) -> tuple[InferArguments, dict | None]:
    """``--model_path`` of a k-fold training run (fold-*/adapter inside): the adapters of its recorded fold plan,
    averaged (runs/folds.py refuses unfinished or foreign folds unless --partial_folds); what was used, for the
    report (None for any other model path)."""
    import dataclasses

    from mcqtune.runs.folds import fold_adapters, planned_folds

    folder = Path(args.model_path) if args.model_path else None
    if folder is None or not folder.is_dir() or (folder / "config.json").is_file() \
            or (folder / "adapter_config.json").is_file() or not fold_adapters(folder):
        return args, None
    adapters, used = planned_folds(folder, args.partial_folds)
    adapters = [str(a) for a in adapters]
    logger.info("%s is a k-fold run: answering with the average of %d fold adapters (folds %s of its %d-fold plan)",
                folder, len(adapters), ", ".join(map(str, used["used"])), used["folds"])
    return dataclasses.replace(args, model_path=adapters[0], ensemble=adapters[1:] + list(args.ensemble)), used


def adopt_training_prompt(args: InferArguments) -> tuple[InferArguments, dict | None]:
    """The prompt settings the adapter was trained with (runs/provenance.py), used by default: an option left at
    its default takes the training run's value; an explicit other value is refused in one line unless
    ``--prompt_mismatch_ok true``. What was adopted or allowed, for report.json (None: no record)."""
    import dataclasses

    from mcqtune.runs.provenance import ADAPTER_RECORD, PROMPT_FIELDS, ProvenanceError, training_prompt

    adapters = [a for a in [args.model_path, *args.ensemble]  # a merged model carries its adapter's record
                if a and (Path(a, "adapter_config.json").is_file() or Path(a, ADAPTER_RECORD).is_file())]
    trained = training_prompt(adapters)
    if trained is None:
        return args, None
    if trained.get("reasoning") and not args.reasoning and not args.prompt_mismatch_ok:
        raise ProvenanceError(f"{adapters[0]} was trained to reason before it answers (reasoning_column): answer "
                              "with --mode reason, or pass --prompt_mismatch_ok true to score its letters directly")
    defaults = {f.name: f.default for f in dataclasses.fields(args) if f.name in PROMPT_FIELDS}
    adopted, differ = {}, []
    for name in PROMPT_FIELDS:
        if name not in trained or (name == "reasoning_instruction" and not trained.get("reasoning")):
            continue  # recorded before this setting existed; an instruction a direct adapter never saw
        mine, theirs = getattr(args, name), trained.get(name)
        if name == "chat_template" and mine and Path(mine).is_file():
            mine = Path(mine).read_text(encoding="utf-8")
        if mine == theirs:
            continue
        if getattr(args, name) == defaults[name]:
            adopted[name] = theirs
        else:
            differ.append(name)
    if differ and not args.prompt_mismatch_ok:
        raise ProvenanceError(f"{adapters[0]} was trained with another {', '.join('--' + n for n in differ)} than "
                              "this command gives; leave them out to use the training run's (the default), or "
                              "pass --prompt_mismatch_ok true to answer with yours")
    if adopted:
        logger.info("using the training run's prompt settings for %s (recorded in %s)", ", ".join(adopted),
                    Path(adapters[0]) / ADAPTER_RECORD)
    info = {"adopted_from_adapter": sorted(adopted), "differs_from_training": differ,
            "trained_max_prompt_tokens": trained.get("max_prompt_tokens")}
    return dataclasses.replace(args, **adopted), info


def adapter_names(args: InferArguments) -> list[str | None]:
    if not args.ensemble:
        return [None]
    return ["default"] + [f"ensemble_{n}" for n in range(len(args.ensemble))]


def run_identity_of(args: InferArguments, request, load_info: dict, tokenizer, batch_size: int,
                    letter_prior=None) -> dict:
    """Everything that decides the answers (run_identity.inference_identity), the letter prior included."""
    from mcqtune.runs.identity import adapter_identity, inference_identity, model_identity

    return inference_identity(
        args, base=model_identity(request.base),
        adapter=adapter_identity(request.adapter) if request.adapter else None,
        ensemble=[adapter_identity(a) for a in args.ensemble], backend=request.weights.backend, batch_size=batch_size,
        precision=load_info["precision"], tokenizer_template=tokenizer.chat_template,
        parser_sha256=parser_identity() if args.mode != "score" else None,
        letter_prior=letter_prior)


def parser_identity() -> str:
    """The answer parser by content: its rules (parser.py), the patterns they match (grammar.py) and
    how reasoning replies are read (reasoning.py); a change to any can read a reply as another letter."""
    from mcqtune.core import grammar as answer_grammar
    from mcqtune.core import parser as answer_parser
    from mcqtune.core import reasoning
    from mcqtune.runs.identity import sha256_file, sha256_text

    return sha256_text(" ".join(sha256_file(module.__file__) for module in (answer_parser, answer_grammar, reasoning)))
