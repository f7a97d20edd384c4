"""Config reload, once for every way of asking (SIGHUP, `POST /admin/config/reload`, `watch: true`, a
reload another gateway announced through the state store), for `aifabric serve` and `aifabric up`:
re-read the fabric file (and its env file) and swap the routing table whole, or refuse and keep the
running configuration. The outcome says what changed (a `ConfigDiff`, secrets as names) or why it was
refused (every problem with file and line); the caller says how to report it (log, console, HTTP).

Requests in flight are not touched: they finish on the table they started with (`gateway.forward`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aifabric.config.diff import ConfigDiff, diff_configs
from aifabric.config.load import load_config
from aifabric.config.schema import FabricConfig
from aifabric.errors import ConfigError, ConfigProblem

__all__ = ["ReloadOutcome", "Reloadable", "fabric_version", "reload_from_file"]


class Reloadable(Protocol):
    """What a reload needs of the gateway (`Gateway.reload`)."""

    @property
    def config(self) -> FabricConfig: ...

    def reload(self, config: FabricConfig) -> None: ...


@dataclass(frozen=True)
class ReloadOutcome:
    applied: bool
    message: str  # what happened, in words, for the log or the console
    diff: ConfigDiff | None = None  # what the reload changed (applied only)
    problems: tuple[ConfigProblem, ...] = field(default=())  # why it was refused, when the file is broken
    version: str | None = None  # of the files now applied: `fabric_version`

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "message": self.message,
            "diff": self.diff.to_dict() if self.diff is not None else None,
            "problems": [
                {"file": p.file, "line": p.line, "message": p.message, "fix": p.fix} for p in self.problems
            ],
            "version": self.version,
        }


def fabric_version(config: FabricConfig) -> str:
    """A short digest of the fabric file and its env file as they are on disk now: two gateways with the
    same version read the same bytes. Never reveals a value (a digest of the whole files)."""
    digest = hashlib.sha256()
    for path in (config.source, config.gateway.env_file):
        digest.update(b"\0")
        if path and not path.startswith("<"):
            try:
                digest.update(Path(path).read_bytes())
            except OSError:
                digest.update(b"<unreadable>")
    return digest.hexdigest()[:16]


def reload_from_file(
    gateway: Reloadable,
    path: str,
    *,
    adapt: Callable[[FabricConfig], FabricConfig] | None = None,
    refuse: Callable[[FabricConfig], str | None] | None = None,
) -> ReloadOutcome:
    """Load `path`; `adapt` rewrites the new config (may raise ConfigError), `refuse` may name a reason
    not to apply it. A broken file or a refusal leaves the gateway as it was."""
    try:
        new = load_config(path)
        if adapt is not None:
            new = adapt(new)
    except ConfigError as exc:
        message = f"reload of {path} refused, the running configuration stays:\n{exc}"
        return ReloadOutcome(False, message, problems=tuple(exc.problems))
    why = refuse(new) if refuse is not None else None
    if why:
        return ReloadOutcome(False, f"reload of {path} refused: {why}")
    diff = diff_configs(gateway.config, new)
    gateway.reload(new)
    message = f"reloaded {path}: {len(new.roles)} roles, {len(new.backends)} backends; {diff.summary()}"
    return ReloadOutcome(True, message, diff=diff, version=fabric_version(new))
