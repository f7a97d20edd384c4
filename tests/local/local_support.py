"""Shared by the local-backend tests: free ports, live-process checks, a fake backend's process spec."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from aifabric.local.launch import ProcessSpec

FAKE_BACKEND = Path(__file__).with_name("fake_local_backend.py")


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def fake_spec(name: str, port: int, *args: str) -> ProcessSpec:
    return ProcessSpec(
        name=name,
        argv=(sys.executable, str(FAKE_BACKEND), "--port", str(port), *args),
        host="127.0.0.1",
        port=port,
        ready_path="/ready",
        env={"PYTHONUNBUFFERED": "1"},
    )


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out
