"""The record of a running `aifabric up`: where its gateway listens, for the commands that talk to one.

`aifabric up` writes `$XDG_STATE_HOME/aifabric/up.json` (`{"url": ..., "pid": ...}`) once its gateway
listens and removes it when it stops; `status`, `smoke`, `drill` and the other commands with `--url`
default to that URL while its process lives, so `make up PORT=8080` then `aifabric status` asks :8080.
Order of the default: `$AIFABRIC_URL`, then the running `up`, then http://127.0.0.1:8000. A record whose
process is gone (killed with -9) is ignored, also when its pid has been reused since (the record keeps
the process's start time). Of two `up`s at once, the one that became ready last is recorded; when it
stops, the record goes, and the other is asked with `--url` again.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from aifabric.core.paths import state_dir
from aifabric.core.procfs import start_ticks

__all__ = ["forget_running", "record_running", "running_url"]


def _path() -> Path:
    return state_dir() / "up.json"


def record_running(url: str, pid: int | None = None) -> None:
    """Say that this process's gateway listens at `url` (best effort: a read-only home only loses this)."""
    path = _path()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        pid = pid or os.getpid()
        tmp.write_text(json.dumps({"url": url, "pid": pid, "started": start_ticks(pid)}))
        tmp.replace(path)  # whole or not at all, for a reader at the same moment


def forget_running(pid: int | None = None) -> None:
    """Remove the record if it is this process's (another `up` may have written it since)."""
    record = _read()
    if record is not None and record[1] == (pid or os.getpid()):
        with contextlib.suppress(OSError):
            _path().unlink()


def running_url() -> str | None:
    """The URL of the running `aifabric up`, or None when none is recorded or its process is gone."""
    record = _read()
    if record is None:
        return None
    url, pid, started = record
    now = start_ticks(pid)
    if now is None or (started is not None and now != started):
        return None  # gone, or its pid is another process's now
    return url


def _read() -> tuple[str, int, int | None] | None:
    try:
        record = json.loads(_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    url, pid = record.get("url"), record.get("pid")
    if not isinstance(url, str) or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    started = record.get("started")
    return url, pid, started if isinstance(started, int) and not isinstance(started, bool) else None
