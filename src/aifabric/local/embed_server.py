"""A small OpenAI-compatible embeddings server: `python -m aifabric.local.embed_server --port P --model NAME`.

Routes: `POST /v1/embeddings` (input: a string or a list of strings; `encoding_format` float or base64),
`GET /v1/models`, `GET /health` (503 while the model loads, 200 when ready). Errors are OpenAI-shaped.

It listens before it loads, so a supervisor sees "loading" (503) rather than "connection refused", and
it exits non-zero if the model cannot be loaded. The stdlib ThreadingHTTPServer is enough: the work is
one CPU-bound ONNX run per request, serialized by the embedder; HTTP parsing is not the cost here.
"""

from __future__ import annotations

import argparse
import base64
import signal
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from aifabric.errors import FabricError
from aifabric.local.embedder import Embedder
from aifabric.local.models import resolve_model

__all__ = ["EmbedServer", "main"]

MAX_BODY = 16 * 1024 * 1024
MAX_INPUTS = 2048  # OpenAI's own limit on inputs per request


class _ApiProblem(Exception):
    def __init__(
        self, status: int, message: str, *, type: str, code: str | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}


def _bad(message: str, param: str | None = None, code: str | None = None) -> _ApiProblem:
    return _ApiProblem(400, message, type="invalid_request_error", param=param, code=code)


class EmbedServer(ThreadingHTTPServer):
    """The HTTP server; the model is loaded by `load()` (normally in a background thread)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, host: str, port: int, *, model: str, tokenizer: str | None, threads: int | None
    ) -> None:
        super().__init__((host, port), _Handler)
        self.model_name = model
        self.tokenizer = tokenizer
        self.threads = threads
        self.embedder: Embedder | None = None
        self.load_error: str | None = None
        self.created = int(time.time())

    def load(self) -> None:
        try:
            resolved = resolve_model(self.model_name, "aifabric-embed", tokenizer=self.tokenizer)
            assert resolved.tokenizer is not None
            started = time.monotonic()
            self.embedder = Embedder(resolved.path, resolved.tokenizer, threads=self.threads)
            print(
                f"loaded {self.model_name} ({resolved.path}, {self.embedder.dimensions} dimensions) "
                f"in {time.monotonic() - started:.2f} s",
                file=sys.stderr,
                flush=True,
            )
        except (FabricError, OSError, RuntimeError, ValueError) as exc:
            self.load_error = str(exc)
            print(f"cannot load {self.model_name}: {exc}", file=sys.stderr, flush=True)
            threading.Thread(target=self.shutdown, daemon=True).start()


class _Handler(BaseHTTPRequestHandler):
    server: EmbedServer
    protocol_version = "HTTP/1.1"  # keep-alive: the gateway reuses its connections

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            if self.server.embedder is None:
                self._send(503, {"status": "loading"}, headers={"Retry-After": "1"})
            else:
                self._send(200, {"status": "ok", "model": self.server.model_name})
        elif path in ("/v1/models", "/models"):
            model = {"id": self.server.model_name, "object": "model", "created": self.server.created}
            self._send(200, {"object": "list", "data": [{**model, "owned_by": "aifabric"}]})
        else:
            self._problem(_ApiProblem(404, f"no route GET {path}", type="invalid_request_error"))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path not in ("/v1/embeddings", "/embeddings"):
                raise _ApiProblem(404, f"no route POST {path}", type="invalid_request_error")
            self._send(200, self._embeddings(self._read_json()))
        except _ApiProblem as problem:
            self._problem(problem)

    def _read_json(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _bad("invalid Content-Length header") from None
        if length > MAX_BODY:
            self.close_connection = True  # the unread body would be taken for the next request
            raise _ApiProblem(413, f"request body over {MAX_BODY} bytes", type="invalid_request_error")
        try:
            body = orjson.loads(self.rfile.read(length))
        except orjson.JSONDecodeError as exc:
            raise _bad(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _bad("the request body must be a JSON object")
        return body

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        embedder = self.server.embedder
        if embedder is None:
            raise _ApiProblem(
                503,
                "the model is still loading; retry shortly",
                type="service_unavailable",
                code="model_loading",
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _bad("you must provide a model parameter", param="model")
        if model != self.server.model_name:
            raise _ApiProblem(
                404,
                f"the model {model!r} does not exist; this server serves {self.server.model_name!r}",
                type="invalid_request_error",
                param="model",
                code="model_not_found",
            )
        texts = _inputs(body.get("input"))
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _bad(f"encoding_format must be 'float' or 'base64', not {fmt!r}", param="encoding_format")
        dims = body.get("dimensions")
        if dims is not None and dims != embedder.dimensions:
            raise _bad(
                f"this model has {embedder.dimensions} dimensions and cannot be shortened to {dims!r}",
                param="dimensions",
            )
        result = embedder.embed(texts)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(vec.astype("<f4").tobytes()).decode()
                if fmt == "base64"
                else vec,
            }
            for i, vec in enumerate(result.vectors)
        ]
        usage = {"prompt_tokens": result.tokens, "total_tokens": result.tokens}
        return {"object": "list", "data": data, "model": self.server.model_name, "usage": usage}

    def _problem(self, problem: _ApiProblem) -> None:
        self._send(problem.status, problem.body)

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        payload = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _inputs(value: object) -> list[str]:
    """OpenAI's `input`: a string or a list of strings. Token arrays are not served here."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            if len(value) > MAX_INPUTS:
                raise _bad(f"at most {MAX_INPUTS} inputs per request, got {len(value)}", param="input")
            return value
        if all(isinstance(v, (int, list)) for v in value):
            raise _bad(
                "token arrays as input are not supported by this server; send strings",
                param="input",
                code="unsupported_input",
            )
    if value is None:
        raise _bad("you must provide an input parameter", param="input")
    raise _bad("input must be a non-empty string or a non-empty list of strings", param="input")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aifabric.local.embed_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True, help="a bundled model name or a path to a model.onnx")
    parser.add_argument("--tokenizer", help="tokenizer.json for a --model given as a path")
    parser.add_argument("--threads", type=int, help="ONNX intra-op threads (default: onnxruntime's choice)")
    args = parser.parse_args(argv)

    server = EmbedServer(
        args.host, args.port, model=args.model, tokenizer=args.tokenizer, threads=args.threads
    )
    # SIGTERM ends serve_forever cleanly; shutdown() must not run on the serving thread itself.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"listening on http://{args.host}:{args.port} (loading {args.model})", file=sys.stderr, flush=True)
    threading.Thread(target=server.load, name="load-model", daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 1 if server.load_error else 0


if __name__ == "__main__":
    sys.exit(main())
