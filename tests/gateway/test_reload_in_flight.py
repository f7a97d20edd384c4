"""A reload never disturbs a request in flight: it finishes on the table (and retry policy) it started
with; requests that arrive after the reload get the new table."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

FABRIC = """
backends:
  a: {{kind: vllm, url: "{a}"}}
  b: {{kind: vllm, url: "{b}"}}
roles:
  chat: {{kind: chat, targets: [{{backend: {backend}, model: m1}}]}}
retry: {{max_retry_after: 30s, max_attempts: {attempts}}}
"""


def fabric(a: FakeBackend, b: FakeBackend, backend: str, attempts: int = 4) -> str:
    return FABRIC.format(a=a.url, b=b.url, backend=backend, attempts=attempts)


def in_background(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return thread, result


def reload(gw: RunningGateway, text: str) -> None:
    config = load_config_text(text, "fabric.yaml", environ={})
    assert gw.gateway is not None
    gw.call(lambda: gw.gateway.reload(config))  # type: ignore[union-attr]


def test_a_retry_after_a_reload_stays_on_the_table_the_request_started_with(start_gateway: Any) -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as a, FakeBackend(kind="vllm", models=("m1",)) as b:
        # a answers the first request 429 Retry-After 3 s: the gateway waits, then tries a again.
        a.set(fail_first_n=1, fail_status=429, retry_after=3)
        gw = start_gateway(fabric(a, b, "a"))
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        thread, result = in_background(
            lambda: httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)
        )
        a.wait_for_requests(1, timeout=10)
        # While it waits: the role moves to b, and a retry policy of one attempt comes in.
        reload(gw, fabric(a, b, "b", attempts=1))
        thread.join(30)
        response = result[0]
        assert response.status_code == 200, response.text
        assert response.headers["x-aifabric-backend"] == "a"  # the table it started with
        assert response.headers["x-aifabric-attempts"] == "2"  # and its policy: 2 attempts allowed
        assert b.count("/v1/chat/completions") == 0
        after = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)
        assert after.status_code == 200 and after.headers["x-aifabric-backend"] == "b"


def test_a_stream_in_flight_finishes_after_its_backend_is_removed(start_gateway: Any) -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as a, FakeBackend(kind="vllm", models=("m1",)) as b:
        a.set(tokens=20, token_delay_ms=100)
        gw = start_gateway(fabric(a, b, "a"))
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            # The stream has begun: the reload removes its role's only backend from the table.
            reload(
                gw,
                FABRIC.replace('  a: {{kind: vllm, url: "{a}"}}\n', "").format(
                    b=b.url, backend="b", attempts=4
                ),
            )
            assert "a" not in gw.gateway.table.endpoints  # type: ignore[union-attr]
            rest = [line for line in lines if line.startswith("data: ")]
        events = [first, *rest]
        assert events[-1] == "data: [DONE]"
        assert len(events) >= 21  # every token, then [DONE]: nothing cut
        assert not any('"error"' in e for e in events)
