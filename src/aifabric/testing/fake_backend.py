"""A fake inference backend: a real HTTP/1.1 server on 127.0.0.1 that speaks the OpenAI API, with switches
that inject the failures the gateway has to survive.

    with FakeBackend(kind="vllm", models=("m1", "m2")) as fb:
        client = openai.OpenAI(base_url=fb.url, api_key="x")
        client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "hi"}])
        # -> content "[m1] hi"
        fb.set(fail_first_n=2, fail_status=503, retry_after=1)   # the next two calls fail
        fb.stop(); fb.start()                                     # killed and restarted, same port
        fb.requests[-1].json                                      # what the gateway sent

It shares no code with the gateway it tests (plain asyncio streams, hand-written HTTP/1.1). It runs its own
event loop in a daemon thread (`start()`/`stop()`), or inside a running loop (`await astart()`/`astop()`),
or as a process: `python -m aifabric.testing.fake_backend --port P --kind vllm --model m1` prints
`ready http://127.0.0.1:P`; another process flips switches with `POST /_fake/config`.
Every switch is documented in docs/fake-backend.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aifabric.testing import _fake_shapes as shapes
from aifabric.testing._fake_http import (
    BadRequest,
    ChunkedResponse,
    HttpRequest,
    read_request,
    response_head,
    write_response,
)
from aifabric.testing._fake_switches import KINDS, Switches, updated

__all__ = ["KINDS", "FakeBackend", "RecordedRequest", "Switches"]

_INFERENCE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/embed"})
_FASTAPI_KINDS = ("vllm", "llama-cpp-python")  # their unknown routes answer {"detail": "Not Found"}
_COUNTERS = ("requests", "connections", "injected_failures", "crashes")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake backend received it (control requests to /_fake are not recorded)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    json: Any  # the parsed body, or None when empty or not JSON
    body: bytes
    time: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "json": self.json,
            "time": self.time,
        }


class _Crashed(Exception):
    """The handler dropped the connection on purpose (a crash switch); nothing more to write."""


def _retry_after(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class FakeBackend:
    """A fake OpenAI-compatible backend. Thread-safe: switches may be flipped from any thread."""

    def __init__(
        self,
        kind: str = "vllm",
        models: tuple[str, ...] | list[str] | str = ("m",),
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        **switches: Any,
    ) -> None:
        self._initial = updated(Switches(), {"kind": kind, "models": models, **switches})
        self._switches = self._initial
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._inflight = 0
        self._ids = itertools.count(1)
        # Event-loop state, valid between start and stop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._changed: asyncio.Event | None = None
        self._loading_timer: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------------------------------- public API

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the fake backend has no port yet: start() it first")
        return self._port

    @property
    def host(self) -> str:
        return self._host

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL (`base_url` + "/v1")."""
        return self.base_url + "/v1"

    @property
    def switches(self) -> Switches:
        return self._switches

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since the last clear, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def counters(self) -> dict[str, int]:
        """requests, connections, injected_failures, crashes (since the last reset) and inflight now."""
        with self._lock:
            return {**self._counters, "inflight": self._inflight}

    def count(self, path: str | None = None) -> int:
        """How many requests were received (to `path`, if given)."""
        with self._lock:
            return sum(1 for r in self._requests if path is None or r.path == path)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def set(self, **changes: Any) -> None:
        """Change switches now. When it returns from another thread, the change is in force (a `loading=
        "refuse"` listener is closed). Unknown names raise TypeError, bad values ValueError."""
        old, new = self._update(changes)
        self._after_change(old, new)

    async def aset(self, **changes: Any) -> None:
        """`set` for callers on the backend's own event loop (astart mode): awaits the change."""
        old, new = self._update(changes)
        if self._running:
            await self._apply(old, new)

    def reset(self) -> None:
        """Back to the construction-time switches; requests and counters cleared."""
        self._after_change(*self._reset_state())

    def start(self) -> FakeBackend:
        """Listen (on the same port as before, after a stop) with an event loop in a daemon thread."""
        if self._running:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name="fake-backend", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._open(), loop).result(timeout=30)
        except BaseException:
            self._join_loop()
            raise
        return self

    def stop(self) -> None:
        """Close the listener and every connection (a killed server: new connections are refused)."""
        if not self._running or self._loop is None:
            return
        if self._thread is None:
            raise RuntimeError("this fake backend runs on your event loop: use `await astop()`")
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=30)
        self._join_loop()

    async def astart(self) -> FakeBackend:
        """Listen on the running event loop (no thread)."""
        if not self._running:
            self._loop = asyncio.get_running_loop()
            await self._open()
        return self

    async def astop(self) -> None:
        if self._running:
            await self._close()
            self._loop = None

    def __enter__(self) -> FakeBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeBackend:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()

    def __repr__(self) -> str:
        where = self.base_url if self._port else "not started"
        return f"FakeBackend({self._switches.kind}, {list(self._switches.models)}, {where})"

    # ---------------------------------------------------------------------------- loop and listener

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _join_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)

    async def _open(self) -> None:
        self._changed = asyncio.Event()
        self._running = True
        if not self._port:
            # A backend that starts refusing still needs its port known (to be opened later).
            with socket.socket() as probe:
                probe.bind((self._host, 0))
                self._port = probe.getsockname()[1]
        try:
            await self._sync_listener()
        except BaseException:
            self._running = False
            raise
        self._arm_loading_timer()

    async def _close(self) -> None:
        self._running = False
        if self._loading_timer is not None:
            self._loading_timer.cancel()
            self._loading_timer = None
        await self._sync_listener()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _sync_listener(self) -> None:
        """Open or close the listening socket to match the state: running and not refusing."""
        want_open = self._running and not self._switches.refuse
        if want_open and self._server is None:
            self._server = await asyncio.start_server(
                self._on_connection, self._host, self._port, reuse_address=True, limit=1 << 20
            )
        elif not want_open and self._server is not None:
            self._server.close()  # the listening socket is closed now: connects are refused
            self._server = None
            await self._drop_connections()

    async def _drop_connections(self) -> None:
        current = asyncio.current_task()
        others = [t for t in self._handlers if t is not current]
        for task in others:
            task.cancel()
        for writer in list(self._writers):
            writer.close()  # FIN after what is already written, as when a process dies
        await asyncio.gather(*others, return_exceptions=True)
        await asyncio.sleep(0)
        for writer in list(self._writers):
            writer.transport.abort()

    def _update(self, changes: dict[str, Any]) -> tuple[Switches, Switches]:
        with self._lock:
            old = self._switches
            self._switches = new = updated(old, changes)
        return old, new

    def _reset_state(self) -> tuple[Switches, Switches]:
        with self._lock:
            old, new = self._switches, self._initial
            self._switches = new
            self._requests.clear()
            self._counters = dict.fromkeys(_COUNTERS, 0)
        return old, new

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _after_change(self, old: Switches, new: Switches) -> None:
        loop = self._loop
        if loop is None or not self._running:
            return  # applied by the next start()
        if self._on_loop_thread():
            task = loop.create_task(self._apply(old, new))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            asyncio.run_coroutine_threadsafe(self._apply(old, new), loop).result(timeout=30)

    async def _apply(self, old: Switches, new: Switches) -> None:
        if self._changed is not None:  # wake requests waiting on a switch (hang)
            self._changed.set()
            self._changed = asyncio.Event()
        if (old.loading, old.loading_ms) != (new.loading, new.loading_ms):
            self._arm_loading_timer()
        await self._sync_listener()

    def _arm_loading_timer(self) -> None:
        if self._loading_timer is not None:
            self._loading_timer.cancel()
            self._loading_timer = None
        sw = self._switches
        if sw.loading and sw.loading_ms is not None and self._loop is not None:
            self._loading_timer = self._loop.call_later(sw.loading_ms / 1000, self._loading_done)

    def _loading_done(self) -> None:
        self._loading_timer = None
        old, new = self._update({"loading": False, "loading_ms": None})
        self._after_change(old, new)

    async def _wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready() and self._changed is not None:
            await self._changed.wait()

    # ------------------------------------------------------------------------------ HTTP handling

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Our own task rather than asyncio's: asyncio logs an error for a cancelled callback task, and stop()
        # cancels the handlers of requests that hang.
        task = asyncio.get_running_loop().create_task(self._serve_connection(reader, writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with self._lock:
            self._counters["connections"] += 1
        try:
            while True:
                try:
                    request = await read_request(reader, writer)
                except BadRequest as exc:
                    write_response(writer, exc.status, b"", keep_alive=False)
                    break
                if request is None or not await self._handle(request, writer) or not request.keep_alive:
                    break
                await writer.drain()
        except (_Crashed, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _record(self, request: HttpRequest) -> None:
        try:
            parsed = json.loads(request.body) if request.body else None
        except ValueError:
            parsed = None
        record = RecordedRequest(
            request.method,
            request.path,
            request.query,
            dict(request.headers),
            parsed,
            request.body,
            time.time(),
        )
        with self._lock:
            self._requests.append(record)
            self._counters["requests"] += 1

    def _take_failure(self) -> int | None:
        """The status to fail this request with, if any (consuming one of fail_first_n)."""
        with self._lock:
            sw = self._switches
            if sw.status_override is not None:
                status: int | None = sw.status_override
            elif sw.fail_first_n > 0:
                self._switches = dataclasses.replace(sw, fail_first_n=sw.fail_first_n - 1)
                status = sw.fail_status
            else:
                return None
            self._counters["injected_failures"] += 1
            return status

    def _crash(self, writer: asyncio.StreamWriter, *, abort: bool) -> None:
        with self._lock:
            self._counters["crashes"] += 1
        if abort:
            writer.transport.abort()  # RST: the peer sees a reset, not an orderly end
        else:
            writer.close()
        raise _Crashed

    async def _handle(self, request: HttpRequest, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False closes the connection."""
        path = request.path
        if path.startswith("/_fake/"):
            return await self._control(request, writer)
        self._record(request)
        sw = self._switches
        on_v1 = path.startswith("/v1/")
        inference = request.method == "POST" and path in _INFERENCE_PATHS
        in_scope = {"inference": inference, "api": on_v1 or inference, "all": True}[sw.fault_scope]
        if in_scope:
            if sw.hang:
                await self._wait_until(lambda: not self._switches.hang)
                sw = self._switches
            if sw.crash_before_headers:
                self._crash(writer, abort=False)
            if sw.latency_ms:
                await asyncio.sleep(sw.latency_ms / 1000)
        keep = request.keep_alive
        style = sw.resolved_error_style(path)
        retry = [("Retry-After", _retry_after(sw.retry_after))] if sw.retry_after is not None else []

        def fail(status: int, message: str, headers: list[tuple[str, str]]) -> bool:
            write_response(
                writer, status, shapes.error_body(style, status, message), headers=headers, keep_alive=keep
            )
            return keep

        if sw.loading_503 and (path == "/health" or on_v1):
            with self._lock:
                self._counters["injected_failures"] += 1
            return fail(503, "Loading model", retry)
        if (
            sw.api_key is not None
            and on_v1
            and request.headers.get("authorization") != f"Bearer {sw.api_key}"
        ):
            return fail(401, "Invalid API key", [])
        if in_scope and (status := self._take_failure()) is not None:
            if sw.fail_body is None:
                return fail(status, f"fake backend: injected failure (HTTP {status})", retry)
            body = sw.fail_body if isinstance(sw.fail_body, str) else json.dumps(sw.fail_body)
            write_response(writer, status, body.encode(), headers=retry, keep_alive=keep)
            return keep
        if inference:
            with self._lock:
                self._inflight += 1
            try:
                return await self._inference(request, writer, sw, style, in_scope)
            finally:
                with self._lock:
                    self._inflight -= 1
        return self._probe(request, writer, sw, style)

    def _probe(self, request: HttpRequest, writer: asyncio.StreamWriter, sw: Switches, style: str) -> bool:
        keep, kind, path = request.keep_alive, sw.kind, request.path
        answer: tuple[int, bytes, str] | None = None
        if request.method in ("GET", "HEAD"):
            answer = self._probe_answer(kind, path, sw)
        if answer is None:
            body = (
                b'{"detail":"Not Found"}'
                if kind in _FASTAPI_KINDS
                else shapes.error_body(style, 404, "Not Found")
            )
            answer = (404, body, "application/json")
        status, body, content_type = answer
        write_response(writer, status, body, content_type=content_type, keep_alive=keep)
        return keep

    def _probe_answer(self, kind: str, path: str, sw: Switches) -> tuple[int, bytes, str] | None:
        json_type, text_type = "application/json", "text/plain; charset=utf-8"
        with self._lock:
            inflight = self._inflight
        if path == "/v1/models":
            return 200, shapes.models_body(kind, sw.models), json_type
        if path == "/health" and kind in ("vllm", "tei"):
            return 200, b"", json_type
        if path == "/health" and kind == "llamacpp":
            return 200, b'{"status":"ok"}', json_type
        if path == "/metrics":
            running = sw.num_requests_running if sw.num_requests_running is not None else inflight
            text = shapes.metrics_text(
                kind, sw.models[0], running, sw.num_requests_waiting, sw.kv_cache_usage
            )
            return None if text is None else (200, text, "text/plain; version=0.0.4; charset=utf-8")
        if path == "/slots" and kind == "llamacpp":
            busy = sw.slots_busy if sw.slots_busy is not None else inflight
            return 200, shapes.slots_body(sw.slots, min(busy, sw.slots)), json_type
        if kind == "ollama":
            if path == "/":
                return 200, b"Ollama is running", text_type
            if path == "/api/tags":
                return 200, shapes.ollama_tags_body(sw.models), json_type
            if path == "/api/version":
                return 200, b'{"version":"0.0.0-fake"}', json_type
        if kind == "tei" and path == "/info":
            info = {
                "model_id": sw.models[0],
                "model_dtype": "float32",
                "max_input_length": 512,
                "version": "fake",
            }
            return 200, json.dumps(info).encode(), json_type
        return None

    async def _inference(
        self, request: HttpRequest, writer: asyncio.StreamWriter, sw: Switches, style: str, in_scope: bool
    ) -> bool:
        keep = request.keep_alive

        def fail(status: int, message: str) -> bool:
            write_response(writer, status, shapes.error_body(style, status, message), keep_alive=keep)
            return keep

        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return fail(400, "The request body must be a JSON object.")
        model = body.get("model")
        if model in sw.models:
            served = str(model)
        elif model is not None and sw.resolved_unknown_model_404():
            return fail(404, shapes.unknown_model_message(style, str(model)))
        else:
            served = sw.models[0]  # llama.cpp-style: whatever was asked, the loaded model answers
        crash = sw.crash_after_chunks if in_scope else None
        rid, created = f"fake-{next(self._ids)}", int(time.time())
        path = request.path
        if path in ("/v1/embeddings", "/embed"):
            texts = shapes.embedding_inputs(body.get("input", body.get("inputs")))
            if texts is None:
                return fail(400, "input must be a string, a list of strings or token ids")
            if path == "/embed":
                vectors = [shapes.embed_vector(t, sw.embedding_dim) for t in texts]
                return await self._send(writer, json.dumps(vectors).encode(), keep, crash)
            payload = shapes.embeddings_body(served, texts, sw.embedding_dim, body.get("encoding_format"))
            return await self._send(writer, payload, keep, crash)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        options = body.get("stream_options")
        include_usage = (
            isinstance(options, dict) and options.get("include_usage") is True and sw.resolved_include_usage()
        )
        stream = body.get("stream") is True
        if path == "/v1/chat/completions":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return fail(400, "messages must be a non-empty list")
            text = sw.reply if sw.reply is not None else f"[{served}] {shapes.last_user_text(messages)}"
            parts, finish = shapes.reply_tokens(text, sw.tokens, max_tokens)
            prompt = shapes.prompt_tokens_of_messages(messages)
            if stream:
                events = shapes.chat_chunks(rid, created, served, parts, finish, prompt, include_usage)
                return await self._stream(writer, events, keep, crash, sw.token_delay_ms)
            return await self._send(
                writer, shapes.chat_body(rid, created, served, parts, finish, prompt), keep, crash
            )
        prompts = body.get("prompt")
        prompt_list = [prompts] if isinstance(prompts, str) else prompts
        if (
            not isinstance(prompt_list, list)
            or not prompt_list
            or not all(isinstance(p, str) for p in prompt_list)
        ):
            return fail(400, "prompt must be a string or a non-empty list of strings")
        texts = [sw.reply if sw.reply is not None else f"[{served}] {p}" for p in prompt_list]
        choices = [shapes.reply_tokens(t, sw.tokens, max_tokens) for t in texts]
        prompt = sum(shapes.word_count(p) for p in prompt_list)
        if stream:
            events = shapes.completion_chunks(rid, created, served, choices, prompt, include_usage)
            return await self._stream(writer, events, keep, crash, sw.token_delay_ms)
        return await self._send(
            writer, shapes.completion_body(rid, created, served, choices, prompt), keep, crash
        )

    async def _send(
        self, writer: asyncio.StreamWriter, payload: bytes, keep: bool, crash: int | None
    ) -> bool:
        if crash is None:
            write_response(writer, 200, payload, keep_alive=keep)
            return keep
        # A crash switch on a non-streamed answer: the headers and half the body, then the connection dies.
        head = response_head(
            200,
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
            keep_alive=keep,
        )
        writer.write(head + payload[: len(payload) // 2])
        await self._flushed(writer)
        self._crash(writer, abort=True)
        return False  # pragma: no cover - _crash raises

    @staticmethod
    async def _flushed(writer: asyncio.StreamWriter) -> None:
        """Wait until the kernel has what was written: abort() discards the transport's buffer."""
        await writer.drain()
        for _ in range(1000):
            if writer.transport.get_write_buffer_size() == 0:
                return
            await asyncio.sleep(0.001)

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        events: list[bytes],
        keep: bool,
        crash: int | None,
        delay_ms: float,
    ) -> bool:
        response = ChunkedResponse(writer)
        await response.start(200, "text/event-stream", [("Cache-Control", "no-cache")], keep_alive=keep)
        for i, event in enumerate(events):
            if crash is not None and i == crash:
                await self._flushed(writer)
                self._crash(writer, abort=True)
            if i and delay_ms:
                await asyncio.sleep(delay_ms / 1000)
            await response.send(event)
        await response.end()
        return keep

    # ------------------------------------------------------------------------------- control plane

    async def _control(self, request: HttpRequest, writer: asyncio.StreamWriter) -> bool:
        keep, route = request.keep_alive, (request.method, request.path)

        def answer(status: int, obj: Any) -> bool:
            write_response(writer, status, json.dumps(obj).encode(), keep_alive=keep)
            return keep

        if route == ("GET", "/_fake/config"):
            return answer(200, self._switches.public())
        if route == ("POST", "/_fake/config"):
            try:
                changes = json.loads(request.body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object of switches")
                old, new = self._update(changes)
            except (TypeError, ValueError) as exc:
                return answer(400, {"error": str(exc)})
            answer(200, new.public())
            await writer.drain()  # the answer leaves before a 'refuse' closes this connection
            await self._apply(old, new)
            return keep
        if route == ("GET", "/_fake/requests"):
            with self._lock:
                recorded = [r.to_dict() for r in self._requests]
            return answer(200, {"requests": recorded, "counters": self.counters})
        if route == ("POST", "/_fake/reset"):
            old, new = self._reset_state()
            answer(200, new.public())
            await writer.drain()
            await self._apply(old, new)
            return keep
        return answer(404, {"error": f"no control route {request.method} {request.path}"})


def _main() -> int:
    from aifabric.testing._fake_cli import main

    return main()


if __name__ == "__main__":
    raise SystemExit(_main())
