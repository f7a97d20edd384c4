"""Streams end well-formed whatever happens on either side of the gateway."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import wait_until

Start = Callable[..., Any]


def fabric(*urls: str) -> str:
    backends = "\n".join(f'  b{i}: {{kind: vllm, url: "{u}"}}' for i, u in enumerate(urls))
    targets = ", ".join(f"{{backend: b{i}, model: m1}}" for i in range(len(urls)))
    return f"""
backends:
{backends}
roles:
  chat-fast: {{kind: chat, targets: [{targets}]}}
"""


def stream_events(base_url: str) -> list[str]:
    """The `data:` payloads of one streamed chat through the gateway (which must answer 200)."""
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=stream_body(), timeout=10) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    return [e[len("data: ") :] for e in text.split("\n\n") if e.startswith("data: ")]


def interruption(events: list[str]) -> dict[str, Any]:
    """The error event a cut stream ends with, checked to be followed by [DONE]."""
    assert events[-1] == "[DONE]"
    error: dict[str, Any] = json.loads(events[-2])["error"]
    assert error["code"] == "stream_interrupted"
    return error


def stream_body() -> dict[str, Any]:
    return {"model": "chat-fast", "messages": [{"role": "user", "content": "go"}], "stream": True}


def test_client_disconnect_cancels_the_upstream_request(start_gateway: Start, fb: FakeBackend) -> None:
    fb.set(tokens=200, token_delay_ms=50)  # a 10-second stream
    gw = start_gateway(fabric(fb.url))
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=stream_body()) as r:
        first = next(r.iter_raw())
        assert first.startswith(b"data: ")
        wait_until(lambda: fb.counters["inflight"] == 1, "the backend to be streaming")
    # The client hung up after one chunk: the backend's request must end long before its 10 s.
    wait_until(lambda: fb.counters["inflight"] == 0, "the backend request to be cancelled")
    target = gw.gateway.table.routes["chat-fast"].targets[0]
    wait_until(lambda: target.outstanding == 0, "the gateway to release the target")
    # A hang-up is not the backend's fault: it is not held against it.
    assert target.detector.available(time.monotonic())


def test_backend_crash_mid_stream_gives_error_event_and_done(start_gateway: Start, fb: FakeBackend) -> None:
    fb.set(tokens=10, crash_after_chunks=3)
    gw = start_gateway(fabric(fb.url))
    events = stream_events(gw.url)
    error = interruption(events)
    assert "b0" in error["message"]
    # The chunks before the crash reached the client.
    assert len([e for e in events[:-2] if "choices" in e]) == 3


def test_crash_before_first_byte_fails_over_to_the_next_target(start_gateway: Start, fb: FakeBackend) -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as healthy:
        fb.set(crash_before_headers=True)
        gw = start_gateway(fabric(fb.url, healthy.url))
        for _ in range(4):
            with httpx.stream("POST", gw.url + "/v1/chat/completions", json=stream_body(), timeout=10) as r:
                assert r.status_code == 200
                text = "".join(r.iter_text())
            assert "stream_interrupted" not in text
            assert text.rstrip().endswith("data: [DONE]")
            assert r.headers["x-aifabric-backend"] == "b1"


def test_a_stream_that_goes_silent_ends_with_an_error_event_not_a_hang(
    start_gateway: Start, fb: FakeBackend
) -> None:
    fb.set(tokens=5, token_delay_ms=5000)  # the first token comes, then nothing for 5 s
    gw = start_gateway(fabric(fb.url) + "retry: {stream_idle_timeout: 300ms}\n")
    events = stream_events(gw.url)
    error = interruption(events)
    assert "no data from the stream within 0.3 s" in error["message"]
    target = gw.gateway.table.routes["chat-fast"].targets[0]
    wait_until(lambda: target.outstanding == 0, "the attempt to be settled")
    assert target.failures == 1
