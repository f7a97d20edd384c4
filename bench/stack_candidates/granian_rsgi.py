"""(d) granian (Rust HTTP server, RSGI interface, uvloop) + rawclient's pool for the upstream."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rawclient import UpstreamPool

_pool: UpstreamPool | None = None
HEADERS = [("content-type", "application/json")]


async def app(scope: Any, proto: Any) -> None:
    global _pool
    if scope.path != "/v1/chat/completions":
        proto.response_bytes(200, [], b"ok")
        return
    if _pool is None:
        _pool = UpstreamPool("127.0.0.1", int(os.environ["STACK_UPSTREAM_PORT"]))
    payload = orjson.loads(await proto())
    payload["model"] = "bench-model"
    status, body = await _pool.request(_pool.post_json(b"/v1/chat/completions", orjson.dumps(payload)))
    proto.response_bytes(status, HEADERS, body)


if __name__ == "__main__":
    from granian import Granian

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream-port", type=int, required=True)
    a = ap.parse_args()
    os.environ["STACK_UPSTREAM_PORT"] = str(a.upstream_port)
    Granian(
        "granian_rsgi:app",
        address="127.0.0.1",
        port=a.port,
        interface="rsgi",
        workers=1,
        loop="uvloop",
        log_enabled=False,
        websockets=False,
    ).serve()
