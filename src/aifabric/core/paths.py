"""Where aifabric keeps a user's files when the fabric file does not say (the XDG base directories).

    state_dir()   $XDG_STATE_HOME/aifabric  (~/.local/state/aifabric): the usage ledger, `up`'s logs,
                  the outside check's memory, the record of a running `aifabric up`
    data_dir()    $XDG_DATA_HOME/aifabric   (~/.local/share/aifabric): the key store

Read at each call, not at import: the tests (and `aifabric up` for the bench) point them elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "state_dir"]


def state_dir() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "aifabric"


def data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "aifabric"
