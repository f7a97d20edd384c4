"""Rerank (`/v1/rerank`, `/rerank`, `/v1/score`) and transcription through the gateway: one answer shape
whatever the backend's dialect (vLLM, llama-server, TEI), with failover between them."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from aifabric.observability.logging import JsonFormatter
from aifabric.testing.fake_backend import FakeBackend

sys.path.insert(0, str(Path(__file__).parents[1] / "responses"))
from openai_schema import assert_valid

Start = Callable[..., Any]


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeBackend]]:
    backends = {
        "vllm": FakeBackend(kind="vllm", models=("bge-reranker", "whisper-large")).start(),
        "llama": FakeBackend(kind="llamacpp", models=("bge-reranker",)).start(),
        "tei": FakeBackend(kind="tei", models=("BAAI/bge-reranker-base",)).start(),
        "cloud": FakeBackend(kind="openai", models=("whisper-1",)).start(),
    }
    yield backends
    for backend in backends.values():
        backend.stop()


def fabric(f: dict[str, FakeBackend]) -> str:
    return f"""
retry: {{backoff_base: 10ms, backoff_max: 10ms}}
backends:
  vllm: {{kind: vllm, url: "{f["vllm"].url}"}}
  llama: {{kind: llamacpp, url: "{f["llama"].url}"}}
  tei: {{kind: tei, url: "{f["tei"].url}"}}
  # OpenAI's own API serves transcription: the fake stands on loopback, so `apis:` says so.
  cloud: {{kind: openai, url: "{f["cloud"].url}", apis: [responses, input_tokens, transcription]}}
roles:
  rerank-vllm: {{kind: rerank, targets: [{{backend: vllm, model: bge-reranker}}]}}
  rerank-llama: {{kind: rerank, targets: [{{backend: llama, model: bge-reranker}}]}}
  rerank-tei: {{kind: rerank, targets: [{{backend: tei, model: BAAI/bge-reranker-base}}]}}
  rerank-tei-then-vllm:
    kind: rerank
    targets: [{{backend: tei, model: BAAI/bge-reranker-base}}]
    fallbacks: [rerank-vllm]
  rerank-on-cloud: {{kind: rerank, targets: [{{backend: cloud, model: whisper-1}}]}}
  whisper: {{kind: transcription, targets: [{{backend: vllm, model: whisper-large}}]}}
  whisper-cloud: {{kind: transcription, targets: [{{backend: cloud, model: whisper-1}}]}}
  whisper-llama: {{kind: transcription, targets: [{{backend: llama, model: whisper-small}}]}}
  chat: {{kind: chat, targets: [{{backend: vllm, model: bge-reranker}}]}}
