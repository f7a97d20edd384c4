"""Write an env file: every variable quoted so `config.env.parse_env_text` reads back exactly the value,
replaced atomically with mode 0600, and what changed said by name only.

    changes = diff_values(old, new)            # added / changed / removed / unchanged names
    write_env_file(path, new, header="...")    # temp file beside it, fsync, rename
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Changes", "diff_values", "render_env", "write_env_file"]

_PLAIN = re.compile(r"[A-Za-z0-9_./:@%+,=-]*")


@dataclass(frozen=True)
class Changes:
    """Names (never values) of what a sync adds, changes and removes."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def diff_values(old: Mapping[str, str], new: Mapping[str, str]) -> Changes:
    return Changes(
        added=sorted(k for k in new if k not in old),
        changed=sorted(k for k in new if k in old and old[k] != new[k]),
        removed=sorted(k for k in old if k not in new),
        unchanged=sorted(k for k in new if k in old and old[k] == new[k]),
    )


def _quote(value: str) -> str:
    if _PLAIN.fullmatch(value):
        return value
    if "'" not in value and "\n" not in value and "\r" not in value:
        return f"'{value}'"  # literal for every reader of env files: compose, systemd, shells
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("$", "\\$")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def render_env(values: Mapping[str, str], header: str = "") -> str:
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{name}={_quote(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, values: Mapping[str, str], header: str = "") -> None:
    """Replace `path` with `values`, atomically (a reader sees the old file or the new one, never half),
    mode 0600; the owner and group of a file it replaces are kept (root syncing for a service user).
    Raises OSError."""
    path = Path(os.path.abspath(path))
    previous: os.stat_result | None = None
    with contextlib.suppress(FileNotFoundError):
        previous = path.stat()
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)  # before a byte of secret is written
        if previous is not None and (previous.st_uid, previous.st_gid) != (os.geteuid(), os.getegid()):
            with contextlib.suppress(PermissionError):  # only root may give a file away
                os.fchown(fd, previous.st_uid, previous.st_gid)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(render_env(values, header))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
