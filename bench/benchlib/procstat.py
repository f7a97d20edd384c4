"""What a process tree costs, read from /proc: CPU time (utime+stime) and peak RSS (VmHWM).

A gateway may be several processes (a supervisor and its workers, LiteLLM's uvicorn workers, a
Granian master and its Rust threads), so every reading covers the whole tree under the pid we
started. Processes that exit between two readings lose their ticks; the harness only measures
trees whose members live for the whole measurement.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    """One process as seen at one instant."""

    pid: int
    name: str
    cpu_ticks: int  # utime + stime, in clock ticks
    hwm_kib: int  # VmHWM: the peak resident set since the process started
    rss_kib: int


def parse_stat(text: str) -> tuple[str, int, int]:
    """(comm, ppid, utime+stime ticks) from the text of /proc/<pid>/stat.

    comm may contain spaces and parentheses, so split at the LAST ')'.
    """
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    comm = text[open_paren + 1 : close_paren]
    fields = text[close_paren + 2 :].split()
    # fields[0] is state (field 3 of the man page); ppid is field 4, utime 14, stime 15.
    ppid = int(fields[1])
    utime = int(fields[11])
    stime = int(fields[12])
    return comm, ppid, utime + stime


def parse_status_kib(text: str, key: str) -> int:
    """A `Key:   1234 kB` line of /proc/<pid>/status, in KiB (0 when absent: kernel threads)."""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _read(pid: int, name: str) -> str | None:
    try:
        return (PROC / str(pid) / name).read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def children_map() -> dict[int, list[int]]:
    """ppid -> child pids for every process on the machine."""
    kids: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        text = _read(int(entry.name), "stat")
        if text is None:
            continue
        _, ppid, _ = parse_stat(text)
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree_pids(root: int) -> list[int]:
    """root and all its descendants that are alive now."""
    kids = children_map()
    out: list[int] = []
    stack = [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(kids.get(pid, ()))
    return out


def sample_tree(root: int) -> list[ProcSample]:
    """A reading of every live process in the tree under root."""
    samples: list[ProcSample] = []
    for pid in tree_pids(root):
        stat = _read(pid, "stat")
        status = _read(pid, "status")
        if stat is None or status is None:
            continue
        comm, _, ticks = parse_stat(stat)
        samples.append(
            ProcSample(
                pid=pid,
                name=comm,
                cpu_ticks=ticks,
                hwm_kib=parse_status_kib(status, "VmHWM"),
                rss_kib=parse_status_kib(status, "VmRSS"),
            )
        )
    return samples


def cpu_seconds(samples: list[ProcSample]) -> float:
    return sum(s.cpu_ticks for s in samples) / CLK_TCK


def cpu_delta_seconds(before: list[ProcSample], after: list[ProcSample]) -> float:
    """CPU seconds the tree spent between two readings, per pid (a pid new in `after` counts whole)."""
    start = {s.pid: s.cpu_ticks for s in before}
    ticks = sum(s.cpu_ticks - start.get(s.pid, 0) for s in after)
    return max(ticks, 0) / CLK_TCK


def peak_rss_mib(samples: list[ProcSample]) -> tuple[float, float, int]:
    """(largest VmHWM of one process, sum of VmHWM over the tree, process count), in MiB."""
    if not samples:
        return 0.0, 0.0, 0
    hwms = [s.hwm_kib for s in samples]
    return max(hwms) / 1024, sum(hwms) / 1024, len(samples)


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from the first line of /proc/stat."""
    fields = [int(x) for x in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    idle = fields[3] + fields[4]
    return total - idle, total


class ForeignLoad:
    """How much of the machine processes other than ours used over an interval.

    Ours = the harness's process tree (upstreams, targets, load generator) plus children reaped
    meanwhile (wrk, read from RUSAGE_CHILDREN). Other engineers' test runs on a shared machine
    show up here, so a figure taken while the machine was busy can be told apart.
    """

    def __init__(self) -> None:
        self.busy0, self.total0 = machine_busy_ticks()
        self.own0 = cpu_seconds(sample_tree(os.getpid()))
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.reaped0 = ru.ru_utime + ru.ru_stime

    def share(self) -> float:
        """Fraction of all CPUs (0..1) used by foreign processes since construction."""
        busy1, total1 = machine_busy_ticks()
        own_tree = cpu_seconds(sample_tree(os.getpid()))
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = max(own_tree - self.own0, 0.0) + (ru.ru_utime + ru.ru_stime - self.reaped0)
        busy = (busy1 - self.busy0) / CLK_TCK
        span = (total1 - self.total0) / CLK_TCK  # CPU-seconds available over the interval, all CPUs
        return 0.0 if span <= 0 else min(max((busy - own) / span, 0.0), 1.0)
