"""The secrets map (`secrets-map.yml`): which variable of the env file comes from where.

    vault: https://kv-miket-ops.vault.azure.net      # needed once any entry reads Key Vault
    OPENAI_API_KEY:    {keyvault: openai-api-key}     # a secret of that vault (its current version)
    FABRIC_MASTER_KEY: {env: FABRIC_MASTER_KEY}       # this process's environment
    VLLM_API_KEY:      {file: /run/secrets/vllm}      # a file's content (relative: to the map's directory)
    HF_TOKEN:          {command: "pass show hf"}      # a command's standard output (through /bin/sh)

One entry per variable, each with exactly one source. Every mistake is reported with file, line and what
to write instead (a `ConfigError`), before any source is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml

from aifabric.errors import ConfigError, ConfigProblem

__all__ = ["SOURCE_KINDS", "MapEntry", "SecretsMap", "load_secrets_map", "parse_secrets_map"]

SourceKind = Literal["keyvault", "env", "file", "command"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("keyvault", "env", "file", "command")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Key Vault secret names: 1-127 characters, letters, digits and dashes.
_VAULT_SECRET = re.compile(r"[0-9A-Za-z-]{1,127}")
_Problem = Callable[[yaml.Node | None, str, str], None]  # records one problem at a node
_EXAMPLE = "OPENAI_API_KEY: {keyvault: openai-api-key}"


@dataclass(frozen=True)
class MapEntry:
    """One variable of the env file and where its value comes from."""

    name: str
    kind: SourceKind
    ref: str  # the secret's name, the variable, the path or the command
    line: int


@dataclass(frozen=True)
class SecretsMap:
    source: str
    vault: str | None
    entries: tuple[MapEntry, ...]
    base_dir: Path


def load_secrets_map(path: str | os.PathLike[str]) -> SecretsMap:
    """Read and check the map at `path`; raises `ConfigError` with every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [ConfigProblem(str(path), None, "the secrets map does not exist", "check the path")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([ConfigProblem(str(path), None, f"cannot read the file: {why}", "")]) from None
    return parse_secrets_map(text, str(path), Path(path).parent)


def parse_secrets_map(text: str, source: str = "<string>", base_dir: Path | None = None) -> SecretsMap:
    problems: list[ConfigProblem] = []

    def problem(node: yaml.Node | None, message: str, fix: str) -> None:
        problems.append(ConfigProblem(source, node.start_mark.line + 1 if node else None, message, fix))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(
            [
                ConfigProblem(
                    source,
                    mark.line + 1 if mark else None,
                    f"not valid YAML: {exc.problem}",
                    "check indentation and quoting here",
                )
            ]
        ) from None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(
            [ConfigProblem(source, None, "the map must be a YAML mapping of variables", f"write: {_EXAMPLE}")]
        )
    vault: str | None = None
    vault_node: yaml.Node | None = None
    entries: list[MapEntry] = []
    seen: set[str] = set()
    for key, value in root.value:
        name = str(key.value)
        if name == "vault":
            vault_node = value
            vault = _vault(value, problem)
            continue
        if not _NAME.fullmatch(name):
            problem(key, f"{name!r} is not a variable name", "use letters, digits and _ (not first)")
            continue
        if name in seen:
            problem(key, f"{name} is mapped twice", "keep one entry per variable")
            continue
        seen.add(name)
        entry = _entry(name, value, problem)
        if entry is not None:
            entries.append(entry)
    if vault is None and vault_node is None and any(e.kind == "keyvault" for e in entries):
        first = next(e for e in entries if e.kind == "keyvault")
        problems.append(
            ConfigProblem(
                source,
                first.line,
                f"{first.name} reads Key Vault, but the map names no vault",
                "add at the top: vault: https://NAME.vault.azure.net",
            )
        )
    if problems:
        raise ConfigError(problems)
    return SecretsMap(source, vault, tuple(entries), base_dir or Path.cwd())


def _vault(node: yaml.Node, problem: _Problem) -> str | None:
    url = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        problem(
            node,
            f"vault must be the vault's https URL, not {url!r}",
            "write: vault: https://NAME.vault.azure.net",
        )
        return None
    return url.rstrip("/")


def _entry(name: str, node: yaml.Node, problem: _Problem) -> MapEntry | None:
    fix = f'write one source: {name}: {{keyvault: NAME}}, {{env: NAME}}, {{file: PATH}} or {{command: "..."}}'
    if not isinstance(node, yaml.MappingNode) or len(node.value) != 1:
        problem(node, f"{name} must name exactly one source", fix)
        return None
    key, value = node.value[0]
    kind = str(key.value)
    if kind not in SOURCE_KINDS:
        problem(key, f"{name}: unknown source {kind!r} (sources: {', '.join(SOURCE_KINDS)})", fix)
        return None
    ref = str(value.value) if isinstance(value, yaml.ScalarNode) else ""
    if not ref:
        problem(value, f"{name}: {kind} needs a value", fix)
        return None
    if kind == "keyvault" and not _VAULT_SECRET.fullmatch(ref):
        problem(value, f"{name}: {ref!r} is not a Key Vault secret name", "letters, digits and dashes only")
        return None
    if kind == "env" and not _NAME.fullmatch(ref):
        problem(value, f"{name}: {ref!r} is not a variable name", "use letters, digits and _")
        return None
    return MapEntry(name, kind, ref, node.start_mark.line + 1)
