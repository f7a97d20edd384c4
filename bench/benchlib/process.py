"""Start a target as its own process group, time it to ready, read its tree, stop it.

Each target runs in a new session so that stopping it reaches every worker it forked (LiteLLM's
and Granian's workers, aifabric's --workers) and nothing else: the harness signals only the group
it created, by its id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchlib import procstat
from benchlib.upstream import wait_for_status


class TargetProcess:
    """A started target. `ready_s` is the time from exec to the first 200 on its readiness path."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        ready_path: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.ready_path = ready_path
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None
        self.last_samples: list[procstat.ProcSample] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, ready_timeout_s: float = 60.0) -> float:
        """Start and wait until ready; returns seconds to ready. Raises RuntimeError with the log tail."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()
        while time.monotonic() - t0 < ready_timeout_s:
            if self.proc.poll() is not None:
                break
            if wait_for_status(self.port, self.ready_path, 0.05) is not None:
                self.ready_s = time.monotonic() - t0
                return self.ready_s
        code = self.proc.poll()
        self.stop()
        why = f"exited with {code}" if code is not None else f"not ready after {ready_timeout_s:.0f} s"
        raise RuntimeError(f"{self.name} {why}; log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def sample(self) -> list[procstat.ProcSample]:
        self.last_samples = procstat.sample_tree(self.pid) if self.alive() else []
        return self.last_samples

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.sample()  # the last reading of peak RSS, taken while every worker still lives
        pgid = self.proc.pid  # start_new_session made the child the leader of its own group
        _signal_group(pgid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            self.proc.wait()
        # The leader is gone; a forked worker that outlived it must not hold the port for the next run.
        time.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
        self.proc = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
