"""The YAML configs and chat templates shipped inside the package, found the same way from a checkout and from
an installed copy (package data, never a path relative to the working folder).

    mcq-tune train --config qwen2.5-14b-4090.yaml        # a shipped config, by name, from any folder
    mcq-tune train --config my-run.yaml                  # a file of yours
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Sequence

CONFIG_FLAG = "--config"


def config_dir() -> Path:
    """The shipped configs folder (package data)."""
    return Path(str(resources.files("mcqtune") / "configs"))


def chat_template_dir() -> Path:
    """The shipped chat templates (the tiny families' templates and any other template named by file)."""
    return config_dir() / "chat_templates"


def shipped_configs() -> list[str]:
    return sorted(p.name for p in config_dir().glob("*.yaml") if not p.name.endswith("defaults.yaml"))


def resolve_config(value: str) -> str:
    """A --config value as a file path: an existing file as given; otherwise a shipped config by its name
    (``qwen2.5-14b-4090``, ``qwen2.5-14b-4090.yaml`` or ``configs/qwen2.5-14b-4090.yaml``); anything else is
    returned unchanged, so that the parser names the missing file."""
    if Path(value).is_file():
        return value
    name = Path(value).name
    if Path(value).parent not in (Path("."), Path("configs")):
        return value
    for candidate in (name, f"{name}.yaml"):
        shipped = config_dir() / candidate
        if shipped.is_file():
            return str(shipped)
    return value


def resolve_config_argv(argv: Sequence[str] | None) -> list[str] | None:
    """argv with its --config value resolved (``--config X`` and ``--config=X``)."""
    if argv is None:
        return None
    out = list(argv)
    for i, item in enumerate(out):
        if item == CONFIG_FLAG and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
        elif item.startswith(CONFIG_FLAG + "="):
            out[i] = CONFIG_FLAG + "=" + resolve_config(item.split("=", 1)[1])
    return out
