"""A real Redis from Debian for the state tests, fabric files for them, and a wait helper."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from aifabric.config.load import load_config_text
from aifabric.config.schema import FabricConfig


class RedisServer:
    """`redis-server` on a unix socket in a short private directory; stop() and start() keep the path
    (a Redis outage and its return), and nothing is saved to disk."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="aifabric-redis-"))  # a unix socket path is short
        self.socket = self.dir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make test installs it from Debian)"
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return self
            except (redis.ConnectionError, FileNotFoundError):
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            assert self.proc.poll() is None, "redis-server exited at start"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def fabric(
    backend_url: str,
    *,
    state: str = "memory",
    probe_interval: str = "1h",
    consecutive_failures: int = 2,
    workers: int = 1,
) -> str:
    """One vllm backend `b` serving model `m` to role `r`. The default probe interval is long so that a
    prober probes exactly once when it starts probing: probe counts then say who probed."""
    return f"""
gateway: {{host: 127.0.0.1, port: 0, workers: {workers}}}
state: "{state}"
backends:
  b:
    kind: vllm
    url: "{backend_url}"
    health: {{interval: {probe_interval}, timeout: 2s, unhealthy_threshold: 1,
              consecutive_failures: {consecutive_failures}, base_ejection: 1h, max_ejection: 1h}}
roles:
  r: {{kind: chat, targets: [{{backend: b, model: m}}]}}
"""


def config(backend_url: str, **kwargs: object) -> FabricConfig:
    return load_config_text(fabric(backend_url, **kwargs), "<state test>")  # type: ignore[arg-type]


async def eventually(condition: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    """Wait for something the sync loop brings about (a bound, not a timing assertion)."""
    try:
        async with asyncio.timeout(limit):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


def wait_until(condition: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    """`eventually` for a test thread."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)
