"""Every attempt the forwarder starts ends exactly once, whatever the backend sends and whenever the
configuration changes: the target's in-flight count goes back to zero, and the client gets an answer."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until

Start = Callable[..., Any]
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawBackend:
    """A backend written byte by byte, on its own thread: for answers no real server sends on purpose."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    await reader.readexactly(length)
                    await self._script(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        self._stop = asyncio.Event()
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        # Connections still open end here, on this loop, before it closes.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def __enter__(self) -> RawBackend:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def single(url: str, *, kind: str = "vllm", backend: str = "b0", retry: str = "") -> str:
    """A fabric with one role, chat-fast, on one backend at `url`."""
    head = f"retry: {{{retry}}}\n" if retry else ""
    return (
        head
        + f"""
backends:
  {backend}: {{kind: {kind}, url: "{url}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: {backend}, model: m1}}]}}
"""
    )


def outstanding(gw: RunningGateway, role: str = "chat-fast") -> list[int]:
    assert gw.gateway is not None
    return [t.outstanding for t in gw.gateway.table.routes[role].targets]


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    body = {"model": "chat-fast", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    body.update(extra)
    return body


def test_an_odd_stream_through_the_usage_counter_still_ends_with_done(start_gateway: Start) -> None:
    # llama-cpp-python ignores stream_options.include_usage, so the gateway counts the chunks itself;
    # events it does not expect (choices that are not objects) must pass through, not cut the stream.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        events = [
            b'data: {"id":"c1","choices":[{"delta":{"content":"hi"}}]}\n\n',
            b'data: {"id":"c1","choices":["odd", {"delta":"odd"}]}\n\n',
            b'data: {"id":"c1","choices":7}\n\n',
            b"data: [DONE]\n\n",
        ]
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n")
        for event in events:
            writer.write(b"%x\r\n%b\r\n" % (len(event), event))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    with RawBackend(script) as raw:
        gw = start_gateway(single(raw.url, kind="llama-cpp-python"))
        body = chat(stream=True, stream_options={"include_usage": True})
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
            assert r.status_code == 200
            text = "".join(r.iter_text())
        events = [e[len("data: ") :] for e in text.split("\n\n") if e.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["usage"]["completion_tokens"] == 1
        wait_until(lambda: outstanding(gw) == [0], "the target to be released")


def test_a_stream_answered_with_no_content_releases_the_target(start_gateway: Start) -> None:
    # A stream whose answer has no body is never read by the listener: the attempt still ends.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    with RawBackend(script) as raw:
        gw = start_gateway(single(raw.url))
        r = httpx.post(gw.url + "/v1/chat/completions", json=chat(stream=True), timeout=10)
        assert r.status_code == 204
        wait_until(lambda: outstanding(gw) == [0], "the target to be released")


def test_a_backend_host_that_cannot_be_a_name_fails_over(start_gateway: Start, fb: FakeBackend) -> None:
    # A DNS label longer than 63 characters cannot even be encoded: a connect failure of that target,
    # not a 500 from the gateway (and nothing is sent anywhere).
    bad = "http://" + "a" * 64 + ".invalid:8000/v1"
    gw = start_gateway(
        f"""
backends:
  bad: {{kind: vllm, url: "{bad}"}}
  good: {{kind: vllm, url: "{fb.url}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: bad, model: m1}}], fallbacks: [backup]}}
  backup: {{kind: chat, targets: [{{backend: good, model: m1}}]}}
"""
    )
    r = httpx.post(gw.url + "/v1/chat/completions", json=chat(), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["x-aifabric-backend"] == "good"
    assert r.headers["x-aifabric-attempts"] == "2"
    assert outstanding(gw) == [0]
    assert outstanding(gw, "backup") == [0]


def test_a_request_held_across_a_reload_that_removes_its_backend_is_served_by_the_new_one(
    start_gateway: Start, fb: FakeBackend
) -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as loading:
        loading.set(loading=True)  # 503 "Loading model": the request is held (warm-up)
        gw = start_gateway(single(loading.url, backend="old", retry="warmup_wait: 20s"))
        result: dict[str, httpx.Response] = {}
        client = threading.Thread(
            target=lambda: result.update(
                r=httpx.post(gw.url + "/v1/chat/completions", json=chat(), timeout=30)
            )
        )
        client.start()
        loading.wait_for_requests(1, path="/v1/chat/completions")
        new_config = load_config_text(
            single(fb.url, backend="new", retry="warmup_wait: 20s"), "fabric.yaml", environ={}
        )
        gateway = gw.gateway
        assert gateway is not None
        gw.call(lambda: gateway.reload(new_config))
        client.join(30)
        r = result["r"]
        assert r.status_code == 200, r.text
        assert r.headers["x-aifabric-backend"] == "new"
