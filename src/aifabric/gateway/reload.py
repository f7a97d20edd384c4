"""Config reload (SIGHUP), once for `aifabric serve` and `aifabric up`: re-read the fabric file and swap
the routing table whole, or refuse and keep the running configuration. The caller says how to report
the outcome (the log under `serve`, the console under `up`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aifabric.config.load import load_config
from aifabric.config.schema import FabricConfig
from aifabric.errors import ConfigError

__all__ = ["ReloadOutcome", "Reloadable", "reload_from_file"]


class Reloadable(Protocol):
    """What a reload needs of the gateway (`Gateway.reload`)."""

    def reload(self, config: FabricConfig) -> None: ...


@dataclass(frozen=True)
class ReloadOutcome:
    applied: bool
    message: str  # what happened, in words, for the log or the console


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
        return ReloadOutcome(False, f"reload of {path} refused, the running configuration stays:\n{exc}")
    why = refuse(new) if refuse is not None else None
    if why:
        return ReloadOutcome(False, f"reload of {path} refused: {why}")
    gateway.reload(new)
    return ReloadOutcome(True, f"reloaded {path}: {len(new.roles)} roles, {len(new.backends)} backends")
