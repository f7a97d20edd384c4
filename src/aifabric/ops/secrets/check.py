"""`aifabric secrets check`: every `${VAR}` of a fabric file, where it resolves from, and the env file.

    report = check_secrets("fabric.yaml", environ=os.environ)
    report.references       # name, where used (key path, line), source: environment/env file/default/missing
    report.env_file         # path, mode, owner, group, how many variables; never a value
    report.exit_code        # 0 every reference resolves, 1 one is missing or the env file cannot be read

The file is read as YAML only (not validated), so the check runs on a fabric file that does not load yet
because of its secrets. Lookup is the loader's (`config.env.EnvResolver`): the environment first (an
empty variable there counts as empty), then `gateway.env_file`, then a `${VAR:-default}`.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from aifabric.config.env import EnvResolver, parse_env_file
from aifabric.config.nodes import child
from aifabric.core import exit_codes
from aifabric.errors import ConfigError, ConfigProblem

__all__ = ["EnvFileInfo", "Reference", "SecretsReport", "check_secrets", "env_file_of"]

Source = Literal["environment", "env file", "default", "missing"]
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


@dataclass
class Reference:
    name: str
    source: Source
    used_at: list[str] = field(default_factory=list)  # "backends.openai.api_key (fabric.yaml:12)"
    note: str = ""


@dataclass
class EnvFileInfo:
    path: str
    line: int | None
    exists: bool = False
    mode: str | None = None  # "0600"
    owner: str | None = None
    group: str | None = None
    variables: int = 0
    error: str | None = None  # cannot be read
    bad_lines: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class SecretsReport:
    source: str
    references: list[Reference]
    env_file: EnvFileInfo | None

    @property
    def missing(self) -> list[Reference]:
        return [r for r in self.references if r.source == "missing"]

    @property
    def exit_code(self) -> int:
        unreadable = self.env_file is not None and self.env_file.error is not None
        return exit_codes.FAILED if self.missing or unreadable else exit_codes.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "references": [asdict(r) for r in self.references],
            "env_file": asdict(self.env_file) if self.env_file is not None else None,
            "ok": self.exit_code == 0,
        }


def check_secrets(path: str | os.PathLike[str], *, environ: Mapping[str, str]) -> SecretsReport:
    """Raises `ConfigError` when the file cannot be read as YAML."""
    source = str(path)
    root = _compose(source)
    uses: dict[str, list[str]] = {}
    defaults: set[str] = set()
    env_node: yaml.Node | None = None

    def walk(node: yaml.Node, key_path: str) -> None:
        nonlocal env_node
        if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str):
            for m in _REFERENCE.finditer(node.value):
                if m.group(1):
                    uses.setdefault(m.group(1), []).append(
                        f"{key_path} ({source}:{node.start_mark.line + 1})"
                    )
                    if m.group(2):
                        defaults.add(m.group(1))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{key_path}[{i}]")
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = str(key.value)
                child_path = f"{key_path}.{name}" if key_path else name
                if child_path == "gateway.env_file":
                    env_node = value
                walk(value, child_path)

    walk(root, "")
    env_file = _env_file(env_node, environ, Path(source).parent)
    in_file: dict[str, str] = {}
    if env_file is not None:
        in_file = _inspect(env_file)
    references = []
    for name, used_at in uses.items():
        references.append(_resolve(name, used_at, name in defaults, environ, in_file, env_file))
    return SecretsReport(source, references, env_file)


def env_file_of(path: str | os.PathLike[str], environ: Mapping[str, str]) -> Path | None:
    """Where the fabric file's `gateway.env_file` points (relative: to the file's directory), or None."""
    node = child(child(_compose(str(path)), "gateway"), "env_file")
    info = _env_file(node, environ, Path(path).parent)
    return Path(info.path) if info is not None else None


def _compose(source: str) -> yaml.Node:
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            [ConfigProblem(source, None, f"cannot read the fabric file: {why}", "check the path")]
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(
            [
                ConfigProblem(
                    source, line, f"not valid YAML: {exc.problem}", "`aifabric config validate` says more"
                )
            ]
        ) from None
    if root is None:
        raise ConfigError([ConfigProblem(source, None, "the fabric file is empty", "")])
    return root


def _env_file(node: yaml.Node | None, environ: Mapping[str, str], base: Path) -> EnvFileInfo | None:
    if not isinstance(node, yaml.ScalarNode) or not node.value:
        return None
    value = EnvResolver(environ).substitute(str(node.value), "gateway.env_file", None)
    if not value:
        return None
    return EnvFileInfo(os.path.abspath(base / Path(value).expanduser()), node.start_mark.line + 1)


def _inspect(info: EnvFileInfo) -> dict[str, str]:
    """Fill in the env file's mode and owner; its variables, which the caller never prints."""
    path = Path(info.path)
    try:
        st = path.stat()
    except FileNotFoundError:
        info.warnings.append(f"{path} does not exist: `aifabric secrets sync` writes it")
        return {}
    except OSError as exc:
        info.error = f"cannot be examined: {exc.strerror}"
        return {}
    info.exists = True
    mode = stat.S_IMODE(st.st_mode)
    info.mode = f"{mode:04o}"
    info.owner = _name(pwd.getpwuid, st.st_uid)
    info.group = _name(grp.getgrgid, st.st_gid)
    if mode & 0o077:
        whom = "others" if mode & 0o007 else "its group"
        info.warnings.append(f"{path} holds secrets but is readable by {whom}: chmod 600 {path}")
    try:
        values, errors = parse_env_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        info.error = f"cannot be read: {exc.strerror if isinstance(exc, OSError) else 'not UTF-8 text'}"
        return {}
    info.variables = len(values)
    info.bad_lines = [e.line for e in errors]
    if errors:
        lines = ", ".join(str(e.line) for e in errors)
        info.warnings.append(f"line(s) {lines} of {path} are not KEY=VALUE and are ignored")
    return values


def _name(lookup: Any, ident: int) -> str:
    try:
        return str(lookup(ident)[0])
    except KeyError:
        return str(ident)


def _resolve(
    name: str,
    used_at: list[str],
    has_default: bool,
    environ: Mapping[str, str],
    in_file: Mapping[str, str],
    env_file: EnvFileInfo | None,
) -> Reference:
    if name in environ:
        if environ[name]:
            note = ""
            if name in in_file:
                same = in_file[name] == environ[name]
                note = "also in the env file" + (
                    "" if same else ", with another value: the environment's wins"
                )
            elif env_file is not None:
                note = (
                    "only in this shell's environment: a service does not inherit it; add it to the env file"
                )
            return Reference(name, "environment", used_at, note)
        # The loader does not fall through to the env file for an empty variable.
        if has_default:
            return Reference(name, "default", used_at, "empty in the environment")
        return Reference(name, "missing", used_at, "empty in the environment: unset it or give it a value")
    if in_file.get(name):
        return Reference(name, "env file", used_at)
    if has_default:
        return Reference(name, "default", used_at)
    where = f"add {name}=... to {env_file.path}" if env_file else "set gateway.env_file and add it there"
    return Reference(name, "missing", used_at, where)
