"""`aifabric up` as a real subprocess: start it, read what it prints, find its backends, stop it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from aifabric.testing.net import free_port, free_port_block

# "  local-embed  loading: pid 12, port 8103" while starting; "local-embed: loading: ..." on a restart.
LOADING = re.compile(r"^\s*(\S+?):?\s+loading: pid (\d+), port (\d+)$", re.MULTILINE)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_outside(base: int, count: int) -> int:
    """A free port for the gateway that is not one of the local backends' `base .. base+count-1`.
    Both are ports the kernel had free a moment ago, asked for separately: it may hand out the same
    one twice, and `up` then refuses to start ("both given port P"; seen on a rerun of the e2e tests)."""
    while True:
        port = free_port()
        if not base <= port < base + count:
            return port


class Up:
    """One `aifabric up` process; its stdout and stderr are collected into `output`."""

    def __init__(
        self,
        tmp: Path,
        *args: str,
        port: int | None = None,
        local_base: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.local_base = local_base if local_base is not None else free_port_block(3)
        self.port = port if port is not None else port_outside(self.local_base, 3)
        self.log_dir = tmp / "logs"
        argv = [
            sys.executable, "-m", "aifabric", "up",
            "--port", str(self.port),
            "--local-port-base", str(self.local_base),
            "--log-dir", str(self.log_dir),
            *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line)
        self.proc.stdout.close()

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(self._lines)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, text: str, timeout: float = 240.0, *, after: int = 0) -> None:
        """Until `text` appears in the output (past offset `after`); fail with the output if it exits."""
        deadline = time.monotonic() + timeout
        while text not in self.output[after:]:
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                if text in self.output[after:]:
                    return
                raise AssertionError(f"aifabric up exited with {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not printed within {timeout:.0f} s:\n{self.output}")
            time.sleep(0.05)

    def backend_pids(self) -> dict[str, int]:
        """The latest pid of each local backend, as announced on the console."""
        return {name: int(pid) for name, pid, _ in LOADING.findall(self.output)}

    def backend_ports(self) -> dict[str, int]:
        return {name: int(port) for name, _, port in LOADING.findall(self.output)}

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=5)
        return code
