"""What Linux's /proc says of a process: when it started."""

from __future__ import annotations

from pathlib import Path

__all__ = ["start_ticks"]


def start_ticks(pid: int | None = None) -> int | None:
    """When process `pid` (this one by default) started, in clock ticks since boot (/proc/PID/stat),
    None when there is no such process or no /proc."""
    try:
        stat = Path(f"/proc/{'self' if pid is None else pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None
