"""Every failure mode of the runbook, one target failing and a healthy one left: the client sees an
answer, served by the healthy target, and the headers say how many attempts it took."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from resilience_support import chat, post_chat, report

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until

StartGateway = Callable[..., RunningGateway]
MakeBackend = Callable[..., FakeBackend]


RETRY = "deadline: 20s, try_timeout: 5s"


def pair(a: FakeBackend, b: FakeBackend, *, retry: str = RETRY, kind_a: str = "vllm") -> str:
    """chat-fast on `a` and `b`; `b` weighs almost nothing, so `a` is tried first while it is
    available (p2c cost is latency x (outstanding + 1) / weight) and `b` is where requests fail over."""
    return f"""
backends:
  a: {{kind: {kind_a}, url: "{a.url}"}}
  b: {{kind: vllm, url: "{b.url}"}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: a, model: m1}}, {{backend: b, model: m1, weight: 0.001}}]
retry: {{{retry}}}
"""


def served_by(resp: httpx.Response) -> tuple[str, int]:
    return resp.headers["x-aifabric-backend"], int(resp.headers["x-aifabric-attempts"])


def test_healthy_pair_serves_from_the_preferred_target(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    # The premise of the tests below: with nothing failing, `a` serves.
    a, b = backend(), backend()
    gw = start_gateway(pair(a, b))
    for _ in range(5):
        assert served_by(post_chat(gw.url)) == ("a", 1)
    assert b.count("/v1/chat/completions") == 0


def test_target_killed_mid_request_fails_over(start_gateway: StartGateway, backend: MakeBackend) -> None:
    a, b = backend(latency_ms=2000), backend()
    gw = start_gateway(pair(a, b))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(post_chat, gw.url) for _ in range(4)]
        wait_until(lambda: a.count("/v1/chat/completions") == 4, "four requests held at a")
        a.stop()  # killed with the requests half-way: their connections close without an answer
        results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200] * 4
    assert {served_by(r) for r in results} == {("b", 2)}
    assert all(r.json()["choices"][0]["message"]["content"] == "[m1] hi" for r in results)
    # With `a` gone, requests keep being answered (first by failing over, then `a` is ejected).
    assert all(post_chat(gw.url).status_code == 200 for _ in range(5))


# One target failing in each way of the runbook, `b` healthy: the client gets b's answer on the second
# attempt; `tried` is how many requests reached `a` (a refused connection reaches nothing).
FAILING_A = [
    pytest.param("vllm", {"status_override": 500}, "", 1, id="500: the client never sees it"),
    pytest.param(
        "vllm", {"status_override": 429, "retry_after": 30}, "", 1, id="429: another backend, without waiting"
    ),
    pytest.param("vllm", {"hang": True}, "try_timeout: 300ms", 1, id="hanging: times out per try"),
    pytest.param("llamacpp", {"loading": True}, "", 1, id="llama-server 503 loading"),
    pytest.param(
        "llama-cpp-python", {"loading": "refuse"}, "", 0, id="llama-cpp-python refusing while loading"
    ),
]


@pytest.mark.parametrize(("kind", "switches", "retry", "tried"), FAILING_A)
def test_a_failing_target_fails_over_to_the_healthy_one(
    kind: str,
    switches: dict[str, Any],
    retry: str,
    tried: int,
    start_gateway: StartGateway,
    backend: MakeBackend,
) -> None:
    a, b = backend(kind=kind, **switches), backend()
    gw = start_gateway(pair(a, b, kind_a=kind, retry=retry))
    started = time.monotonic()
    resp = post_chat(gw.url)
    report(f"{kind} {switches}: answered after", time.monotonic() - started)
    assert resp.status_code == 200
    assert served_by(resp) == ("b", 2)
    assert a.count("/v1/chat/completions") == tried


def single(a: FakeBackend, retry: str = "") -> str:
    """chat-fast on `a` alone."""
    return f"""
backends:
  a: {{kind: vllm, url: "{a.url}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: a, model: m1}}]}}
""" + (f"retry: {{{retry}}}\n" if retry else "")


def test_429_on_the_only_target_waits_retry_after_then_retries(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    a = backend(fail_first_n=1, fail_status=429, retry_after=1)
    gw = start_gateway(single(a))
    started = time.monotonic()
    resp = post_chat(gw.url)
    report("429 Retry-After: 1 on the only target, answered after", time.monotonic() - started)
    assert resp.status_code == 200
    assert served_by(resp) == ("a", 2)
    gaps = [r.time for r in a.requests]
    assert gaps[1] - gaps[0] >= 0.9  # it honoured Retry-After rather than hammering the backend


def test_429_beyond_the_retry_after_cap_reaches_the_client_with_its_retry_after(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    a = backend(status_override=429, retry_after=30)
    gw = start_gateway(single(a, retry="max_retry_after: 5s"))
    resp = post_chat(gw.url)
    # The client's own retry logic gets what it needs: the status and how long to wait.
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "30"
    assert resp.json()["error"]["message"]


def test_client_error_is_answered_at_once_and_not_retried(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    a, b = backend(status_override=400), backend()
    gw = start_gateway(pair(a, b))
    resp = post_chat(gw.url)
    # The request itself is wrong: another backend would say the same, and `a` is not to blame.
    assert resp.status_code == 400
    assert b.count("/v1/chat/completions") == 0
    assert gw.call(lambda: gw.target("chat-fast", "a").detector.available(time.monotonic()))


def test_target_killed_mid_stream_ends_the_stream_well_formed(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    a, b = backend(tokens=100, token_delay_ms=30), backend()
    gw = start_gateway(pair(a, b))
    body = {"model": "chat-fast", "messages": [{"role": "user", "content": "go"}], "stream": True}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        chunks = r.iter_text()
        text = next(chunks)
        a.stop()  # killed after the first bytes went out: too late to fail over
        text += "".join(chunks)
    events = [e[len("data: ") :] for e in text.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "stream_interrupted"
    assert "backend a failed mid-stream" in error["message"]
    # The next stream starts on `b`: `a` is refused before any byte, so it fails over.
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["x-aifabric-backend"] == "b"
        assert "".join(r.iter_text()).endswith("data: [DONE]\n\n")


def test_official_client_sees_no_error_while_a_target_dies(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    a, b = backend(), backend()
    gw = start_gateway(pair(a, b))
    client = gw.openai(timeout=30.0)
    a.stop()
    raw = chat(client)
    assert raw.headers["x-aifabric-backend"] == "b"
    assert raw.parse().choices[0].message.content == "[m1] hi"
