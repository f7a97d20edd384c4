"""(b) aiohttp server + aiohttp ClientSession (TCPConnector keep-alive pool), on uvloop."""

from __future__ import annotations

import argparse

import aiohttp
import orjson
import uvloop
from aiohttp import web


def build(upstream_port: int) -> web.Application:
    url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    app = web.Application()

    async def start(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

    async def chat(request: web.Request) -> web.Response:
        payload = orjson.loads(await request.read())
        payload["model"] = "bench-model"
        async with request.app["session"].post(
            url, data=orjson.dumps(payload), headers={"Content-Type": "application/json"}
        ) as resp:
            body = await resp.read()
            return web.Response(body=body, status=resp.status, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=b"ok")

    app.on_startup.append(start)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream-port", type=int, required=True)
    a = ap.parse_args()
    uvloop.install()
    web.run_app(build(a.upstream_port), host="127.0.0.1", port=a.port, access_log=None, print=None)
