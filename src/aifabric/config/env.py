"""`${NAME}` references in the fabric file, and the `gateway.env_file` they may resolve from.

Precedence: the real environment wins over the env file, so an operator (or systemd's `Environment=`)
can override one secret without editing the file. The env file is read only when a reference is not
in the environment: a missing env file whose variables all come from the environment is not an error.

Env file format (what `.env` files written for docker compose / systemd `EnvironmentFile=` hold):
`KEY=VALUE` lines, optional `export ` prefix, `#` comment lines and blank lines, values optionally in
single quotes (taken literally) or double quotes (with `\\n`, `\\"`, `\\\\` escapes); an unquoted value
ends at ` #` (an inline comment).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EnvFileError", "EnvResolver", "Miss", "parse_env_file", "parse_env_text"]

_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*")
# `$${X}` is a literal `${X}`; `${X}` and `${X:-default}` are references.
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


@dataclass(frozen=True)
class EnvFileError:
    """A line of an env file that is not `KEY=VALUE`."""

    line: int
    message: str


def parse_env_text(text: str) -> tuple[dict[str, str], list[EnvFileError]]:
    """Variables of an env file's text, and the lines that could not be read."""
    values: dict[str, str] = {}
    errors: list[EnvFileError] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.fullmatch(raw)
        if not match:
            # The line is not echoed: in a secrets file it may be a bare secret.
            errors.append(EnvFileError(number, "expected KEY=VALUE"))
            continue
        key, value = match.group(1), match.group(2)
        try:
            values[key] = _unquote(value)
        except ValueError as exc:
            errors.append(EnvFileError(number, f"{key}: {exc}"))
    return values, errors


def parse_env_file(path: str | os.PathLike[str]) -> tuple[dict[str, str], list[EnvFileError]]:
    """Like `parse_env_text`; raises OSError when the file cannot be read."""
    return parse_env_text(Path(path).read_text(encoding="utf-8"))


def _unquote(value: str) -> str:
    if value[:1] == "'":
        if len(value) < 2 or not value.endswith("'"):
            raise ValueError("single quote is not closed")
        return value[1:-1]
    if value[:1] == '"':
        out: list[str] = []
        i = 1
        while i < len(value):
            char = value[i]
            if char == "\\" and i + 1 < len(value):
                out.append(_ESCAPES.get(value[i + 1], "\\" + value[i + 1]))
                i += 2
                continue
            if char == '"':
                if value[i + 1 :].strip() and not value[i + 1 :].strip().startswith("#"):
                    raise ValueError("text after the closing double quote")
                return "".join(out)
            out.append(char)
            i += 1
        raise ValueError("double quote is not closed")
    # Unquoted: an inline comment starts at whitespace followed by '#'.
    return re.split(r"\s+#", value, maxsplit=1)[0]


@dataclass(frozen=True)
class Miss:
    """A reference that could not be resolved: where, and why."""

    name: str
    path: str  # key path in the fabric file, e.g. backends.openai.api_key
    line: int | None
    reason: str  # "unset" or "empty" or "bad-name"


@dataclass
class EnvResolver:
    """Resolves `${NAME}` against the environment, then the env file (read at most once, on demand)."""

    environ: Mapping[str, str]
    env_file: Path | None = None
    env_file_line: int | None = None
    misses: list[Miss] = field(default_factory=list)
    # Every well-formed reference met, resolved or not: name -> whether one of its uses has a default.
    references: dict[str, bool] = field(default_factory=dict)
    env_file_errors: list[EnvFileError] = field(default_factory=list)
    env_file_missing: bool = False
    env_file_unreadable: str | None = None
    _file_values: dict[str, str] | None = None

    def lookup(self, name: str) -> str | None:
        if name in self.environ:
            return self.environ[name]
        return self._from_file().get(name)

    @property
    def env_file_consulted(self) -> bool:
        return self._file_values is not None

    def _from_file(self) -> dict[str, str]:
        if self._file_values is None:
            self._file_values = {}
            if self.env_file is not None:
                try:
                    self._file_values, self.env_file_errors = parse_env_file(self.env_file)
                except FileNotFoundError:
                    self.env_file_missing = True
                except OSError as exc:
                    self.env_file_unreadable = exc.strerror or str(exc)
                except UnicodeDecodeError:
                    self.env_file_unreadable = "not UTF-8 text"
        return self._file_values

    def substitute(self, text: str, path: str, line: int | None) -> str | None:
        """`text` with every reference replaced, or None (and the misses recorded) if any is unresolved."""
        if "$" not in text:
            return text
        failed = False

        def replace(match: re.Match[str]) -> str:
            nonlocal failed
            if match.group(0) == "$${":
                return "${"
            body = match.group(1)
            name, has_default, default = body.partition(":-")
            if not _NAME.fullmatch(name):
                self.misses.append(Miss(body, path, line, "bad-name"))
                failed = True
                return ""
            self.references[name] = self.references.get(name, False) or bool(has_default)
            value = self.lookup(name)
            if value:
                return value
            if has_default:
                return default
            self.misses.append(Miss(name, path, line, "empty" if value == "" else "unset"))
            failed = True
            return ""

        result = _REFERENCE.sub(replace, text)
        return None if failed else result
