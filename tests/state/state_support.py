"""Fabric files for the state tests, `aifabric serve` with workers (the process itself is
tests/serve_process.py; the real Redis is tests/redis_support.py, with the `redis_server` fixture in
tests/conftest.py)."""

from __future__ import annotations

import http.client
import os
from pathlib import Path

import orjson

from aifabric.config.load import load_config_text
from aifabric.config.schema import FabricConfig
from serve_process import Serve

__all__ = ["Serve", "config", "connection_owner", "fabric", "models_on_each_connection", "serve_workers"]


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


def serve_workers(fabric_file: Path, runtime: Path, workers: int = 2) -> Serve:
    """`aifabric serve --workers N`, its workers sharing state under `runtime` (as XDG_RUNTIME_DIR: the
    lease and health in runtime/aifabric/PORT), which is made if missing."""
    runtime.mkdir(mode=0o700, exist_ok=True)
    return Serve(fabric_file, "--workers", str(workers), env={"XDG_RUNTIME_DIR": str(runtime)})


def connection_owner(server_port: int, client_port: int) -> int | None:
    """The pid whose socket holds the server side of the TCP connection from `client_port`."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            inode = fields[9]
    if inode is None:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return int(proc.name)
        except OSError:
            continue
    return None


def models_on_each_connection(port: int, n: int = 16) -> dict[int | None, set[str]]:
    """Model ids seen per worker process, over `n` connections the kernel spreads over the workers."""
    seen: dict[int | None, set[str]] = {}
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(n)]
    try:
        for conn in conns:
            conn.request("GET", "/v1/models")
            body = orjson.loads(conn.getresponse().read())
            owner = connection_owner(port, conn.sock.getsockname()[1])
            seen.setdefault(owner, set()).update(m["id"] for m in body["data"])
    finally:
        for conn in conns:
            conn.close()
    return seen
