"""What machine a result came from, and how busy it was: figures mean nothing without it."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def busy_fraction(interval_s: float = 1.0) -> float:
    """Share of all CPUs busy over `interval_s` (from /proc/stat), measured before a run starts."""

    def read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = read()
    time.sleep(interval_s)
    total1, idle1 = read()
    span = total1 - total0
    return 0.0 if span <= 0 else 1.0 - (idle1 - idle0) / span


def describe(python: str) -> dict[str, object]:
    """nproc, CPU model, memory, kernel, Python, wrk and nginx versions, load average, and whether
    aifabric's request path runs compiled."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(memory_gib(), 1),
        "kernel": platform.release(),
        "python": tool_version([python, "--version"]),
        "wrk": tool_version(["wrk", "-v"]).split(" [")[0],
        "nginx": tool_version(["nginx", "-v"]),
        "loadavg_1m_at_start": os.getloadavg()[0],
        "aifabric_build": aifabric_build(python),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def describe_line(info: dict[str, object]) -> str:
    return (
        f"{info['nproc']} cores ({info['cpu_model']}), {info['memory_gib']} GiB, Linux {info['kernel']}, "
        f"{info['python']}, {info['wrk']}, {info['nginx']}; aifabric: {info['aifabric_build']}; "
        f"{info['date']}"
    )


def aifabric_build(python: str) -> str:
    """Whether the aifabric under test runs its request path compiled (aifabric.native)."""
    code = "from aifabric.native import check; print(check().summary)"
    return tool_version([python, "-c", code])
