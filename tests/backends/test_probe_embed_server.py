"""The aifabric-embed adapter against our real local embeddings server (in-process, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator

import pytest

from aifabric.backends.base import adapter_for
from aifabric.config.schema import BackendConfig
from aifabric.core import BackendState, FailureClass, ProbeResult
from aifabric.http.client import UpstreamClient
from aifabric.local.embed_server import EmbedServer

MODEL = "all-minilm-l6-v2-int8"


@pytest.fixture
def server() -> Iterator[EmbedServer]:
    srv = EmbedServer("127.0.0.1", 0, model=MODEL, tokenizer=None, threads=1)  # listening, not loaded
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


def probe(port: int) -> ProbeResult:
    backend = BackendConfig(name="local-embed", kind="aifabric-embed", url=f"http://127.0.0.1:{port}/v1")

    async def go() -> ProbeResult:
        client = UpstreamClient(connect_timeout=1.0)
        try:
            return await adapter_for("aifabric-embed").probe(client, backend, 5.0)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_loading_then_up_with_its_model_id(server: EmbedServer) -> None:
    port = server.server_address[1]
    loading = probe(port)
    assert (loading.ok, loading.state, loading.failure) == (False, BackendState.LOADING, FailureClass.LOADING)
    server.load()
    ready = probe(port)
    assert (ready.ok, ready.state) == (True, BackendState.UP)
    assert ready.served_models == (MODEL,)


def test_its_loading_answer_to_a_request_is_classified_loading(server: EmbedServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
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
