"""(e) uvicorn (uvloop + httptools) with a bare ASGI callable (no framework) + rawclient's pool.

Separates the server's cost from the client's: (a) minus (e) is starlette + httpx, (e) minus (c)
is uvicorn's ASGI machinery.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvicorn
from rawclient import UpstreamPool


def build(upstream_port: int) -> Any:
    pool = UpstreamPool("127.0.0.1", upstream_port)
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json")],
    }

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/v1/chat/completions":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        chunks = []
        more = True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        payload = orjson.loads(b"".join(chunks))
        payload["model"] = "bench-model"
        status, body = await pool.request(pool.post_json(b"/v1/chat/completions", orjson.dumps(payload)))
        await send(start if status == 200 else {**start, "status": status})
        await send({"type": "http.response.body", "body": body})

    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream-port", type=int, required=True)
    a = ap.parse_args()
    uvicorn.run(
        build(a.upstream_port),
        host="127.0.0.1",
        port=a.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
    )