"""


DOCS = ["the cat sat on the mat", "stock markets fell today", {"text": "a cat and a dog"}]
QUERY = "where is the cat"


@pytest.fixture
def gw(start_gateway: Start, fakes: dict[str, FakeBackend]) -> Any:
    return start_gateway(fabric(fakes))


def test_rerank_has_one_shape_whatever_the_backend(gw: Any, fakes: dict[str, FakeBackend]) -> None:
    answers = {}
    with httpx.Client(base_url=gw.url) as http:
        for role in ("rerank-vllm", "rerank-llama", "rerank-tei"):
            resp = http.post(
                "/v1/rerank", json={"model": role, "query": QUERY, "documents": DOCS, "top_n": 2}
            )
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-aifabric-role"] == role
            answers[role] = resp.json()
    for answer in answers.values():
        assert answer["object"] == "rerank"
        assert [r["index"] for r in answer["results"]] == [0, 2]  # best first, cut to top_n
        assert answer["results"][0]["document"] == {"text": "the cat sat on the mat"}
        assert answer["results"][0]["relevance_score"] >= answer["results"][1]["relevance_score"]
    # The same scores from all three dialects (the fakes score alike): only the wrapping differed.
    scores = {role: [r["relevance_score"] for r in a["results"]] for role, a in answers.items()}
    assert scores["rerank-vllm"] == scores["rerank-llama"] == scores["rerank-tei"]
    # Each backend was asked in its own dialect.
    assert fakes["tei"].requests[-1].path == "/rerank"
    assert fakes["tei"].requests[-1].json == {"query": QUERY, "texts": [*DOCS[:2], "a cat and a dog"]}
    assert fakes["vllm"].requests[-1].path == "/v1/rerank"
    assert fakes["vllm"].requests[-1].json["top_n"] == 2


def test_unversioned_rerank_score_and_return_documents(gw: Any) -> None:
    with httpx.Client(base_url=gw.url) as http:
        plain = http.post(
            "/rerank",
            json={"model": "rerank-tei", "query": QUERY, "documents": DOCS, "return_documents": False},
        )
        assert plain.status_code == 200
        assert all(set(r) == {"index", "relevance_score"} for r in plain.json()["results"])
        assert len(plain.json()["results"]) == 3
        score = http.post("/v1/score", json={"model": "rerank-llama", "text_1": QUERY, "text_2": DOCS[:2]})
        assert score.status_code == 200, score.text
        doc = score.json()
        assert doc["object"] == "list"
        assert [d["index"] for d in doc["data"]] == [0, 1]  # document order
        assert all(d["object"] == "score" for d in doc["data"])
        assert doc["data"][0]["score"] > doc["data"][1]["score"]


def test_rerank_fails_over_between_dialects(gw: Any, fakes: dict[str, FakeBackend]) -> None:
    fakes["tei"].set(status_override=503)
    with httpx.Client(base_url=gw.url) as http:
        resp = http.post(
            "/v1/rerank", json={"model": "rerank-tei-then-vllm", "query": QUERY, "documents": DOCS}
        )
    assert resp.status_code == 200
    assert resp.headers["x-aifabric-backend"] == "vllm"
    assert [r["index"] for r in resp.json()["results"]] == [0, 2, 1]


def test_rerank_errors(gw: Any) -> None:
    with httpx.Client(base_url=gw.url) as http:
        for body, status, words in [
            ({"model": "chat", "query": "q", "documents": ["a"]}, 400, "chat role"),
            ({"model": "rerank-vllm", "documents": ["a"]}, 400, "`query`"),
            ({"model": "rerank-vllm", "query": "q", "documents": []}, 400, "`documents`"),
            ({"model": "rerank-vllm", "query": "q", "documents": ["a"], "top_n": 0}, 400, "`top_n`"),
            ({"model": "nope", "query": "q", "documents": ["a"]}, 404, "Valid models"),
            # A role whose only backend has no rerank route: a clear 503, not a 404 from the backend.
            (
                {"model": "rerank-on-cloud", "query": "q", "documents": ["a"]},
                503,
                "serves the rerank API (cloud/",
            ),
        ]:
            resp = http.post("/v1/rerank", json=body)
            assert resp.status_code == status, resp.text
            assert words in resp.json()["error"]["message"]
        chat_to_rerank = http.post("/v1/chat/completions", json={"model": "rerank-vllm", "messages": []})
        assert "/v1/rerank" in chat_to_rerank.json()["error"]["message"]


@pytest.mark.parametrize(
    ("role", "backend", "served"),
    [
        ("whisper", "vllm", "whisper-large"),
        ("whisper-cloud", "cloud", "whisper-1"),
        ("whisper-llama", "llama", "whisper-small"),  # llama-server's /v1/audio/transcriptions
    ],
)
def test_transcription_passes_the_upload_through(
    gw: Any, fakes: dict[str, FakeBackend], role: str, backend: str, served: str
) -> None:
    audio = b"RIFF" + bytes(range(256)) * 4
    client = gw.openai()
    raw = client.audio.transcriptions.with_raw_response.create(
        model=role, file=("hello.wav", audio, "audio/wav"), language="en"
    )
    assert raw.parse().text == f"[{served}] {len(audio)} bytes of audio"
    assert raw.headers["x-aifabric-role"] == role
    # One JSON shape: llama-server answers its `transcript.text.done` event, whose `type` is dropped.
    answer = json.loads(raw.content)
    assert "type" not in answer
    assert_valid("CreateTranscriptionResponseJson", answer)
    sent = fakes[backend].requests[-1]
    assert sent.path == "/v1/audio/transcriptions"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert audio in sent.body  # the file, byte for byte
    assert b'name="language"\r\n\r\nen\r\n' in sent.body  # the other fields as sent
    assert f"\r\n\r\n{served}\r\n".encode() in sent.body  # only the model rewritten


def test_transcription_errors(gw: Any) -> None:
    client = gw.openai()
    with pytest.raises(openai.BadRequestError, match="chat role"):
        client.audio.transcriptions.create(model="chat", file=("a.wav", b"RIFF", "audio/wav"))
    with httpx.Client(base_url=gw.url) as http:
        resp = http.post("/v1/audio/transcriptions", json={"model": "whisper"})
    assert resp.status_code == 400
    assert "multipart/form-data" in resp.json()["error"]["message"]
    # llama-server transcribes to JSON only: its 400 reaches the client as it said it.
    with pytest.raises(openai.BadRequestError, match="Only 'json' response_format"):
        client.audio.transcriptions.create(
            model="whisper-llama", file=("a.wav", b"RIFF", "audio/wav"), response_format="text"
        )


AUDIO = b"RIFF" + bytes(range(256)) * 4


ROLES = [
    ("whisper", "vllm", "whisper-large"),
    ("whisper-cloud", "cloud", "whisper-1"),
    ("whisper-llama", "llama", "whisper-small"),
]


@pytest.mark.parametrize(("role", "backend", "served"), ROLES)
def test_transcription_streams_are_openais_events_whatever_the_backend(
    gw: Any, fakes: dict[str, FakeBackend], role: str, backend: str, served: str
) -> None:
    # vLLM streams chat-like `transcription.chunk` objects, llama-server and OpenAI `transcript.text.*`
    # events: the official SDK reads the same events from all three.
    client = gw.openai()
    events = list(
        client.audio.transcriptions.create(model=role, file=("a.wav", AUDIO, "audio/wav"), stream=True)
    )
    assert [e.type for e in events] == ["transcript.text.delta"] * 5 + ["transcript.text.done"]
    text = f"[{served}] {len(AUDIO)} bytes of audio"
    assert "".join(e.delta for e in events[:-1]) == events[-1].text == text
    assert b'name="stream"\r\n\r\ntrue\r\n' in fakes[backend].requests[-1].body  # passed through
    # On the wire: each event valid per OpenAI's OpenAPI description, and no `[DONE]` (OpenAI sends none).
    with httpx.Client(base_url=gw.url) as http:
        resp = http.post(
            "/v1/audio/transcriptions",
            data={"model": role, "stream": "true"},
            files={"file": ("a.wav", AUDIO, "audio/wav")},
        )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    data = [line[6:] for line in resp.text.split("\n") if line.startswith("data: ")]
    assert "[DONE]" not in data
    for event in data:
        assert_valid("CreateTranscriptionResponseStreamEvent", json.loads(event))
    assert json.loads(data[-1])["type"] == "transcript.text.done"


def test_streamed_transcription_usage_is_in_the_done_event(gw: Any) -> None:
    # llama-server puts usage in its `done` event; vLLM sends a usage chunk (asked with its own form
    # field `stream_include_usage`), which becomes the `done` event's usage in OpenAI's `tokens` shape.
    client = gw.openai()
    usages = []
    for role, extra in (("whisper-llama", None), ("whisper", {"stream_include_usage": "true"})):
        events = list(
            client.audio.transcriptions.create(
                model=role, file=("a.wav", AUDIO, "audio/wav"), stream=True, extra_body=extra
            )
        )
        done = events[-1]
        assert done.type == "transcript.text.done"
        assert done.usage is not None, role
        usages.append(done.usage)
    for usage in usages:
        assert usage.type == "tokens"
        assert usage.input_tokens == len(AUDIO) // 64  # the fakes count an audio token per 64 bytes
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usages[0].output_tokens == usages[1].output_tokens > 0
    # Without the field vLLM counts nothing: the `done` event has no usage, rather than a made-up one.
    plain = list(
        client.audio.transcriptions.create(model="whisper", file=("a.wav", AUDIO, "audio/wav"), stream=True)
    )
    assert plain[-1].usage is None


@pytest.mark.parametrize(("role", "backend"), [("whisper", "vllm"), ("whisper-llama", "llama")])
@pytest.mark.parametrize("fault", ["error_event", "crash"])
def test_a_transcription_stream_that_fails_midway_raises_in_the_sdk(
    gw: Any, fakes: dict[str, FakeBackend], role: str, backend: str, fault: str
) -> None:
    # The backend's own error event, or a dropped connection: one delta, then an error the SDK raises
    # (never a `done` event that would pass the first word off as the whole transcript).
    fakes[backend].set(
        **({"stream_error": "GPU fell over"} if fault == "error_event" else {"crash_after_chunks": 1})
    )
    client = gw.openai()
    stream = client.audio.transcriptions.create(model=role, file=("a.wav", AUDIO, "audio/wav"), stream=True)
    seen = []
    with pytest.raises(openai.APIError, match="GPU fell over" if fault == "error_event" else "mid-stream"):
        for event in stream:
            seen.append(event.type)
    assert seen == ["transcript.text.delta"]


def test_transcription_stream_is_rewritten_as_the_chunks_arrive(
    gw: Any, fakes: dict[str, FakeBackend]
) -> None:
    # A slow vLLM: its first chunk reaches the client as an OpenAI delta while it is still writing.
    fakes["vllm"].set(token_delay_ms=400)
    with (
        httpx.Client(base_url=gw.url, timeout=30) as http,
        http.stream(
            "POST",
            "/v1/audio/transcriptions",
            data={"model": "whisper", "stream": "true"},
            files={"file": ("a.wav", AUDIO, "audio/wav")},
        ) as resp,
    ):
        seen = b""
        for chunk in resp.iter_bytes():
            seen += chunk
            if b"transcript.text.delta" in seen:
                break
        assert fakes["vllm"].counters["inflight"] == 1  # the backend has not finished yet
    assert seen.startswith(b'data: {"type":"transcript.text.delta","delta":"[whisper-large]"}')


def test_transcription_response_format_text_is_the_backends_plain_text(gw: Any) -> None:
    client = gw.openai()
    text = client.audio.transcriptions.create(
        model="whisper", file=("a.wav", AUDIO, "audio/wav"), response_format="text"
    )
    assert text == f"[whisper-large] {len(AUDIO)} bytes of audio\n"


def _rerank(http: httpx.Client, role: str) -> httpx.Response:
    return http.post("/v1/rerank", json={"model": role, "query": QUERY, "documents": DOCS})


def _transcribe(http: httpx.Client, role: str) -> httpx.Response:
    return http.post("/v1/audio/transcriptions", data={"model": role}, files={"file": ("a.wav", AUDIO)})


@pytest.mark.parametrize(("send", "role"), [(_rerank, "rerank-vllm"), (_transcribe, "whisper")])
def test_a_loading_backend_holds_rerank_and_transcription_until_it_is_ready(
    start_gateway: Start, fakes: dict[str, FakeBackend], send: Callable[..., httpx.Response], role: str
) -> None:
    # llama-server style 503 "Loading model" for a while: the request waits (warm-up), then succeeds.
    fakes["vllm"].set(loading=True, loading_ms=600)
    gw = start_gateway(fabric(fakes))
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        resp = send(http, role)
    assert resp.status_code == 200, resp.text
    assert int(resp.headers["x-aifabric-attempts"]) >= 2
    assert fakes["vllm"].counters["injected_failures"] >= 1


def test_metrics_and_access_log_count_rerank_and_transcription(
    start_gateway: Start, fakes: dict[str, FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    gw = start_gateway("gateway: {access_log: true}\n" + fabric(fakes))
    caplog.set_level(logging.INFO, logger="aifabric.access")
    with httpx.Client(base_url=gw.url, headers={"x-request-id": "rq-7"}) as http:
        assert _rerank(http, "rerank-tei").status_code == 200
        assert _transcribe(http, "whisper").status_code == 200
        assert _rerank(http, "nope").status_code == 404
        metrics = http.get("/metrics").text
    for role, backend in (("rerank-tei", "tei"), ("whisper", "vllm")):
        assert f'aifabric_requests_total{{role="{role}",status="200"}} 1' in metrics
        assert (
            f'aifabric_upstream_attempts_total{{role="{role}",backend="{backend}",outcome="ok"}} 1' in metrics
        )
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "aifabric.access"]
    served = [
        (line["msg"].split()[1], line["role"], line["backend"], line["status"], line["request_id"])
        for line in lines[:2]
    ]
    assert served == [
        ("/v1/rerank", "rerank-tei", "tei", 200, "rq-7"),
        ("/v1/audio/transcriptions", "whisper", "vllm", 200, "rq-7"),
    ]
    assert lines[2]["status"] == 404


PAIRS = """
  rerank-pair:
    kind: rerank
    targets: [{backend: vllm, model: bge-reranker}, {backend: llama, model: bge-reranker}]
  whisper-pair:
    kind: transcription
    targets: [{backend: vllm, model: whisper-large}, {backend: llama, model: whisper-small}]
