"""Which optional extras of the aifabric package a fabric file needs to be served.

    required_extras(config)      # (Extra.REDIS, Extra.OTEL), in the order of `Extra`
    install_hint(Extra.REDIS)    # "pip install 'aifabric[redis]'"

One definition for the image `aifabric deploy compose|kubernetes` builds (it installs exactly these)
and for the errors `serve` raises when one is missing (they name the same extra). Each value is the
name of an `[project.optional-dependencies]` entry of pyproject.toml (a test holds them equal).
`local` and `azure` are never needed to serve: the local backends run outside the gateway's process
(`aifabric up`), and Key Vault is read by `aifabric secrets sync` only.
"""

from __future__ import annotations

import enum

from aifabric.config.schema import FabricConfig

__all__ = ["Extra", "install_hint", "required_extras"]


class Extra(enum.StrEnum):
    REDIS = "redis"  # state: redis://... (and keys in that Redis), keys: redis://...
    OTEL = "otel"  # tracing:
    POSTGRES = "postgres"  # usage: postgresql://...


def required_extras(config: FabricConfig) -> tuple[Extra, ...]:
    """The extras serving `config` imports, in declaration order; () for a plain install."""
    needed: set[Extra] = set()
    # state.factory: anything but "memory" is a Redis URL; tenancy.keystore: keys default to that Redis,
    # and a `keys:` that is not sqlite:// is Redis too.
    if config.state != "memory" or (config.keys and not config.keys.startswith("sqlite:")):
        needed.add(Extra.REDIS)
    if config.tracing is not None:
        needed.add(Extra.OTEL)
    if config.usage.startswith(("postgresql://", "postgres://")):  # tenancy.ledger.ledger_opener
        needed.add(Extra.POSTGRES)
    return tuple(e for e in Extra if e in needed)


def install_hint(extra: Extra) -> str:
    """The command that installs `extra`, for error messages."""
    return f"pip install 'aifabric[{extra}]'"
