"""Rerank (`/v1/rerank`, `/rerank`, `/v1/score`) and transcription through the gateway: one answer shape
whatever the backend's dialect (vLLM, llama-server, TEI), with failover between them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from aifabric.testing.fake_backend import FakeBackend

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
    [("whisper", "vllm", "whisper-large"), ("whisper-cloud", "cloud", "whisper-1")],
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
