"""A stand-in gateway for the page's failure paths: it serves the real page files, and for /status and
/alerts whatever a test scripts (a JSON answer, a status code, or a dropped connection).

The real gateway cannot be made to drop its /status mid-session, nor to serve alerts before alerting
exists; this can. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aifabric.gateway.ui import UI_PATHS, ui_response

DROP = object()  # close the connection without an answer: "gateway unreachable"

Answer = Any  # a JSON-ready value, an int (status, empty body) or DROP
Script = Callable[[int], Answer]  # call number (1, 2, ...) -> answer


class StubGateway:
    def __init__(self, status: Script, alerts: Script | None = None) -> None:
        self.scripts = {"/status": status, "/alerts": alerts or (lambda n: 404)}
        self.calls = {"/status": 0, "/alerts": 0}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path in UI_PATHS:
                    page = ui_response(self.path)
                    self._send(page.status, page.body, page.content_type, page.headers)
                    return
                script = stub.scripts.get(self.path)
                if script is None:
                    self._send(404, b'{"error": "not found"}', "application/json", [])
                    return
                stub.calls[self.path] += 1
                answer = script(stub.calls[self.path])
                if answer is DROP:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif isinstance(answer, int):
                    self._send(answer, b"{}", "application/json", [])
                else:
                    self._send(200, json.dumps(answer).encode(), "application/json", [])

            def _send(self, status: int, body: bytes, ctype: str, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet tests

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StubGateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def minimal_status(**overrides: Any) -> dict[str, Any]:
    """A /status answer with one backend up and one role, as the real gateway shapes it."""
    view: dict[str, Any] = {
        "status": "ok",
        "exit_code": 0,
        "counts": {"up": 1},
        "backends": {
            "gpu": {
                "name": "gpu",
                "host": None,
                "always_on": True,
                "kind": "vllm",
                "url": "http://127.0.0.1:9/v1",
                "models": [{"configured": "m1", "served": True}],
                "state": "up",
                "reason": "serving",
                "for_seconds": 12.0,
                "probe_latency_ms": 1.5,
                "served_models": ["m1"],
                "mismatches": [],
                "load": {},
                "failure": None,
                "status": "ok",
            }
        },
        "gateway": {
            "source": "stub.yaml",
            "name": "stub.yaml",
            "auth_required": False,
            "workers": 1,
            "pid": 1,
        },
        "roles": {},
        "aliases": {},
        "requests": {"total": 0, "errors": 0, "by_role": {}, "by_status": {}, "workers": 1},
    }
    view.update(overrides)
    return view
