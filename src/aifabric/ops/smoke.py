"""The runbook's smoke test as code: every role and alias of a running gateway, answered for real.

For each name `/v1/models` lists: a chat role gets a short chat completion, an embeddings role an
embedding, a rerank role a two-document rerank, a transcription role a tenth of a second of silence;
an alias is checked to reach the same role. Each check records what served it (the
gateway's `x-aifabric-*` headers), how long it took, and on failure the gateway's own error message.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import asdict, dataclass

import orjson

from aifabric.errors import UpstreamFailure
from aifabric.http.client import UpstreamClient

__all__ = ["SmokeCheck", "SmokeReport", "run_smoke"]


@dataclass
class SmokeCheck:
    name: str
    kind: str
    ok: bool
    detail: str
    status: int | None = None
    backend: str | None = None
    role: str | None = None
    seconds: float = 0.0


@dataclass
class SmokeReport:
    gateway: str
    checks: list[SmokeCheck]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, object]:
        return {"gateway": self.gateway, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


async def _call(
    client: UpstreamClient,
    url: str,
    headers: list[tuple[str, str]],
    body: dict[str, object] | None,
    timeout: float,
) -> tuple[int, dict[str, str], bytes]:
    method = "GET" if body is None else "POST"
    payload = b"" if body is None else orjson.dumps(body)
    all_headers = [*headers, ("content-type", "application/json")] if body is not None else headers
    return await client.fetch(method, url, all_headers, payload, timeout=timeout)


def _error_message(body: bytes) -> str:
    try:
        err = orjson.loads(body)["error"]
        return str(err.get("message") if isinstance(err, dict) else err)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


def _silence_upload(name: str) -> tuple[bytes, str]:
    """A multipart transcription request: `model` and a 0.1 s silent 16 kHz mono WAV."""
    samples = b"\x00\x00" * 1600
    wav = (
        b"RIFF"
        + struct.pack("<I", 36 + len(samples))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
        + b"data"
        + struct.pack("<I", len(samples))
        + samples
    )
    boundary = "aifabric-smoke-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{name}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="silence.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + wav
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


async def _check(
    client: UpstreamClient, base: str, headers: list[tuple[str, str]], name: str, kind: str, timeout: float
) -> SmokeCheck:
    body: dict[str, object]
    if kind == "embeddings":
        path, body = "/v1/embeddings", {"model": name, "input": "test"}
    elif kind == "rerank":
        path, body = "/v1/rerank", {"model": name, "query": "test", "documents": ["a test", "other"]}
    else:
        body = {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
        path = "/v1/chat/completions"
    started = time.monotonic()
    try:
        if kind == "transcription":
            upload, content_type = _silence_upload(name)
            status, resp_headers, data = await client.fetch(
                "POST",
                base + "/v1/audio/transcriptions",
                [*headers, ("content-type", content_type)],
                upload,
                timeout=timeout,
            )
        else:
            status, resp_headers, data = await _call(client, base + path, headers, body, timeout)
    except UpstreamFailure as exc:
        return SmokeCheck(
            name, kind, False, f"gateway unreachable: {exc.detail}", seconds=time.monotonic() - started
        )
    seconds = time.monotonic() - started
    check = SmokeCheck(
        name,
        kind,
        False,
        "",
        status,
        resp_headers.get("x-aifabric-backend"),
        resp_headers.get("x-aifabric-role"),
        round(seconds, 3),
    )
    if status != 200:
        check.detail = f"HTTP {status}: {_error_message(data)}"
        return check
    try:
        doc = orjson.loads(data)
        if kind == "rerank":
            results = doc["results"]
            check.ok = len(results) == 2 and all(isinstance(r["relevance_score"], float) for r in results)
            check.detail = f"{len(results)} documents ranked" if check.ok else "incomplete ranking"
        elif kind == "transcription":
            check.ok = isinstance(doc["text"], str)  # silence: any text, even none, proves the route
            check.detail = f"transcribed silence as {doc['text'][:40]!r}"
        elif kind == "embeddings":
            vector = doc["data"][0]["embedding"]
            check.ok = isinstance(vector, list) and len(vector) > 0
            check.detail = f"{len(vector)}-dim embedding" if check.ok else "empty embedding"
        else:
            text = doc["choices"][0]["message"]["content"] or ""
            check.ok = bool(text.strip())
            check.detail = repr(text[:60]) if check.ok else "empty reply"
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        check.detail = f"unexpected response shape ({type(exc).__name__}: {exc})"
    return check


async def run_smoke(base_url: str, *, api_key: str | None = None, timeout: float = 60.0) -> SmokeReport:
    """Check every model the gateway at `base_url` lists. Never raises for a failed check."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    headers = [("authorization", f"Bearer {api_key}")] if api_key else []
    client = UpstreamClient()
    report = SmokeReport(base, [])
    try:
        try:
            status, _, data = await _call(client, base + "/v1/models", headers, None, timeout)
        except UpstreamFailure as exc:
            report.checks.append(
                SmokeCheck("/v1/models", "models", False, f"gateway unreachable: {exc.detail}")
            )
            return report
        if status != 200:
            report.checks.append(
                SmokeCheck("/v1/models", "models", False, f"HTTP {status}: {_error_message(data)}", status)
            )
            return report
        models = orjson.loads(data)["data"]
        report.checks.append(SmokeCheck("/v1/models", "models", True, f"{len(models)} models listed", status))
        # One request at a time: a small CPU estate answers one by one anyway, and timings stay readable.
        for model in models:
            kind = str(model.get("kind", "chat"))
            report.checks.append(await _check(client, base, headers, str(model["id"]), kind, timeout))
        return report
    finally:
        await client.aclose()


def smoke(base_url: str, *, api_key: str | None = None, timeout: float = 60.0) -> SmokeReport:
    return asyncio.run(run_smoke(base_url, api_key=api_key, timeout=timeout))
