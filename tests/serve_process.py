"""`aifabric serve` as an operator runs it: a process of its own on a free port, its output collected."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from aifabric.testing.net import free_port
from aifabric.testing.wait import wait_until

__all__ = ["Serve"]


class Serve:
    """`aifabric serve --config FILE --port P [ARGS]` as a real process; what it prints is in `output`."""

    def __init__(self, fabric_file: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "aifabric", "serve", "--config", str(fabric_file),
                "--port", str(self.port), *args]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: stop() finds any process it left behind
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def wait_ready(self) -> Serve:
        wait_until(
            lambda: any("gateway ready" in line for line in self.output) or self.proc.poll() is not None,
            "aifabric serve printed that it is ready",
        )
        assert self.proc.poll() is None, "".join(self.output)
        return self

    def wait_up(self, *backends: str) -> Serve:
        """Until it serves and has probed every one of `backends` up."""
        self.wait_ready()
        for name in backends:
            wait_until(lambda b=name: self.state(b) == "up", f"{name} probed up")  # type: ignore[misc]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self, backend: str) -> str:
        """The backend's health state as `GET /status` shows it."""
        return str(httpx.get(self.url + "/status", timeout=5).json()["backends"][backend]["state"])

    def workers(self) -> list[int]:
        text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in text.split()]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        """SIGTERM, as an operator stops it; then no process of its (workers included) may be left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # A worker left running would keep the output pipe open (and the reader blocked in it).
        left = group_members(self.proc.pid)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._reader.join(5)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()
        assert not left, f"processes of aifabric serve outlived it: {left}\n" + "".join(self.output[-30:])


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (zombies are already gone: nothing to stop)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # exited while we looked
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(stat.parent.name))
    return found
