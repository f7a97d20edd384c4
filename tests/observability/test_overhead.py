"""`aifabric_gateway_overhead_seconds`: the gateway's own time per request, measured on a real gateway
with the official OpenAI client against a fake backend that takes 200 ms to answer. The backend's
time (and the gateway's deliberate waits: a retry's backoff) is left out; what is left is small."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

BACKEND_SECONDS = 0.2
# Robust on a loaded 2-core CI machine (the first request included); the bench measures tens of
# microseconds (bench/README.md).
WELL_UNDER = 0.02


@pytest.fixture
def gateway() -> Iterator[tuple[RunningGateway, FakeBackend]]:
    with FakeBackend(kind="vllm", models=("m1",), latency_ms=BACKEND_SECONDS * 1000) as backend:
        config = load_config_text(
            f"""
backends: {{b: {{kind: vllm, url: "{backend.url}"}}}}
roles:
  chat: {{kind: chat, targets: [{{backend: b, model: m1}}]}}
  stream: {{kind: chat, targets: [{{backend: b, model: m1}}]}}
  retried: {{kind: chat, targets: [{{backend: b, model: m1}}]}}
""",
            "f.yaml",
            environ={},
        )
        gw = RunningGateway(config).start()
        try:
            yield gw, backend
        finally:
            gw.stop()


def histogram(text: str, name: str, role: str) -> tuple[float, int]:
    """(sum, count) of one role's histogram in a /metrics text."""
    found = {}
    for part in ("sum", "count"):
        match = re.search(rf'^{name}_{part}\{{role="{role}"\}} (\S+)$', text, re.M)
        assert match, f"no {name}_{part} for role {role}"
        found[part] = float(match.group(1))
    return found["sum"], int(found["count"])


def test_overhead_leaves_out_the_backends_time(gateway: tuple[RunningGateway, FakeBackend]) -> None:
    gw, backend = gateway
    client = gw.openai()
    messages = [{"role": "user", "content": "hi"}]
    assert client.chat.completions.create(model="chat", messages=messages).choices[0].message.content  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model="stream", messages=messages, stream=True))  # type: ignore[arg-type]
    assert chunks
    # One refused attempt (HTTP 429, Retry-After: 1), the wait it asks for, then the answer: neither
    # is the gateway's time.
    backend.set(fail_first_n=1, fail_status=429, retry_after=1)
    assert client.chat.completions.create(model="retried", messages=messages).choices  # type: ignore[arg-type]

    text = httpx.get(gw.url + "/metrics").text
    assert "# TYPE aifabric_gateway_overhead_seconds histogram" in text
    for role, at_least in (
        ("chat", BACKEND_SECONDS),
        ("stream", BACKEND_SECONDS),
        ("retried", 2 * BACKEND_SECONDS + 1),
    ):
        total, n = histogram(text, "aifabric_request_duration_seconds", role)
        overhead, m = histogram(text, "aifabric_gateway_overhead_seconds", role)
        assert n == m == 1, role
        assert total >= at_least, (role, total)
        assert 0 < overhead < WELL_UNDER, (role, overhead, total)
    # The buckets are cumulative and end with +Inf at the count.
    buckets = re.findall(
        r'^aifabric_gateway_overhead_seconds_bucket\{role="chat",le="([^"]+)"\} (\d+)$', text, re.M
    )
    counts = [int(c) for _, c in buckets]
    assert buckets[-1] == ("+Inf", "1") and counts == sorted(counts)


def test_requests_no_backend_saw_have_no_overhead_sample(gateway: tuple[RunningGateway, FakeBackend]) -> None:
    gw, _ = gateway
    body = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(gw.url + "/v1/chat/completions", json=body).status_code == 404
    text = httpx.get(gw.url + "/metrics").text
    assert 'aifabric_requests_total{role="",status="404"} 1' in text
    assert "aifabric_gateway_overhead_seconds_count" not in text
