"""Probes of every kind against a real fake backend on 127.0.0.1: up, loading, down, wrong ids, saturated."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from aifabric.backends.base import adapter_for
from aifabric.config.schema import BackendConfig, Secret
from aifabric.core import BackendState, FailureClass, ProbeResult
from aifabric.http.client import UpstreamClient
from aifabric.testing.fake_backend import FakeBackend

# Our own embeddings server speaks TEI's probe routes (/health, /v1/models): a TEI fake stands in.
FAKE_KIND = {"aifabric-embed": "tei"}
KINDS = ("vllm", "llamacpp", "llama-cpp-python", "ollama", "tei", "openai", "aifabric-embed")
MODEL = {"ollama": "llama3:latest", "tei": "BAAI/bge-base-en-v1.5", "aifabric-embed": "all-minilm-l6-v2"}


def probe(kind: str, url: str, *, api_key: str | None = None, timeout: float = 2.0) -> ProbeResult:
    backend = BackendConfig(
        name="b",
        kind=kind,  # type: ignore[arg-type]
        url=url,
        api_key=Secret(api_key) if api_key else None,
    )

    async def go() -> ProbeResult:
        client = UpstreamClient(connect_timeout=1.0)
        try:
            return await adapter_for(kind).probe(client, backend, timeout)
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake(kind: str) -> Iterator[FakeBackend]:
    with FakeBackend(kind=FAKE_KIND.get(kind, kind), models=(MODEL.get(kind, "m"),)) as fb:
        yield fb


def test_up_serves_its_models(kind: str, fake: FakeBackend) -> None:
    result = probe(kind, fake.url)
    assert result.ok, result.reason
    assert result.state is BackendState.UP
    assert result.served_models == (MODEL.get(kind, "m"),)
    assert result.failure is None
    assert result.latency > 0


def test_probes_use_no_inference_route(kind: str, fake: FakeBackend) -> None:
    probe(kind, fake.url)
    assert fake.requests, "the probe reached the backend"
    assert all(r.method == "GET" for r in fake.requests), "costing no tokens: no POST"
    paths = {r.path for r in fake.requests}
    assert paths <= {"/health", "/v1/models", "/metrics", "/slots", "/", "/api/tags", "/info"}


# Ollama loads models per request: it has no loading state to report.
@pytest.mark.parametrize("loading_kind", [k for k in KINDS if k != "ollama"])
def test_loading_is_reported_as_loading(loading_kind: str) -> None:
    kind = loading_kind
    with FakeBackend(kind=FAKE_KIND.get(kind, kind), models=("m",), loading=True) as fake:
        result = probe(kind, fake.url)
    assert not result.ok
    assert result.state is BackendState.LOADING
    assert result.failure is FailureClass.LOADING
    assert "loading" in result.reason


def test_stopped_backend_is_down_with_the_reason(kind: str, fake: FakeBackend) -> None:
    fake.stop()
    result = probe(kind, fake.url)
    assert not result.ok
    assert result.state is BackendState.DOWN
    assert result.failure is FailureClass.CONNECT
    assert result.reason.startswith(f"not answering at http://127.0.0.1:{fake.port}")


def test_refusing_while_loading_is_down(kind: str, fake: FakeBackend) -> None:
    fake.set(loading="refuse")  # vLLM, TEI and llama-cpp-python do not listen until loaded
    result = probe(kind, fake.url)
    assert result.state is BackendState.DOWN
    assert result.failure is FailureClass.CONNECT


def test_a_hanging_backend_times_out(kind: str, fake: FakeBackend) -> None:
    fake.set(hang=True, fault_scope="all")
    try:
        result = probe(kind, fake.url, timeout=0.3)
    finally:
        fake.set(hang=False)
    assert result.state is BackendState.DOWN
    assert result.failure is FailureClass.TIMEOUT
    assert "within 0.3s" in result.reason


def test_wrong_served_id_gives_a_mismatch_message(kind: str, fake: FakeBackend) -> None:
    fake.set(models=("BAAI/bge-base-en-v1.5",))
    result = probe(kind, fake.url)
    assert result.ok
    messages = adapter_for(kind).check_models(["bge-base-en-v1.5"], result.served_models, "motoko-embed")
    assert messages
    assert messages[0].startswith("config says bge-base-en-v1.5, motoko-embed serves BAAI/bge-base-en-v1.5")


def test_api_key_is_sent_and_a_wrong_one_is_named() -> None:
    with FakeBackend(kind="openai", models=("gpt-4o",), api_key="sk-right") as fb:
        good = probe("openai", fb.url, api_key="sk-right")
        assert good.state is BackendState.UP and good.served_models == ("gpt-4o",)
        bad = probe("openai", fb.url, api_key="sk-wrong")
    assert bad.state is BackendState.DOWN
    assert bad.failure is FailureClass.AUTH
    assert "api key rejected" in bad.reason
    assert "sk-wrong" not in bad.reason and "sk-right" not in bad.reason


def test_vllm_saturated_is_degraded_and_says_why() -> None:
    with FakeBackend(kind="vllm", models=("m",), num_requests_waiting=12, kv_cache_usage=0.97) as fb:
        result = probe("vllm", fb.url)
        assert result.ok
        assert result.state is BackendState.DEGRADED
        assert result.reason == "saturated: 12 requests waiting, KV cache 97% full"
        assert result.load["requests_waiting"] == 12.0
        fb.set(num_requests_waiting=0, kv_cache_usage=0.2)
        calm = probe("vllm", fb.url)
    assert calm.state is BackendState.UP
    assert calm.load == {"requests_waiting": 0.0, "requests_running": 0.0, "kv_cache_usage": 0.2}


def test_llama_server_with_all_slots_busy_is_degraded() -> None:
    with FakeBackend(kind="llamacpp", models=("m",), slots=4, slots_busy=4) as fb:
        busy = probe("llamacpp", fb.url)
        fb.set(slots_busy=1)
        free = probe("llamacpp", fb.url)
    assert busy.state is BackendState.DEGRADED
    assert busy.reason == "saturated: all 4 slots busy, new requests queue"
    assert free.state is BackendState.UP
    assert free.load == {
        "slots_busy": 1.0,
        "slots_total": 4.0,
        "requests_running": 0.0,
        "requests_waiting": 0.0,
    }


def test_llama_server_with_requests_waiting_for_a_slot_is_degraded_and_says_how_many() -> None:
    with FakeBackend(kind="llamacpp", models=("m",), slots=4, slots_busy=4) as fb:
        fb.set(num_requests_running=4, num_requests_waiting=3)
        queued = probe("llamacpp", fb.url)
        fb.set(slots=0, slots_busy=0)  # a server without /slots: /metrics alone says it
        metrics_only = probe("llamacpp", fb.url)
    assert queued.state is BackendState.DEGRADED
    assert queued.reason == "saturated: all 4 slots busy, new requests queue; 3 requests waiting for a slot"
    assert queued.load["requests_running"] == 4.0 and queued.load["requests_waiting"] == 3.0
    assert metrics_only.state is BackendState.DEGRADED
    assert metrics_only.reason == "saturated: 3 requests waiting for a slot"


def test_a_5xx_on_the_health_route_is_down_with_the_backend_message() -> None:
    with FakeBackend(kind="vllm", models=("m",), status_override=None) as fb:
        fb.set(fail_first_n=1, fail_status=500, fault_scope="all")
        result = probe("vllm", fb.url)
    assert result.state is BackendState.DOWN
    assert result.failure is FailureClass.UPSTREAM_5XX
    assert result.reason.startswith("GET /health answered 500: fake backend: injected failure")


def test_an_overloaded_backend_is_degraded_not_down(kind: str, fake: FakeBackend) -> None:
    fake.set(fail_first_n=1, fail_status=429, retry_after=5, fault_scope="all")
    result = probe(kind, fake.url)
    assert result.ok
    assert result.state is BackendState.DEGRADED
    assert result.failure is FailureClass.OVERLOADED
    assert result.reason.startswith("overloaded (GET ")


def test_a_password_in_the_url_never_reaches_the_reason() -> None:
    with FakeBackend(kind="vllm", models=("m",)) as fb:
        port = fb.port
        fb.stop()
        result = probe("vllm", f"http://admin:hunter2@127.0.0.1:{port}/v1")
    assert result.state is BackendState.DOWN
    assert "hunter2" not in result.reason
    assert f"admin:********@127.0.0.1:{port}" in result.reason
