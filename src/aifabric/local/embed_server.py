"""A small OpenAI-compatible embeddings server: `python -m aifabric.local.embed_server --port P --model NAME`.

Routes: `POST /v1/embeddings` (input: a string or a list of strings; `encoding_format` float or base64),
`GET /v1/models`, `GET /health` (503 while the model loads, 200 when ready, with `batches`: the model
runs so far and the inputs they carried; inputs/runs is the mean batch). Errors are OpenAI-shaped.

It is served by the gateway's own HTTP stack (aifabric.http.server: asyncio + httptools, TCP_NODELAY,
a listen backlog of 2048), not the stdlib's http.server, which here cost ~40 ms per keep-alive request
(headers and body written separately meet the client's delayed ACK) and reset connections beyond its
backlog of 5. Requests are coalesced by an EmbedBatcher (aifabric.local.batcher) into one ONNX run;
when its queue is full a request is answered 503 with Retry-After, never a reset connection.

It listens before it loads, so a supervisor sees "loading" (503) rather than "connection refused", and
it exits non-zero if the model cannot be loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import signal
import sys
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from aifabric.errors import FabricError
from aifabric.http.server import HttpServer, Request, Response
from aifabric.local.batcher import BatchPolicy, EmbedBatcher, QueueFull
from aifabric.local.cores import default_threads
from aifabric.local.embedder import Embedder
from aifabric.local.models import resolve_model

__all__ = ["EmbedServer", "main"]

MAX_BODY = 16 * 1024 * 1024
MAX_INPUTS = 2048  # OpenAI's own limit on inputs per request
RETRY_AFTER = "1"  # seconds, on 503 (loading, queue full): the model loads in ~2 s, a run takes < 1 s


class _ApiProblem(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
        retry_after: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        self.retry_after = retry_after


def _bad(message: str, param: str | None = None, code: str | None = None) -> _ApiProblem:
    return _ApiProblem(400, message, type="invalid_request_error", param=param, code=code)


def _json(status: int, body: object, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), headers or [])


def _error_response(status: int, message: str, path: str = "") -> Response:
    """What the HTTP layer answers by itself (malformed request, body over the limit), OpenAI-shaped."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return _json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})


