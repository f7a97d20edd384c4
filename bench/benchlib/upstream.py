"""The fast upstream every target forwards to, and the request bodies sent through them.

nginx answers with fixed bodies (`return 200 '...'`), which makes the upstream far faster than any
gateway on this machine, so what a figure shows is the gateway's own cost. Two nginx servers share
one process: the "json" port answers chat completions with a chat.completion object, the "sse"
port with a fixed stream of chat.completion.chunk events. Both answer embeddings, /health and
/v1/models (the gateway's health probes), and report no `model_path` (sglang-router would try to
fetch a tokenizer from a model hub for one).

Time to first token needs an upstream that sends chunks apart in time (a gateway that buffers
shows it only then): `sse_server.py` beside this module, started by `SlowStreamUpstream`.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVED_MODEL = "bench-model"
EMBED_MODEL = "bench-embed"
EMBED_DIM = 384
STREAM_CHUNKS = 8


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chat_completion_body() -> str:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1767225600,
            "model": SERVED_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "The capital of France is Paris."},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 24, "completion_tokens": 8, "total_tokens": 32},
        },
        separators=(",", ":"),
    )


def stream_chunk(index: int, content: str | None, finish: str | None = None) -> str:
    delta: dict[str, str] = {} if content is None else {"content": content}
    if index == 0:
        delta["role"] = "assistant"
    event = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": SERVED_MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return "data: " + json.dumps(event, separators=(",", ":")) + "\n\n"


def sse_body(chunks: int = STREAM_CHUNKS) -> str:
    """A whole chat stream: `chunks` content events, a finish event, a usage event and [DONE].

    The usage event is what vLLM sends last when a request asks for
    `stream_options.include_usage`, which aifabric asks of a vLLM backend for its usage ledger (and
    takes out of the client's stream unless the client asked too). Without it the ledger would count
    the tokens itself, which is what a backend that cannot report usage costs, not a vLLM one."""
    words = ["The", " capital", " of", " France", " is", " Paris", ".", " Indeed"]
    parts = [stream_chunk(i, words[i % len(words)]) for i in range(chunks)]
    parts.append(stream_chunk(chunks, None, "stop"))
    usage = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": SERVED_MODEL,
        "choices": [],
        "usage": {"prompt_tokens": 24, "completion_tokens": chunks, "total_tokens": 24 + chunks},
    }
    parts.append("data: " + json.dumps(usage, separators=(",", ":")) + "\n\n")
    parts.append("data: [DONE]\n\n")
    return "".join(parts)


def embeddings_body() -> str:
    # A realistic size (one 384-dim vector, like all-MiniLM-L6-v2), deterministic values.
    vector = [round(((i * 7919) % 2000 - 1000) / 10007, 6) for i in range(EMBED_DIM)]
    return json.dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": vector}],
            "model": EMBED_MODEL,
            "usage": {"prompt_tokens": 6, "total_tokens": 6},
        },
        separators=(",", ":"),
    )


def models_body() -> str:
    return json.dumps(
        {
            "object": "list",
            "data": [
                {"id": SERVED_MODEL, "object": "model", "created": 1767225600, "owned_by": "vllm"},
                {"id": EMBED_MODEL, "object": "model", "created": 1767225600, "owned_by": "vllm"},
            ],
        },
        separators=(",", ":"),
    )


def chat_request(model: str, stream: bool = False) -> str:
    """The client's request: a short chat, like most traffic a gateway sees."""
    body: dict[str, object] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "max_tokens": 16,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


def responses_request(model: str) -> str:
    """The same question as a streamed OpenAI Responses request (`/v1/responses`)."""
    body = {
        "model": model,
        "instructions": "You are a concise assistant.",
        "input": "What is the capital of France?",
        "max_output_tokens": 16,
        "temperature": 0,
        "stream": True,
    }
    return json.dumps(body, separators=(",", ":"))


def messages_request(model: str) -> str:
    """The same question as a streamed Anthropic Messages request (`/v1/messages`)."""
    body = {
        "model": model,
        "system": "You are a concise assistant.",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 16,
        "temperature": 0,
        "stream": True,
    }
    return json.dumps(body, separators=(",", ":"))


def embeddings_request(model: str) -> str:
    return json.dumps({"model": model, "input": "The quick brown fox jumps over the lazy dog."})


def _nginx_quote(text: str) -> str:
    """A single-quoted nginx string. `$` would start a variable, so bodies must not contain it."""
    if "$" in text:
        raise ValueError("nginx fixed bodies cannot contain '$'")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def nginx_config(workdir: Path, json_port: int, sse_port: int, workers: int = 1) -> str:
    common = f"""
        location = /health {{ return 200 ''; }}
        location = /v1/models {{ default_type application/json; return 200 {_nginx_quote(models_body())}; }}
        location = /v1/embeddings {{
            default_type application/json; return 200 {_nginx_quote(embeddings_body())};
        }}
        location / {{ default_type application/json; return 404 '{{"error":"not found"}}'; }}
    """
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes {workers};
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{json_port} reuseport backlog=4096;
        location = /v1/chat/completions {{
            default_type application/json; return 200 {_nginx_quote(chat_completion_body())};
        }}
        {common}
    }}
    server {{
        listen 127.0.0.1:{sse_port} reuseport backlog=4096;
        location = /v1/chat/completions {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            return 200 {_nginx_quote(sse_body())};
        }}
        {common}
    }}
}}
"""


def http_get_status(port: int, path: str, timeout: float = 1.0) -> int:
    """Status of GET http://127.0.0.1:port/path, or 0 when nothing answers (never via a proxy)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return 0
    finally:
        conn.close()


def wait_for_status(port: int, path: str, deadline_s: float, want: int = 200) -> float | None:
    """Seconds until GET path answers `want` (polled every 10 ms), or None past the deadline."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if http_get_status(port, path, timeout=0.5) == want:
            return time.monotonic() - start
        time.sleep(0.01)
    return None


class NginxUpstream:
    """nginx with the fixed bodies, on two loopback ports, in a private temp dir."""

    def __init__(self, workers: int = 1) -> None:
        if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        self.workers = workers
        self.json_port = free_port()
        self.sse_port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="aifabric-nginx-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NginxUpstream:
        workdir = Path(self._tmp.name)
        conf = workdir / "nginx.conf"
        conf.write_text(nginx_config(workdir, self.json_port, self.sse_port, self.workers))
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen(
            [exe, "-p", str(workdir), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in (self.json_port, self.sse_port):
            if wait_for_status(port, "/health", 10.0) is None:
                self.stop()
                log = workdir / "error.log"
                raise RuntimeError(f"nginx did not start: {log.read_text() if log.exists() else ''}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown of master and workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._tmp.cleanup()

    def __enter__(self) -> NginxUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SlowStreamUpstream:
    """`sse_server.py`: chat streams whose chunks are `interval_ms` apart (for time to first token)."""

    def __init__(self, chunks: int = STREAM_CHUNKS, interval_ms: float = 2.0) -> None:
        self.port = free_port()
        self.chunks = chunks
        self.interval_ms = interval_ms
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SlowStreamUpstream:
        script = Path(__file__).with_name("sse_server.py")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                "--port",
                str(self.port),
                "--chunks",
                str(self.chunks),
                "--interval-ms",
                str(self.interval_ms),
            ],
        )
        if wait_for_status(self.port, "/health", 10.0) is None:
            self.stop()
            raise RuntimeError("the slow stream upstream did not start")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> SlowStreamUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
