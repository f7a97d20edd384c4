"""The aifabric-embed adapter against our real local embeddings server (in-process, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Iterator

import pytest

from aifabric.backends.base import adapter_for
from aifabric.config.schema import BackendConfig
from aifabric.core import BackendState, FailureClass, ProbeResult
from aifabric.http.client import UpstreamClient
from aifabric.testing.embed import RunningEmbedServer

MODEL = "all-minilm-l6-v2-int8"


@pytest.fixture
def server() -> Iterator[RunningEmbedServer]:
    srv = RunningEmbedServer(MODEL).start()  # listening, not loaded
    try:
        yield srv
    finally:
        srv.stop()


def probe(port: int) -> ProbeResult:
    backend = BackendConfig(name="local-embed", kind="aifabric-embed", url=f"http://127.0.0.1:{port}/v1")

    async def go() -> ProbeResult:
        client = UpstreamClient(connect_timeout=1.0)
        try:
            return await adapter_for("aifabric-embed").probe(client, backend, 5.0)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_loading_then_up_with_its_model_id(server: RunningEmbedServer) -> None:
    port = server.port
    loading = probe(port)
    assert (loading.ok, loading.state, loading.failure) == (False, BackendState.LOADING, FailureClass.LOADING)
    server.load()
    ready = probe(port)
    assert (ready.ok, ready.state) == (True, BackendState.UP)
    assert ready.served_models == (MODEL,)


def test_its_loading_answer_to_a_request_is_classified_loading(server: RunningEmbedServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", "/v1/embeddings", body=f'{{"model": "{MODEL}", "input": "x"}}'.encode())
        resp = conn.getresponse()
        status, headers, body = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
    adapter = adapter_for("aifabric-embed")
    assert status == 503
    assert adapter.classify(status, headers, body) is FailureClass.LOADING
    assert adapter.normalize_error(status, body, headers)["code"] == "model_loading"
