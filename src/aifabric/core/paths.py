"""Where aifabric keeps a user's files when the fabric file does not say (the XDG base directories).

    state_dir()   $XDG_STATE_HOME/aifabric  (~/.local/state/aifabric): the usage ledger, `up`'s logs,
                  the outside check's memory, the record of a running `aifabric up`
    data_dir()    $XDG_DATA_HOME/aifabric   (~/.local/share/aifabric): the key store
    runtime_dir() $XDG_RUNTIME_DIR/aifabric (/run/user/UID/aifabric), else /tmp/aifabric-UID: the shared
                  state of `serve --workers N` (state.local) and the Unix sockets of the local embeddings
                  servers (short paths: a socket's is at most 107 bytes, which a state directory under a
                  long home or test path can exceed)

Read at each call, not at import: the tests (and `aifabric up` for the bench) point them elsewhere.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["data_dir", "local_socket", "runtime_dir", "state_dir"]


def state_dir() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "aifabric"


def data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "aifabric"


def runtime_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):  # a session's variable can outlive its directory (su, sudo)
        return Path(runtime) / "aifabric"
    return Path(tempfile.gettempdir()) / f"aifabric-{os.getuid()}"


def local_socket(port: int) -> str:
    """The Unix socket a local embeddings server on `port` also listens on (the port keeps it unique
    among the fabrics of one user, as it does for their TCP listeners)."""
    return str(runtime_dir() / f"embed-{port}.sock")
