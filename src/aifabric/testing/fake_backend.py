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
import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aifabric.testing import _fake_cli
from aifabric.testing._fake_http import BadRequest, HttpRequest, read_request, write_response
from aifabric.testing._fake_responder import Crashed, Responder
from aifabric.testing._fake_state import FakeState, RecordedRequest
from aifabric.testing._fake_switches import KINDS, Switches, updated

__all__ = ["KINDS", "FakeBackend", "RecordedRequest", "Switches"]

_log = logging.getLogger(__name__)


class FakeBackend:
    """A fake OpenAI-compatible backend. Thread-safe: switches may be flipped from any thread."""

    def __init__(
        self,
        kind: str = "vllm",
        models: tuple[str, ...] | list[str] | str = ("m",),
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        unix_socket: str | None = None,
        **switches: Any,
    ) -> None:
        self._state = FakeState(updated(Switches(), {"kind": kind, "models": models, **switches}))
        self._responder = Responder(self._state, self._wait_until)
        self._host = host
        self._port = port
        # Listen on this Unix socket instead of the port (which is still chosen: it names the url that
        # a fabric file's backend keeps beside its `unix_socket`).
        self.unix_socket = unix_socket
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
        """The switches in force now (`fail_first_n` counts down as failures are served)."""
        return self._state.switches

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since the last clear, oldest first (a copy)."""
        return self._state.requests()

    @property
    def counters(self) -> dict[str, int]:
        """requests, connections, injected_failures, crashes (since the last reset) and inflight now."""
        return self._state.counters()

    def count(self, path: str | None = None) -> int:
        """How many requests were received (to `path`, if given)."""
        return sum(1 for r in self._state.requests() if path is None or r.path == path)

    def wait_for_requests(
        self, n: int, path: str | None = None, timeout: float = 10.0
    ) -> list[RecordedRequest]:
        """Block until `n` requests (to `path`, if given) have arrived and return them; TimeoutError if not.
        For a test thread: in astart mode it would block the loop that serves the requests."""
        return self._state.wait_for_requests(n, path, timeout)

    def clear_requests(self) -> None:
        self._state.clear_requests()

    def set(self, **changes: Any) -> None:
        """Change switches now. When it returns from another thread, the change is in force (a `loading=
        "refuse"` listener is closed). Unknown names raise TypeError, bad values ValueError."""
        self._after_change(*self._state.update(changes))

    async def aset(self, **changes: Any) -> None:
        """`set` for callers on the backend's own event loop (astart mode): awaits the change."""
        old, new = self._state.update(changes)
        if self._running:
            await self._apply(old, new)

    def reset(self) -> None:
        """Back to the construction-time switches; requests and counters cleared."""
        self._after_change(*self._state.reset())

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
        sw = self._state.switches
        return f"FakeBackend({sw.kind}, {list(sw.models)}, {where})"

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
        want_open = self._running and not self._state.switches.refuse
        if want_open and self._server is None and self.unix_socket:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_socket)
            self._server = await asyncio.start_unix_server(
                self._on_connection, self.unix_socket, limit=1 << 20
            )
        elif want_open and self._server is None:
            self._server = await asyncio.start_server(
                self._on_connection, self._host, self._port, reuse_address=True, limit=1 << 20
            )
        elif not want_open and self._server is not None:
            server, self._server = self._server, None
            # Stop accepting first and let the connections asyncio already accepted get their transports:
            # on Python 3.11 a transport created after Server.close() fails an assertion half-built and
            # its socket leaks. They reach `_on_connection`, which closes them.
            loop = asyncio.get_running_loop()
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
            await asyncio.sleep(0)
            server.close()  # the listening socket is closed now: connects are refused
            if self.unix_socket:  # and a socket file is gone, as when its server stops
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.unix_socket)
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
        sw = self._state.switches
        if sw.loading and sw.loading_ms is not None and self._loop is not None:
            self._loading_timer = self._loop.call_later(sw.loading_ms / 1000, self._loading_done)

    def _loading_done(self) -> None:
        self._loading_timer = None
        old, new = self._state.update({"loading": False, "loading_ms": None})
        self._after_change(old, new)

    async def _wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready() and self._changed is not None:
            await self._changed.wait()

    # ------------------------------------------------------------------------------ HTTP handling

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Our own task rather than asyncio's: asyncio logs an error for a cancelled callback task, and stop()
        # cancels the handlers of requests that hang. The writer is tracked here, not in the task: a task
        # cancelled by stop() before it first runs never reaches its `finally`, and its socket would leak.
        if self._server is None:
            # Accepted by asyncio just before the listener closed: the server is "dead", so is this.
            writer.transport.abort()
            return
        self._writers.add(writer)
        task = asyncio.get_running_loop().create_task(self._serve_connection(reader, writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._state.bump("connections")
        try:
            while True:
                idle = self._state.switches.idle_timeout_ms
                try:
                    if idle is None:
                        request = await read_request(reader, writer)
                    else:  # like uvicorn's keep-alive timeout: an idle connection is closed by the server
                        request = await asyncio.wait_for(read_request(reader, writer), idle / 1000)
                except TimeoutError:
                    break
                except BadRequest as exc:
                    write_response(writer, exc.status, b"", keep_alive=False)
                    break
                if request is None:
                    break
                if request.path.startswith("/_fake/"):
                    keep = await self._control(request, writer)
                else:
                    keep = await self._responder.handle(request, writer)
                if not keep or not request.keep_alive:
                    break
                await writer.drain()
        except (Crashed, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug in the fake: say so loudly, never leave the client hanging
            _log.exception("fake backend failed on a request; closing the connection")
        finally:
            self._writers.discard(writer)
            writer.close()

    # ------------------------------------------------------------------------------- control plane

    async def _control(self, request: HttpRequest, writer: asyncio.StreamWriter) -> bool:
        keep, route = request.keep_alive, (request.method, request.path)

        def answer(status: int, obj: Any) -> bool:
            write_response(writer, status, json.dumps(obj).encode(), keep_alive=keep)
            return keep

        if route == ("GET", "/_fake/config"):
            return answer(200, self._state.switches.public())
        if route == ("POST", "/_fake/config"):
            try:
                changes = json.loads(request.body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object of switches")
                old, new = self._state.update(changes)
            except (TypeError, ValueError) as exc:
                return answer(400, {"error": str(exc)})
            answer(200, new.public())
            await writer.drain()  # the answer leaves before a 'refuse' closes this connection
            await self._apply(old, new)
            return keep
        if route == ("GET", "/_fake/requests"):
            recorded = [r.to_dict() for r in self._state.requests()]
            return answer(200, {"requests": recorded, "counters": self.counters})
        if route == ("POST", "/_fake/reset"):
            old, new = self._state.reset()
            answer(200, new.public())
            await writer.drain()
            await self._apply(old, new)
            return keep
        return answer(404, {"error": f"no control route {request.method} {request.path}"})


def _main() -> int:
    return _fake_cli.main(FakeBackend)


if __name__ == "__main__":
    raise SystemExit(_main())
