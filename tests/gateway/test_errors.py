"""Every error a client can meet is OpenAI-shaped, with the right status, over raw HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from aifabric.testing.fake_backend import FakeBackend

Start = Callable[..., Any]


def fabric(url: str, kind: str = "vllm", gateway: str = "", retry: str = "") -> str:
    return f"""
gateway:
  host: 127.0.0.1
{gateway}
{retry}
backends:
  b1: {{kind: {kind}, url: "{url}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: b1, model: m1}}]}}
  embeddings-general: {{kind: embeddings, targets: [{{backend: b1, model: m1}}]}}
aliases:
  local/chat: chat-fast
"""


def assert_openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err  # type: ignore[no-any-return]


def test_unknown_model_is_404_listing_valid_names(start_gateway: Start, fb: FakeBackend) -> None:
    gw = start_gateway(fabric(fb.url))
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "gpt-5", "messages": []})
    err = assert_openai_error(r, 404)
    assert err["code"] == "model_not_found"
    for name in ("chat-fast", "embeddings-general", "local/chat"):
        assert name in err["message"]
    assert fb.requests == []


def test_embeddings_request_to_chat_role_is_400(start_gateway: Start, fb: FakeBackend) -> None:
    gw = start_gateway(fabric(fb.url))
    err = assert_openai_error(
        httpx.post(gw.url + "/v1/embeddings", json={"model": "chat-fast", "input": "x"}), 400
    )
    assert "chat" in err["message"] and "/v1/chat/completions" in err["message"]
    err = assert_openai_error(
        httpx.post(gw.url + "/v1/chat/completions", json={"model": "embeddings-general", "messages": []}), 400
    )
    assert "is an embeddings role" in err["message"] and "/v1/embeddings" in err["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "parse the JSON"),
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"messages": []}', "model"),
        (b'{"model": 5, "messages": []}', "model"),
        (b'{"model": "chat-fast", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests deeper than"),
    ],
)
def test_malformed_or_missing_model_is_400(
    start_gateway: Start, fb: FakeBackend, body: bytes, needle: str
) -> None:
    gw = start_gateway(fabric(fb.url))
    r = httpx.post(
        gw.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    err = assert_openai_error(r, 400)
    assert needle in err["message"]


def test_body_over_the_limit_is_413(start_gateway: Start, fb: FakeBackend) -> None:
    gw = start_gateway(fabric(fb.url, gateway="  max_body_bytes: 2048"))
    big = {"model": "chat-fast", "messages": [{"role": "user", "content": "x" * 5000}]}
    err = assert_openai_error(httpx.post(gw.url + "/v1/chat/completions", json=big), 413)
    assert "2048" in err["message"]
    # A request under the limit on a fresh connection still works.
    small = {"model": "chat-fast", "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(gw.url + "/v1/chat/completions", json=small).status_code == 200


def test_default_body_limit_is_32_mib(start_gateway: Start, fb: FakeBackend) -> None:
    gw = start_gateway(fabric(fb.url))
    assert gw.gateway.config.gateway.max_body_bytes == 32 * 1024 * 1024


def test_missing_or_wrong_key_is_401_and_key_never_echoed(start_gateway: Start, fb: FakeBackend) -> None:
    gw = start_gateway(
        fabric(fb.url, gateway='  api_keys: ["${FABRIC_MASTER_KEY}"]'),
        environ={"FABRIC_MASTER_KEY": "sk-right-key"},
    )
    body = {"model": "chat-fast", "messages": [{"role": "user", "content": "x"}]}
    assert_openai_error(httpx.post(gw.url + "/v1/chat/completions", json=body), 401)
    r = httpx.post(
        gw.url + "/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-wrong-guess"}
    )
    assert_openai_error(r, 401)
    assert "sk-wrong-guess" not in r.text and "sk-right-key" not in r.text
    assert_openai_error(httpx.get(gw.url + "/v1/models"), 401)
    ok = httpx.post(
        gw.url + "/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-right-key"}
    )
    assert ok.status_code == 200
    # Liveness stays open for process managers.
    assert httpx.get(gw.url + "/health/live").status_code == 200


def test_unknown_route_and_wrong_method(start_gateway: Start, fb: FakeBackend) -> None:
    gw = start_gateway(fabric(fb.url))
    err = assert_openai_error(httpx.get(gw.url + "/v1/nothing-here"), 404)
    # A wrong URL is not a wrong model: its own code, so a client does not go looking for a model. The
    # type is api.openai.com's for an unknown URL (`not_found_error` is Anthropic's word).
    assert (err["type"], err["code"]) == ("invalid_request_error", "unknown_route")
    assert "GET /v1/nothing-here" in err["message"]
    assert_openai_error(httpx.get(gw.url + "/v1/chat/completions"), 405)


def test_vllm_error_with_integer_code_is_normalized_and_status_kept(
    start_gateway: Start, fb: FakeBackend
) -> None:
    fb.set(status_override=400)
    gw = start_gateway(fabric(fb.url))
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "chat-fast", "messages": []})
    err = assert_openai_error(r, 400)
    assert err["type"] != "upstream_error" or err["message"]
    # A client's own mistake is never retried.
    assert len(fb.requests) == 1


@pytest.mark.parametrize("kind", ["tei", "ollama", "llamacpp"])
def test_other_kinds_error_shapes_are_normalized(start_gateway: Start, kind: str) -> None:
    backend = FakeBackend(kind=kind, models=("m1",), status_override=422).start()
    try:
        gw = start_gateway(fabric(backend.url, kind=kind))
        r = httpx.post(gw.url + "/v1/embeddings", json={"model": "embeddings-general", "input": "x"})
        assert_openai_error(r, 422)
    finally:
        backend.stop()


def test_429_keeps_status_and_retry_after(start_gateway: Start, fb: FakeBackend) -> None:
    # The backend asks for longer than the gateway may hold a request: the client gets the 429 at once.
    fb.set(status_override=429, retry_after=7)
    gw = start_gateway(fabric(fb.url, retry="retry: {max_retry_after: 1s}"))
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "chat-fast", "messages": []}, timeout=60)
    assert_openai_error(r, 429)
    assert r.headers["retry-after"] == "7"


def test_openai_client_sending_far_over_the_limit_gets_413_not_a_reset(
    start_gateway: Start, fb: FakeBackend
) -> None:
    import openai

    gw = start_gateway(fabric(fb.url, gateway="  max_body_bytes: 64KiB"))
    client = gw.openai()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="chat-fast", messages=[{"role": "user", "content": "x" * 4_000_000}]
        )
    assert info.value.status_code == 413
    assert "65536" in str(info.value)
