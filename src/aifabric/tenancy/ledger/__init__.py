"""The usage ledger: one row per request (and per failed attempt that consumed tokens), written off
the request path in batches, to SQLite (default) or PostgreSQL (replicas sharing one ledger).

    usage:                                  # the fabric file
      (absent)                              SQLite at $XDG_STATE_HOME/aifabric/usage.db
      /var/lib/aifabric/usage.db            SQLite at that path (also sqlite:///var/lib/...)
      postgresql://USER:PW@HOST:5432/DB     PostgreSQL (pip install 'aifabric[postgres]')
      off                                   no ledger (and no budgets)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from aifabric.config.schema import FabricConfig
from aifabric.core.paths import state_dir
from aifabric.tenancy.ledger.base import GROUPINGS, LedgerStore
from aifabric.tenancy.ledger.record import COLUMNS, Pending, UsageRow
from aifabric.tenancy.ledger.writer import Ledger

__all__ = [
    "COLUMNS",
    "GROUPINGS",
    "Ledger",
    "LedgerStore",
    "Pending",
    "UsageRow",
    "default_ledger_path",
    "ledger_opener",
]


def default_ledger_path() -> Path:
    """Beside the gateway's other state: $XDG_STATE_HOME/aifabric/usage.db (~/.local/state/...)."""
    return state_dir() / "usage.db"


def ledger_opener(config: FabricConfig) -> Callable[[], LedgerStore] | None:
    """How to open the ledger the fabric file names (a new connection each call), or None when off."""
    usage = config.usage
    if usage == "off":
        return None
    if usage.startswith(("postgresql://", "postgres://")):
        from aifabric.tenancy.ledger.postgres import PostgresLedger

        return lambda: PostgresLedger(usage)
    from aifabric.tenancy.ledger.sqlite import SqliteLedger

    if usage.startswith("sqlite://"):
        path = Path(urlsplit(usage).path)
    elif usage:
        path = Path(usage).expanduser()
        if not path.is_absolute() and config.source and not config.source.startswith("<"):
            path = Path(config.source).parent / path  # relative to the fabric file, like env_file
    else:
        path = default_ledger_path()
    return lambda: SqliteLedger(path)
