"""A key a backend quotes in a streamed error event is masked even when the event, or the key inside
it, reaches the gateway in two reads: the fake backend cuts its body at chosen bytes (`split_at`,
the pieces `token_delay_ms` apart so the gateway reads them apart), the client reads the stream as a
user would (raw SSE bytes, the official `openai` SDK)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import openai
import pytest

from aifabric.testing.fake_backend import FakeBackend

BACKEND_KEY = "sk-be-9d1f3b5d7f9b1d3f5b7d"
FAILING = f"Incorrect API key provided: {BACKEND_KEY}"
CHAT = ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi there"}]})
MESSAGES = ("/v1/messages", {"max_tokens": 20, "messages": [{"role": "user", "content": "hi there"}]})
PIECE_GAP_MS = 150  # between two pieces of the body: long enough for the gateway to read them apart


def _fabric(url: str) -> str:
    return f"""
backends: {{b: {{kind: vllm, url: "{url}", api_key: "{BACKEND_KEY}"}}}}
roles:
  chat: {{kind: chat, targets: [{{backend: b, model: m1}}]}}
"""


def _stream(url: str, path: str, body: dict[str, Any]) -> bytes:
    payload = {**body, "model": "chat", "stream": True}
    headers = {"anthropic-version": "2023-06-01"}
    with httpx.stream("POST", url + path, json=payload, headers=headers, timeout=20) as r:
        assert r.status_code == 200
        assert "x-aifabric-translated" not in r.headers  # relayed as the backend streamed it
        return r.read()


def same_ids(body: bytes) -> bytes:
    """`body` with its answer's id and time made alike: each answer has its own."""
    return re.sub(rb'"created":\s*\d+', b'"created":0', re.sub(rb"fake-\d+", b"fake-N", body))


def _cuts(upstream: bytes) -> dict[str, int]:
    """Where to cut the backend's body: inside the error mark, at the key, inside it, and between the
    two newlines that end the error event."""
    key = upstream.index(BACKEND_KEY.encode())
    event_end = upstream.index(b"\n\n", key)
    return {
        "in-error-mark": upstream.index(b'"error"') + 3,
        "at-key": key,
        "in-key": key + 9,
        "key-last-byte": key + len(BACKEND_KEY) - 1,
        "in-blank-line": event_end + 1,
    }


@pytest.mark.parametrize(("path", "body"), [CHAT, MESSAGES], ids=["chat", "messages"])
def test_an_error_event_cut_between_reads_reaches_the_client_masked(
    start_gateway: Any, path: str, body: dict[str, Any]
) -> None:
    with FakeBackend(kind="vllm", models=("m1",), api_key=BACKEND_KEY, stream_error=FAILING) as fake:
        gw = start_gateway(_fabric(fake.url))
        whole = _stream(gw.url, path, body)  # in one read: masked before this change too
        assert b"Incorrect API key provided: ********" in whole
        upstream = whole.replace(b"********", BACKEND_KEY.encode())  # what the backend sent
        for where, at in _cuts(upstream).items():
            fake.set(split_at=[at], token_delay_ms=PIECE_GAP_MS)
            seen = _stream(gw.url, path, body)
            assert BACKEND_KEY.encode()[:8] not in seen, f"the key reached the client, cut {where}"
            assert same_ids(seen) == same_ids(whole), f"cut {where}: other bytes than an uncut stream's"
        assert fake.count(path) == 6


def test_the_openai_sdk_reads_a_cut_error_event_masked(start_gateway: Any) -> None:
    with FakeBackend(kind="vllm", models=("m1",), api_key=BACKEND_KEY, stream_error=FAILING) as fake:
        gw = start_gateway(_fabric(fake.url))
        upstream = _stream(gw.url, *CHAT).replace(b"********", BACKEND_KEY.encode())
        key = upstream.index(BACKEND_KEY.encode())
        fake.set(split_at=[key - 5, key + 6], token_delay_ms=PIECE_GAP_MS)  # three pieces
        client = gw.openai()
        stream = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi there"}], stream=True
        )
        with pytest.raises(openai.APIError) as raised:
            for _ in stream:
                pass
    assert "Incorrect API key provided: ********" in str(raised.value)
    assert BACKEND_KEY[:8] not in str(raised.value)


def test_a_backend_dying_inside_the_key_leaves_no_part_of_it(start_gateway: Any) -> None:
    """The held, never-finished error event goes out with the key's beginning masked, then the
    gateway's own error event and end: the client still reads what happened."""
    with FakeBackend(kind="vllm", models=("m1",), api_key=BACKEND_KEY, stream_error=FAILING) as fake:
        gw = start_gateway(_fabric(fake.url))
        upstream = _stream(gw.url, *CHAT).replace(b"********", BACKEND_KEY.encode())
        key = upstream.index(BACKEND_KEY.encode())
        fake.set(split_at=[key + 14], crash_after_chunks=1, token_delay_ms=PIECE_GAP_MS)
        seen = _stream(gw.url, *CHAT).decode()
    assert BACKEND_KEY[:8] not in seen, seen
    assert "Incorrect API key provided: ********" in seen, seen
    assert "stream_interrupted" in seen and seen.endswith("data: [DONE]\n\n"), seen


@pytest.mark.parametrize("cuts", [[1], [7, 8, 9], [33, 101, 102, 250], [5, 64, 127, 128, 129, 300]])
def test_an_ordinary_stream_cut_at_odd_bytes_arrives_byte_identical(
    start_gateway: Any, cuts: list[int]
) -> None:
    with FakeBackend(kind="vllm", models=("m1",), api_key=BACKEND_KEY) as fake:
        gw = start_gateway(_fabric(fake.url))
        whole = _stream(gw.url, *CHAT)
        fake.set(split_at=cuts, token_delay_ms=30)
        seen = _stream(gw.url, *CHAT)
    assert same_ids(seen) == same_ids(whole)
    assert seen.endswith(b"data: [DONE]\n\n")
