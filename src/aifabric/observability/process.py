"""The gateway process's own figures for `/metrics`: CPU, memory, file descriptors and the cyclic
garbage collector, under the names Prometheus' client libraries give them (`process_*`, `python_gc_*`),
so the dashboards made for those read them as they are.

`aifabric_gc_frozen_objects` is ours: the objects `settle_heap` (gateway.app) moved out of the
collector's sight once the gateway served. 0 in a process that never settled (a gateway embedded in
another program) says why its collections cost more.
"""

from __future__ import annotations

import gc
import os
import time

from aifabric.core.procfs import start_ticks

__all__ = ["process_lines"]


def _start_time() -> float:
    """When this process started, in seconds since the epoch: boot time plus its start in clock ticks
    after boot (/proc), else when this module was imported, as the gateway started."""
    ticks = start_ticks()
    try:
        with open("/proc/stat", "rb") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith(b"btime "))
    except (OSError, IndexError, ValueError, StopIteration):
        return time.time()
    return time.time() if ticks is None else boot + ticks / os.sysconf("SC_CLK_TCK")


_STARTED = _start_time()


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def process_lines(open_fds: bool = True) -> list[str]:
    """Prometheus text lines (HELP, TYPE, samples) of this process's own figures; `process_open_fds`
    only with `open_fds` (listing the descriptors costs ~0.4 µs each)."""
    out = [
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
        "# TYPE process_cpu_seconds_total counter",
        f"process_cpu_seconds_total {time.process_time():.3f}",  # every thread's, user and system
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {_STARTED:.2f}",
    ]
    resident = _resident_bytes()
    if resident is not None:  # without /proc, left out rather than guessed
        out += [
            "# HELP process_resident_memory_bytes Resident memory size in bytes.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {resident}",
        ]
    fds = _open_fds() if open_fds else None
    if fds is not None:
        out += [
            "# HELP process_open_fds Number of open file descriptors.",
            "# TYPE process_open_fds gauge",
            f"process_open_fds {fds}",
        ]
    stats = list(enumerate(gc.get_stats()))
    out += [
        "# HELP python_gc_collections_total Number of times this generation was collected.",
        "# TYPE python_gc_collections_total counter",
        *(f'python_gc_collections_total{{generation="{g}"}} {s["collections"]}' for g, s in stats),
        "# HELP python_gc_objects_collected_total Objects collected during gc.",
        "# TYPE python_gc_objects_collected_total counter",
        *(f'python_gc_objects_collected_total{{generation="{g}"}} {s["collected"]}' for g, s in stats),
        "# HELP aifabric_gc_frozen_objects Objects moved out of the garbage collector's sight once the "
        "gateway served (gc.freeze): what startup built, never traversed again.",
        "# TYPE aifabric_gc_frozen_objects gauge",
        f"aifabric_gc_frozen_objects {gc.get_freeze_count()}",
    ]
    return out
