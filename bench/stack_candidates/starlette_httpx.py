"""(a) starlette on uvicorn (uvloop + httptools) + httpx.AsyncClient with a keep-alive pool."""

from __future__ import annotations

import argparse

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def build(upstream_port: int) -> Starlette:
    client = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{upstream_port}",
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
        timeout=30.0,
    )

    async def chat(request: Request) -> Response:
        payload = orjson.loads(await request.body())
        payload["model"] = "bench-model"
        resp = await client.post(
            "/v1/chat/completions",
            content=orjson.dumps(payload),
            headers={"Content-Type": "application/json"},
        )
        return Response(resp.content, status_code=resp.status_code, media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/health", health)])


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
    )
