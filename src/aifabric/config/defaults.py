"""The embedded default fabric: `config/default.yaml`, shipped in the package, read by the normal loader.

It is a fabric file like any other (no special code path): the three roles of the seed and their
aliases, served by local CPU backends that `aifabric up` launches (see aifabric.local).
"""

from __future__ import annotations

import os
from pathlib import Path

from aifabric.config.load import load_config
from aifabric.config.schema import FabricConfig

__all__ = ["DEFAULT_CONFIG_PATH", "default_config_path", "load_config_or_default", "load_default_config"]

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")


def default_config_path() -> Path:
    """Where the embedded default fabric file lies (inside the installed package)."""
    return DEFAULT_CONFIG_PATH


def load_default_config() -> FabricConfig:
    """The embedded default, loaded and validated like an operator's fabric file."""
    return load_config(DEFAULT_CONFIG_PATH)


def load_config_or_default(path: str | os.PathLike[str] | None) -> FabricConfig:
    """The fabric file at `path`, or the embedded default when none is given: what every command's
    `--config` / FILE argument means. Raises `ConfigError` with every problem."""
    return load_config(DEFAULT_CONFIG_PATH if path is None else path)