"""


def _status(gw: Any, role: str) -> dict[str, str]:
    """The outlier state of each of `role`'s targets, by backend, from the gateway's /status."""
    view = httpx.get(gw.url + "/status", timeout=10).json()
    return {t["backend"]: t["outlier"] for t in view["roles"][role]["targets"]}


@pytest.mark.parametrize(
    ("send", "role", "path"),
    [(_rerank, "rerank-pair", "/v1/rerank"), (_transcribe, "whisper-pair", "/v1/audio/transcriptions")],
)
def test_a_failing_target_is_ejected_while_the_other_serves(
    start_gateway: Start,
    fakes: dict[str, FakeBackend],
    send: Callable[..., httpx.Response],
    role: str,
    path: str,
) -> None:
    fakes["vllm"].set(status_override=500)
    gw = start_gateway(fabric(fakes) + PAIRS)
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        # health.consecutive_failures (3) failed attempts on vllm, each request served by llama all the same.
        for _ in range(20):
            resp = send(http, role)
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-aifabric-backend"] == "llama"
            if _status(gw, role)["vllm"] == "ejected":
                break
        assert _status(gw, role) == {"vllm": "ejected", "llama": "ok"}
        tried = fakes["vllm"].count(path)
        for _ in range(3):
            resp = send(http, role)
            assert (resp.headers["x-aifabric-backend"], resp.headers["x-aifabric-attempts"]) == ("llama", "1")
    assert fakes["vllm"].count(path) == tried  # left alone while ejected


@pytest.mark.parametrize(("send", "role"), [(_rerank, "rerank-vllm"), (_transcribe, "whisper")])
def test_a_hung_backend_is_a_504_in_openais_shape_within_the_deadline(
    start_gateway: Start, fakes: dict[str, FakeBackend], send: Callable[..., httpx.Response], role: str
) -> None:
    fakes["vllm"].set(hang=True)
    gw = start_gateway(fabric(fakes).replace("retry: {", "retry: {deadline: 400ms, try_timeout: 20s, "))
    try:
        with httpx.Client(base_url=gw.url, timeout=30) as http:
            started = time.monotonic()
            resp = send(http, role)
            took = time.monotonic() - started
    finally:
        fakes["vllm"].set(hang=False)
    assert resp.status_code == 504
    assert_valid("ErrorResponse", resp.json())
    assert resp.json()["error"]["code"] == "upstream_timeout"
    assert "did not answer in time" in resp.json()["error"]["message"]
    assert took < 10  # the request's deadline cut it, not the 20 s per-try timeout
