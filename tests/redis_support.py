"""A real Redis from Debian for the tests that share state through it (tests/state, tenancy,
responses); the `redis_server` fixture (tests/conftest.py) starts one per test."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

__all__ = ["RedisServer"]


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
