"""A backend without the native route its kind (or `apis:`) promised: an `openai`-kind cloud that serves
chat completions only, an older vLLM. Its 404/405 on /v1/responses, /v1/messages or /v1/rerank is no
failure: the request is translated on the same target (or goes on to the next one), the target is not
ejected and keeps its chat traffic, and the operator is told once how to declare it. A real
model-not-found 404 on a native route keeps its meaning."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from aifabric.config.schema import BackendConfig, ClientApi
from aifabric.gateway.dialects.count_tokens import CountTokensDialect
from aifabric.gateway.missing_routes import MissingRoutes, RouteMissing
from aifabric.routing.table import Endpoint
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import wait_until

Start = Callable[..., Any]
HI = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeBackend]]:
    backends = {
        # An OpenAI-compatible cloud (DeepSeek, Mistral, ...): chat completions only, no /v1/responses.
        "cloud": FakeBackend(kind="openai", models=("gpt",), routes=()).start(),
        # An older vLLM: its kind says /v1/responses, /v1/messages and /v1/rerank, it has none of them.
        "old": FakeBackend(kind="vllm", models=("qwen",), routes=()).start(),
        "tei": FakeBackend(kind="tei", models=("bge",)).start(),
    }
    yield backends
    for backend in backends.values():
        backend.stop()


def fabric(f: dict[str, FakeBackend], cloud_apis: str = "") -> str:
    return f"""
retry: {{backoff_base: 10ms, backoff_max: 10ms}}
backends:
  cloud: {{kind: openai, url: "{f["cloud"].url}", health: {{consecutive_failures: 2}}{cloud_apis}}}
  old: {{kind: vllm, url: "{f["old"].url}", health: {{consecutive_failures: 2}}}}
  tei: {{kind: tei, url: "{f["tei"].url}"}}
roles:
  cloud: {{kind: chat, targets: [{{backend: cloud, model: gpt}}]}}
  old: {{kind: chat, targets: [{{backend: old, model: qwen}}]}}
  unknown: {{kind: chat, targets: [{{backend: old, model: llama}}]}}
  rerank-old-then-tei:
    kind: rerank
    targets: [{{backend: old, model: qwen}}]
    fallbacks: [rerank-tei]
  rerank-tei: {{kind: rerank, targets: [{{backend: tei, model: bge}}]}}
  rerank-old: {{kind: rerank, targets: [{{backend: old, model: qwen}}]}}