class EmbedServer:
    """The server: `start()` listens, `load()` (blocking: run it in a thread) loads the model,
    `close()` stops both."""

    def __init__(
        self,
        *,
        model: str,
        tokenizer: str | None = None,
        threads: int | None = None,
        policy: BatchPolicy | None = None,
    ) -> None:
        self.model_name = model
        self.tokenizer = tokenizer
        self.threads = threads
        self.policy = policy or BatchPolicy()
        self.embedder: Embedder | None = None
        self.batcher: EmbedBatcher | None = None
        self.load_error: str | None = None
        self.created = int(time.time())
        self._http: HttpServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._models = orjson.dumps(
            {
                "object": "list",
                "data": [{"id": model, "object": "model", "created": self.created, "owned_by": "aifabric"}],
            }
        )

    async def start(self, host: str = "127.0.0.1", port: int = 0, unix_socket: str | None = None) -> int:
        """Listen, on `unix_socket` too when given (the gateway's way in); the port (useful with 0)."""
        self._loop = asyncio.get_running_loop()
        self._http = HttpServer(self.handle, max_body_bytes=MAX_BODY, error_factory=_error_response)
        await self._http.start(host, port)
        if unix_socket:
            await self._http.listen_unix(unix_socket)
        return self._http.port

    def load(self) -> bool:
        """Load the model (blocking). False, with `load_error` set, when it cannot be loaded."""
        assert self._loop is not None, "start() first"
        try:
            resolved = resolve_model(self.model_name, "aifabric-embed", tokenizer=self.tokenizer)
            assert resolved.tokenizer is not None
            started = time.monotonic()
            embedder = Embedder(resolved.path, resolved.tokenizer, threads=self.threads)
            print(
                f"loaded {self.model_name} ({resolved.path}, {embedder.dimensions} dimensions) "
                f"in {time.monotonic() - started:.2f} s",
                file=sys.stderr,
                flush=True,
            )
        except (FabricError, OSError, RuntimeError, ValueError) as exc:
            self.load_error = str(exc)
            print(f"cannot load {self.model_name}: {exc}", file=sys.stderr, flush=True)
            return False
        # The batcher before the embedder: a request that sees the embedder finds the batcher too.
        self.batcher = EmbedBatcher(embedder.run, self._loop, self.policy)
        self.embedder = embedder
        return True

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close(grace=5.0)
        if self.batcher is not None:
            self.batcher.close()

    # -- requests ---------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        try:
            if request.method in ("GET", "HEAD"):
                if path == "/health":
                    if self.embedder is None:
                        return _json(503, {"status": "loading"}, [("retry-after", RETRY_AFTER)])
                    batcher = self.batcher
                    assert batcher is not None  # set before the embedder (see load)
                    runs = {"runs": batcher.runs, "inputs": batcher.inputs}
                    return _json(200, {"status": "ok", "model": self.model_name, "batches": runs})
                if path in ("/v1/models", "/models"):
                    return Response(200, self._models)
            elif request.method == "POST" and path in ("/v1/embeddings", "/embeddings"):
                return _json(200, await self._embeddings(_read_json(request.body)))
            raise _ApiProblem(404, f"no route {request.method} {path}", type="invalid_request_error")
        except _ApiProblem as problem:
            headers = [("retry-after", problem.retry_after)] if problem.retry_after else []
            return _json(problem.status, problem.body, headers)

    async def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        embedder, batcher = self.embedder, self.batcher
        if embedder is None or batcher is None:
            raise _ApiProblem(
                503,
                "the model is still loading; retry shortly",
                type="service_unavailable",
                code="model_loading",
                retry_after=RETRY_AFTER,
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _bad("you must provide a model parameter", param="model")
        if model != self.model_name:
            raise _ApiProblem(
                404,
                f"the model {model!r} does not exist; this server serves {self.model_name!r}",
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
        try:
            vectors, tokens = await batcher.submit(texts)
        except QueueFull as exc:
            raise _ApiProblem(
                503, str(exc), type="service_unavailable", code="queue_full", retry_after=RETRY_AFTER
            ) from None
        except Exception as exc:  # the model failed on this request's inputs (and only on them)
            raise _ApiProblem(
                500, f"embedding failed: {exc}", type="server_error", code="embedding_failed"
            ) from None
        return {
            "object": "list",
            "data": _data(vectors, base64_format=fmt == "base64"),
            "model": self.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _data(vectors: npt.NDArray[np.float32], *, base64_format: bool) -> list[dict[str, Any]]:
    if base64_format:
        raw = vectors.astype("<f4", copy=False)
        return [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(row.tobytes()).decode()}
            for i, row in enumerate(raw)
        ]
    return [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(vectors)]


def _read_json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    return body


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


async def _serve(args: argparse.Namespace) -> int:
    threads = args.threads or default_threads()
    runners = args.runners or (2 if threads >= 2 else 1)
    policy = BatchPolicy(
        max_batch=args.max_batch,
        max_wait=args.max_wait_ms / 1000.0,
        max_queue=args.max_queue,
        runners=runners,
    )
    # Each run on its share of the cores: on 2 cores, 2 runners of 1 thread each did 596-628/s where
    # one run of 2 threads at a time did 512-528/s (a lone sentence: 6.3 ms, not 5.0-5.7; docs/local.md).
    per_run = max(1, threads // runners)
    server = EmbedServer(model=args.model, tokenizer=args.tokenizer, threads=per_run, policy=policy)
    try:
        await server.start(args.host, args.port, args.unix_socket)
    except OSError as exc:  # its port taken, its socket's directory unusable: said, not a traceback
        print(f"cannot listen: {exc}", file=sys.stderr, flush=True)
        await server.close()
        return 1
    where = f"http://{args.host}:{args.port}" + (f" and unix:{args.unix_socket}" if args.unix_socket else "")
    print(f"listening on {where} (loading {args.model})", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def load() -> None:
        if not await loop.run_in_executor(None, server.load):
            stop.set()  # it exits 1, with the reason on stderr

    loader = asyncio.create_task(load())
    await stop.wait()
    await server.close()
    loader.cancel()
    return 1 if server.load_error else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aifabric.local.embed_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--unix-socket", metavar="PATH", help="also listen on this Unix socket (what the gateway uses)"
    )
    parser.add_argument("--model", required=True, help="a bundled model name or a path to a model.onnx")
    parser.add_argument("--tokenizer", help="tokenizer.json for a --model given as a path")
    parser.add_argument(
        "--threads", type=int, help="cores for the model, shared by the runners (default: every core)"
    )
    parser.add_argument(
        "--runners",
        type=int,
        help="model runs at once, each on threads/runners cores (default: 2 with 2 threads or more)",
    )
    defaults = BatchPolicy()
    parser.add_argument(
        "--max-batch", type=int, default=defaults.max_batch, help="inputs per model run, across requests"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=defaults.max_wait * 1000,
        help="how long a run that is not full waits for more requests",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="inputs waiting before requests are answered 503 with Retry-After",
    )
    args = parser.parse_args(argv)
    for name in ("max_batch", "max_queue", "threads", "runners"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_wait_ms < 0:
        parser.error("--max-wait-ms must not be negative")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(_serve(args))
    return uvloop.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
