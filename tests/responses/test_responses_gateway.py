"""/v1/responses as a gateway route like the others: the key, metrics, access log, ids of its own."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import openai
import pytest
from responses_support import events_of

from aifabric.config.load import load_config_text
from aifabric.observability.logging import JsonFormatter
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

KEY = "sk-gateway-key-123"


@pytest.fixture
def gw() -> Iterator[tuple[RunningGateway, FakeBackend]]:
    with FakeBackend(kind="vllm", models=("m",)) as fb:
        text = f"""
gateway: {{host: 127.0.0.1, port: 0, api_keys: ["{KEY}"], admin_keys: ["{KEY}"], access_log: true}}
backends:
  b: {{kind: vllm, url: "{fb.url}"}}
roles:
  r: {{kind: chat, targets: [{{backend: b, model: m}}]}}
"""
        gateway = RunningGateway(load_config_text(text, "fabric.yaml", environ={})).start()
        yield gateway, fb
        gateway.stop()


def test_the_gateway_key_guards_every_responses_route(gw: tuple[RunningGateway, FakeBackend]) -> None:
    gateway, fb = gw
    first = gateway.openai(KEY).responses.create(model="r", input="hi")
    for call in (
        lambda c: c.responses.create(model="r", input="hi"),
        lambda c: c.responses.retrieve(first.id),
        lambda c: c.responses.input_tokens.count(model="r", input="hi"),
    ):
        with pytest.raises(openai.AuthenticationError):
            call(gateway.openai("wrong"))
    assert len(fb.requests) == 1


def test_metrics_and_access_log_count_responses_like_chat(
    gw: tuple[RunningGateway, FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    gateway, _ = gw
    caplog.set_level(logging.INFO, logger="aifabric.access")
    client = gateway.openai(KEY)
    client.responses.create(model="r", input="hi", extra_headers={"x-request-id": "rq-7"})
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="hi")
    metrics = httpx.get(gateway.url + "/metrics", headers={"authorization": f"Bearer {KEY}"}).text
    assert 'aifabric_requests_total{role="r",status="200"} 1' in metrics
    assert 'aifabric_upstream_attempts_total{role="r",backend="b",outcome="ok"} 1' in metrics
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "aifabric.access"]
    assert (lines[0]["role"], lines[0]["backend"], lines[0]["status"], lines[0]["request_id"]) == (
        "r",
        "b",
        200,
        "rq-7",
    )
    assert lines[1]["status"] == 404
    assert all(KEY not in json.dumps(line) for line in lines)


def test_native_answers_carry_the_gateways_own_id(gw: tuple[RunningGateway, FakeBackend]) -> None:
    gateway, fb = gw
    headers = {"Authorization": f"Bearer {KEY}"}
    plain = httpx.post(gateway.url + "/v1/responses", json={"model": "r", "input": "a"}, headers=headers)
    streamed = httpx.post(
        gateway.url + "/v1/responses", json={"model": "r", "input": "b", "stream": True}, headers=headers
    )
    assert [r.path for r in fb.requests] == ["/v1/responses", "/v1/responses"]
    events = events_of(streamed.text)
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1
    (stream_id,) = ids
    for rid in (plain.json()["id"], stream_id):
        assert rid.startswith("resp_") and "fake" not in rid  # the backend's own id is replaced
    assert [e["sequence_number"] for e in events] == list(range(len(events)))  # passed through
    assert events[-1]["type"] == "response.completed"
    assert plain.json()["id"] != stream_id