"""


def status(gw: Any) -> dict[str, Any]:
    with urllib.request.urlopen(gw.url + "/status", timeout=5) as resp:
        view: dict[str, Any] = json.loads(resp.read())
    return view


def target_view(gw: Any, role: str) -> dict[str, Any]:
    return dict(status(gw)["roles"][role]["targets"][0])


def assert_not_ejected(gw: Any, role: str) -> None:
    target = target_view(gw, role)
    assert (target["available"], target["outlier"], target["ejections"], target["failures"]) == (
        True,
        "ok",
        0,
        0,
    ), target


def test_an_openai_kind_cloud_gets_responses_and_messages_translated_without_apis(
    start_gateway: Start, fakes: dict[str, FakeBackend]
) -> None:
    gw = start_gateway(fabric(fakes), probe=True)
    wait_until(lambda: status(gw)["backends"]["cloud"]["state"] == "up", "cloud probed up")
    client = gw.openai()
    for _ in range(3):  # more than health.consecutive_failures: nothing counts against it anyway
        assert client.responses.create(model="cloud", input="hi").output_text == "[gpt] hi"
    with client.responses.stream(model="cloud", input="streamed") as stream:
        assert stream.get_final_response().output_text == "[gpt] streamed"
    with anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0) as c:
        reply = c.messages.create(model="cloud", max_tokens=50, messages=HI)
        assert reply.content[0].text == "[gpt] hello there"  # type: ignore[union-attr]
        with c.messages.stream(model="cloud", max_tokens=50, messages=HI) as s:
            assert "".join(s.text_stream) == "[gpt] hello there"
    # Translated from the start (the rule for non-OpenAI URLs): the cloud never saw a native route.
    assert {r.path for r in fakes["cloud"].requests} == {"/v1/models", "/v1/chat/completions"}
    assert_not_ejected(gw, "cloud")
    assert status(gw)["backends"]["cloud"]["state"] == "up"


@pytest.mark.parametrize("code", [404, 405])
def test_a_missing_native_route_is_retried_translated_and_never_ejects(
    start_gateway: Start,
    fakes: dict[str, FakeBackend],
    caplog: pytest.LogCaptureFixture,
    code: int,
) -> None:
    for backend in fakes.values():
        backend.set(missing_route_status=code)
    # Declared wrongly: the fabric file says this cloud serves Responses and Messages itself.
    gw = start_gateway(fabric(fakes, cloud_apis=", apis: [responses, messages]"), probe=True)
    wait_until(lambda: all(status(gw)["backends"][b]["state"] == "up" for b in ("cloud", "old")), "probed up")
    caplog.set_level(logging.WARNING, logger="aifabric.gateway")
    client = gw.openai()
    with anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0) as c:
        for role, served in (("cloud", "gpt"), ("old", "qwen")):
            for _ in range(3):
                raw = client.responses.with_raw_response.create(model=role, input="hi")
                assert raw.parse().output_text == f"[{served}] hi"
                assert raw.headers["x-aifabric-translated"] == "chat"
            with client.responses.stream(model=role, input="streamed") as stream:
                assert stream.get_final_response().output_text == f"[{served}] streamed"
            for _ in range(3):
                reply = c.messages.create(model=role, max_tokens=50, messages=HI)
                assert reply.content[0].text == f"[{served}] hello there"  # type: ignore[union-attr]
            with c.messages.stream(model=role, max_tokens=50, messages=HI) as s:
                assert "".join(s.text_stream) == f"[{served}] hello there"
            # Chat completions still go there: the target was never ejected.
            chat = client.chat.completions.create(model=role, messages=[{"role": "user", "content": "x"}])
            assert chat.choices[0].message.content == f"[{served}] x"
            assert_not_ejected(gw, role)
    for name in ("cloud", "old"):
        assert status(gw)["backends"][name]["state"] == "up"  # healthy on /status, as before
        # One native try per API, then straight to chat completions: the finding is remembered.
        paths = [r.path for r in fakes[name].requests]
        assert paths.count("/v1/responses") == 1
        assert paths.count("/v1/messages") == 1
    with urllib.request.urlopen(gw.url + "/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    for role in ("cloud", "old"):  # its Responses and its Messages route, once each
        assert (
            f'aifabric_upstream_attempts_total{{role="{role}",backend="{role}",outcome="route_missing"}} 2'
            in metrics
        )
        assert f'backend="{role}",outcome="model_not_found"' not in metrics
    warnings = [r.getMessage() for r in caplog.records if "has no native" in r.getMessage()]
    assert len(warnings) == 4, warnings  # once per backend and API
    assert any(
        f"backend cloud has no native responses route (HTTP {code} on POST /v1/responses)" in w
        and "backends.cloud.apis: [messages]" in w
        for w in warnings
    )
    assert any("backends.old.apis: [" in w and "translated to chat completions" in w for w in warnings)


@pytest.mark.parametrize("status", [404, 405])
def test_a_missing_rerank_route_goes_on_to_the_next_candidate(
    start_gateway: Start, fakes: dict[str, FakeBackend], status: int
) -> None:
    fakes["old"].set(missing_route_status=status)
    gw = start_gateway(fabric(fakes))
    body = {"query": "where is the cat", "documents": ["the cat sat", "markets fell"]}
    with httpx.Client(base_url=gw.url) as http:
        for _ in range(3):
            served = http.post("/v1/rerank", json={"model": "rerank-old-then-tei", **body})
            assert served.status_code == 200, served.text
            assert served.headers["x-aifabric-backend"] == "tei"
        alone = http.post("/v1/rerank", json={"model": "rerank-old", **body})
    # No other candidate: the role does not serve rerank, said as such (not a backend failure).
    assert alone.status_code == 503
    assert alone.json()["error"]["code"] == "api_not_served"
    assert fakes["old"].count("/v1/rerank") == 1  # asked once, then known
    assert_not_ejected(gw, "rerank-old")


def test_a_model_not_found_on_a_native_route_keeps_its_meaning(
    start_gateway: Start, fakes: dict[str, FakeBackend]
) -> None:
    # This vLLM has the route; it does not serve the model the fabric file names.
    fakes["old"].set(routes=("/v1/responses",))
    gw = start_gateway(fabric(fakes))
    client = gw.openai()
    for _ in range(2):
        reply = httpx.post(gw.url + "/v1/responses", json={"model": "unknown", "input": "hi"}, timeout=10)
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "model_not_found"
        assert "does not exist" in reply.json()["error"]["message"]
    target = target_view(gw, "unknown")
    assert target["failures"] >= 2  # (each request retried within its attempts, as a chat one is)
    assert target["outlier"] == "ejected"  # consecutive_failures: 2, as for chat completions
    assert fakes["old"].count("/v1/chat/completions") == 0  # never retried translated
    assert client.responses.create(model="old", input="ok").output_text == "[qwen] ok"


def test_the_finding_is_kept_per_backend_and_api_until_a_reload_rebuilds_the_endpoint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = BackendConfig(name="old", kind="vllm", url="http://127.0.0.1:9/v1")
    endpoint = Endpoint.from_config(backend)
    routes = MissingRoutes()
    caplog.set_level(logging.WARNING, logger="aifabric.gateway")
    on_messages = RouteMissing(404, "/v1/messages", "m")
    reduced = routes.note(endpoint, endpoint, ClientApi.MESSAGES, on_messages, True)
    assert routes.note(endpoint, endpoint, ClientApi.MESSAGES, on_messages, True) is reduced
    assert len(caplog.records) == 1  # said once
    assert routes.endpoint(endpoint, ClientApi.MESSAGES) is reduced
    assert not reduced.serves_natively(ClientApi.MESSAGES, stream=False)
    assert reduced.serves_natively(ClientApi.RESPONSES, stream=False)  # only that API
    assert routes.endpoint(endpoint, ClientApi.RESPONSES) is endpoint
    rebuilt = Endpoint.from_config(backend)  # a reload: the server may have been upgraded meanwhile
    assert routes.endpoint(rebuilt, ClientApi.MESSAGES) is rebuilt
    # count_tokens on a vLLM whose /tokenize answered 404: not that route again, but the estimate.
    body = _Body({"model": "m", "messages": HI})
    missing = RouteMissing(404, "/tokenize", "m")
    without = routes.retry(endpoint, endpoint, CountTokensDialect(), body, False, missing)
    assert without is not None and without.tokenize_path is None
    assert not CountTokensDialect().native_route(without, False)  # answered by the gateway
    assert routes.retry(without, without, CountTokensDialect(), body, False, missing) is None


class _Body:
    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload

    def with_model(self, model: str, *, drop: tuple[str, ...] = ()) -> bytes:
        return json.dumps({**self.payload, "model": model}).encode()


@pytest.mark.parametrize(
    ("api", "path", "body"),
    [
        ("count_tokens", "/v1/messages/count_tokens", {"model": "chat", "messages": HI}),
        ("input_tokens", "/v1/responses/input_tokens", {"model": "chat", "input": "hello there"}),
    ],
)
def test_a_counting_route_and_the_tokenizer_both_missing_never_500(
    start_gateway: Start,
    caplog: pytest.LogCaptureFixture,
    api: str,
    path: str,
    body: dict[str, Any],
) -> None:
    # A chat-only server declared to count natively: its native route and vLLM's /tokenize both 404.
    with FakeBackend(kind="vllm", models=("m1",), routes=()) as fake:
        gw = start_gateway(
            f"""
backends: {{b: {{kind: vllm, url: "{fake.url}", apis: [{api}]}}}}
roles:
  chat: {{kind: chat, targets: [{{backend: b, model: m1}}]}}
"""
        )
        caplog.set_level(logging.WARNING, logger="aifabric.gateway")
        headers = {"anthropic-version": "2023-06-01"}
        for _ in range(2):  # the second time, the findings are known: neither route is asked again
            r = httpx.post(gw.url + path, json=body, headers=headers, timeout=10)
            if api == "count_tokens":
                # Anthropic's count has a local answer: the estimate, saying so.
                assert r.status_code == 200, r.text
                assert r.json()["estimated"] is True and r.json()["input_tokens"] > 0
                assert r.headers["x-aifabric-token-count"] == "estimated"
            else:
                # input_tokens is never estimated: no target of the role counts, and the client is told.
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "api_not_served"
        asked = [q.path for q in fake.requests if q.path != "/v1/models"]
        assert asked == [f"/v1/{path.removeprefix('/v1/')}", "/tokenize"], asked
        assert "internal error" not in caplog.text and "Traceback" not in caplog.text
        said = [r.getMessage() for r in caplog.records if "has no" in r.getMessage()]
        assert len(said) == 2 and "/tokenize" in said[1], said
