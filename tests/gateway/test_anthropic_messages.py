"""Anthropic's Messages API through the gateway, with the official `anthropic` SDK: native on backends
that serve /v1/messages, translated to chat completions elsewhere, failover from one to the other."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from aifabric.observability.logging import JsonFormatter
from aifabric.testing.fake_backend import FakeBackend

KEY = "gw-key-3d9a"
Start = Callable[..., Any]


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeBackend]]:
    backends = {
        "native": FakeBackend(kind="vllm", models=("qwen",)).start(),  # serves /v1/messages itself
        "cloud": FakeBackend(kind="openai", models=("gpt",)).start(),  # chat completions only
        "lcp": FakeBackend(kind="llama-cpp-python", models=("smol",)).start(),  # no usage in streams
        "llama": FakeBackend(kind="llamacpp", models=("smol",)).start(),  # native count_tokens
    }
    yield backends
    for backend in backends.values():
        backend.stop()


def fabric(f: dict[str, FakeBackend]) -> str:
    return f"""
gateway: {{api_keys: ["{KEY}"]}}
retry: {{backoff_base: 10ms, backoff_max: 10ms}}
backends:
  native: {{kind: vllm, url: "{f["native"].url}"}}
  cloud: {{kind: openai, url: "{f["cloud"].url}"}}
  lcp: {{kind: llama-cpp-python, url: "{f["lcp"].url}"}}
  llama: {{kind: llamacpp, url: "{f["llama"].url}"}}
roles:
  native:
    kind: chat
    targets: [{{backend: native, model: qwen}}]
  translated:
    kind: chat
    targets: [{{backend: cloud, model: gpt}}]
  counted:
    kind: chat
    targets: [{{backend: lcp, model: smol}}]
  llama:
    kind: chat
    targets: [{{backend: llama, model: smol}}]
  native-then-translated:
    kind: chat
    targets: [{{backend: native, model: qwen}}]
    fallbacks: [translated]
  embed:
    kind: embeddings
    targets: [{{backend: native, model: qwen}}]
"""


@pytest.fixture
def client(start_gateway: Start, fakes: dict[str, FakeBackend]) -> Iterator[anthropic.Anthropic]:
    gw = start_gateway(fabric(fakes))
    with anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        yield c


HI = [{"role": "user", "content": "hello there"}]


@pytest.mark.parametrize(
    ("role", "served", "path"),
    [
        ("native", "qwen", "/v1/messages"),
        ("translated", "gpt", "/v1/chat/completions"),
        ("counted", "smol", "/v1/chat/completions"),
    ],
)
def test_create_native_or_translated_gives_the_same_message(
    client: anthropic.Anthropic, fakes: dict[str, FakeBackend], role: str, served: str, path: str
) -> None:
    raw = client.messages.with_raw_response.create(
        model=role,
        max_tokens=50,
        system=[{"type": "text", "text": "Be brief."}],
        messages=HI,
        stop_sequences=["STOP"],
        extra_body={"temperature": 0.2},  # older SDKs send it; 2.14 dropped the argument
    )
    message = raw.parse()
    assert message.type == "message"
    assert message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == f"[{served}] hello there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 3
    assert message.usage.input_tokens > 0
    assert raw.headers["x-aifabric-role"] == role
    assert ("x-aifabric-translated" in raw.headers) is (role != "native")
    backend = {"native": "native", "translated": "cloud", "counted": "lcp"}[role]
    sent = fakes[backend].requests[-1]
    assert sent.path == path
    assert "x-api-key" not in sent.headers  # the gateway's key is never passed on
    # The API version goes to a native Messages route, and only there.
    assert ("anthropic-version" in sent.headers) is (path == "/v1/messages")
    if path == "/v1/chat/completions":
        # What the translation sent: the system prompt first, the stop sequences as `stop`.
        assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent.json["stop"] == ["STOP"]
        assert sent.json["max_tokens"] == 50
        assert sent.json["model"] == served
        assert sent.json["temperature"] == 0.2


def test_max_tokens_cut_is_max_tokens_stop_reason(client: anthropic.Anthropic) -> None:
    for role in ("native", "translated"):
        message = client.messages.create(model=role, max_tokens=1, messages=HI)
        assert message.stop_reason == "max_tokens"
        assert message.usage.output_tokens == 1


@pytest.mark.parametrize("role", ["native", "translated", "counted"])
def test_stream_with_the_sdk(client: anthropic.Anthropic, role: str) -> None:
    served = {"native": "qwen", "translated": "gpt", "counted": "smol"}[role]
    with client.messages.stream(model=role, max_tokens=50, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == f"[{served}] hello there"
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3


def _events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            out.append((lines["event"], orjson.loads(lines["data"])))
    return out


def test_translated_stream_is_anthropics_exact_event_sequence(
    start_gateway: Start, fakes: dict[str, FakeBackend]
) -> None:
    gw = start_gateway(fabric(fakes))
    body = {"model": "translated", "max_tokens": 50, "messages": HI, "stream": True}
    with httpx.Client(base_url=gw.url, headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}) as http:
        resp = http.post("/v1/messages", json=body)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = _events(resp.content)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    assert events[2][1]["content_block"] == {"type": "text", "text": ""}
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] == 3


def test_stream_events_are_translated_as_the_chunks_arrive(
    start_gateway: Start, fakes: dict[str, FakeBackend]
) -> None:
    # A slow backend: the first text delta reaches the client while the backend is still writing.
    fakes["cloud"].set(token_delay_ms=400)
    gw = start_gateway(fabric(fakes))
    body = {"model": "translated", "max_tokens": 50, "messages": HI, "stream": True}
    with (
        httpx.Client(base_url=gw.url, headers={"x-api-key": KEY}) as http,
        http.stream("POST", "/v1/messages", json=body) as resp,
    ):
        seen = b""
        for chunk in resp.iter_bytes():
            seen += chunk
            if b"text_delta" in seen:
                break
        assert fakes["cloud"].counters["inflight"] == 1  # the backend has not finished yet
    assert b'"text":"[gpt]"' in seen


TOOLS = [
    {
        "name": "lookup",
        "description": "Look a word up",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
    }
]


@pytest.mark.parametrize("role", ["native", "translated"])
def test_tool_use_round_trip(client: anthropic.Anthropic, role: str) -> None:
    served = {"native": "qwen", "translated": "gpt"}[role]
    first = client.messages.create(
        model=role,
        max_tokens=50,
        messages=[{"role": "user", "content": "weather"}],
        tools=TOOLS,
        tool_choice={"type": "any"},
    )
    assert first.stop_reason == "tool_use"
    (call,) = first.content
    assert call.type == "tool_use"
    assert call.name == "lookup"
    assert call.input == {"query": "weather"}
    second = client.messages.create(
        model=role,
        max_tokens=50,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather"},
            {"role": "assistant", "content": [call.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
            },
        ],
    )
    assert second.content[0].text == f"[{served}] tool said: sunny"  # type: ignore[union-attr]
    assert second.stop_reason == "end_turn"


def test_translated_tool_request_and_streamed_tool_call(
    client: anthropic.Anthropic, fakes: dict[str, FakeBackend]
) -> None:
    with client.messages.stream(
        model="translated",
        max_tokens=50,
        messages=[{"role": "user", "content": "weather"}],
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (call,) = final.content
    assert call.type == "tool_use"
    assert call.input == {"query": "weather"}
    sent = fakes["cloud"].requests[-1].json
    assert sent["tools"][0]["function"]["name"] == "lookup"
    assert sent["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert sent["parallel_tool_calls"] is False


def test_images_become_content_parts(client: anthropic.Anthropic, fakes: dict[str, FakeBackend]) -> None:
    client.messages.create(
        model="translated",
        max_tokens=20,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
                    },
                ],
            }
        ],
    )
    parts = fakes["cloud"].requests[-1].json["messages"][-1]["content"]
    assert parts == [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
    ]


def test_failover_crosses_from_native_to_translated(
    client: anthropic.Anthropic, fakes: dict[str, FakeBackend]
) -> None:
    fakes["native"].set(status_override=503)
    raw = client.messages.with_raw_response.create(model="native-then-translated", max_tokens=50, messages=HI)
    assert raw.parse().content[0].text == "[gpt] hello there"  # type: ignore[union-attr]
    assert raw.headers["x-aifabric-backend"] == "cloud"
    assert int(raw.headers["x-aifabric-attempts"]) >= 2
    assert fakes["native"].count("/v1/messages") >= 1
    with client.messages.stream(model="native-then-translated", max_tokens=50, messages=HI) as stream:
        assert "".join(stream.text_stream) == "[gpt] hello there"


@pytest.mark.parametrize(
    ("role", "backend", "path", "estimated"),
    [
        ("llama", "llama", "/v1/messages/count_tokens", False),  # llama-server counts natively
        ("native", "native", "/tokenize", False),  # vLLM: its tokenizer, through /tokenize
        ("translated", "cloud", None, True),  # anything else: the gateway's estimate, marked
    ],
)
def test_count_tokens(
    client: anthropic.Anthropic,
    fakes: dict[str, FakeBackend],
    role: str,
    backend: str,
    path: str | None,
    estimated: bool,
) -> None:
    fakes[backend].clear_requests()
    raw = client.messages.with_raw_response.count_tokens(
        model=role, system="Be brief.", messages=[{"role": "user", "content": "one two three four"}]
    )
    count = raw.parse()
    assert count.input_tokens > 0
    assert (raw.headers.get("x-aifabric-token-count") == "estimated") is estimated
    assert (orjson.loads(raw.http_response.content).get("estimated") is True) is estimated
    if path is None:
        assert fakes[backend].requests == []
    else:
        assert [r.path for r in fakes[backend].requests] == [path]
    if role == "llama":
        assert count.input_tokens == 6  # the fake's word count: system and user words


def test_errors_are_anthropic_shaped(start_gateway: Start, fakes: dict[str, FakeBackend]) -> None:
    gw = start_gateway(fabric(fakes))
    with anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        with pytest.raises(anthropic.NotFoundError) as unknown:
            c.messages.create(model="nope", max_tokens=5, messages=HI)
        assert unknown.value.body == {
            "type": "error",
            "error": {"type": "not_found_error", "message": unknown.value.body["error"]["message"]},  # type: ignore[index]
        }
        assert "Valid models" in unknown.value.message
        _strict_error(unknown.value.body)
        with pytest.raises(anthropic.BadRequestError) as kind:
            c.messages.create(model="embed", max_tokens=5, messages=HI)
        assert kind.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert "embeddings role" in kind.value.message
    with anthropic.Anthropic(base_url=gw.url, api_key="wrong", max_retries=0) as c:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            c.messages.create(model="native", max_tokens=5, messages=HI)
        assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        _strict_error(auth.value.body)
        assert "wrong" not in auth.value.message
    with httpx.Client(base_url=gw.url) as http:
        # Bad input the SDK would not send: still a 400 in Anthropic's shape, never a 5xx.
        for body, word in [
            ({"model": "native", "messages": HI}, "max_tokens"),
            ({"model": "native", "max_tokens": 5, "messages": "hi"}, "messages"),
            ({"model": "native", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}, "role"),
            (b"{not json", "JSON"),
            (b'{"model": "native", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "JSON"),
        ]:
            kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
            resp = http.post("/v1/messages", headers={"authorization": f"Bearer {KEY}"}, **kwargs)
            assert resp.status_code == 400, resp.text
            doc = resp.json()
            assert doc["type"] == "error"
            assert doc["error"]["type"] == "invalid_request_error"
            assert word in doc["error"]["message"]
        missing = http.post("/v1/messages", json={"model": "native", "max_tokens": 5, "messages": HI})
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"
        wrong_method = http.get("/v1/messages", headers={"x-api-key": KEY})
        assert wrong_method.status_code == 405
        assert wrong_method.json()["type"] == "error"
        # The OpenAI routes keep OpenAI's shape.
        openai_shaped = http.post("/v1/chat/completions", json={"model": "nope", "messages": HI})
        assert set(openai_shaped.json()) == {"error"}


def _strict_error(body: object) -> None:
    from anthropic.types import ErrorResponse

    ErrorResponse.model_validate(body, strict=True)


def test_upstream_failures_are_anthropic_shaped(
    client: anthropic.Anthropic, fakes: dict[str, FakeBackend]
) -> None:
    fakes["cloud"].set(fail_first_n=1, fail_status=400)
    with pytest.raises(anthropic.BadRequestError) as client_error:
        client.messages.create(model="translated", max_tokens=5, messages=HI)
    assert client_error.value.body["type"] == "error"  # type: ignore[index]
    assert "injected failure" in client_error.value.message
    _strict_error(client_error.value.body)
    fakes["native"].set(status_override=500)
    with pytest.raises(anthropic.InternalServerError) as down:
        client.messages.create(model="native", max_tokens=5, messages=HI)
    assert down.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    _strict_error(down.value.body)
    fakes["native"].set(status_override=503, retry_after=1)
    with pytest.raises(anthropic.InternalServerError) as busy:
        client.messages.create(model="native", max_tokens=5, messages=HI)
    assert busy.value.status_code == 503
    assert busy.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert busy.value.response.headers["retry-after"] == "1"  # the SDK's own retry logic reads it
    _strict_error(busy.value.body)


def test_a_body_over_the_limit_is_413_in_anthropics_shape(
    start_gateway: Start, fakes: dict[str, FakeBackend]
) -> None:
    small = fabric(fakes).replace("{api_keys:", "{max_body_bytes: 2048, api_keys:")
    gw = start_gateway(small)
    big = [{"role": "user", "content": "x" * 5000}]
    with (
        anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0) as c,
        pytest.raises(anthropic.APIStatusError) as too_large,
    ):
        c.messages.create(model="native", max_tokens=5, messages=big)
    assert too_large.value.status_code == 413
    rid = too_large.value.response.headers["x-request-id"]
    assert too_large.value.body == {
        "type": "error",
        "error": {
            "type": "request_too_large",
            "message": f"request body is larger than the limit of 2048 bytes (request id {rid})",
        },
    }
    # The OpenAI routes keep OpenAI's shape for the same refusal.
    openai_shaped = httpx.post(
        gw.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": "native", "messages": big},
    )
    assert openai_shaped.status_code == 413 and openai_shaped.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("role", ["native", "translated"])
def test_a_stream_cut_mid_way_ends_with_an_error_event(
    start_gateway: Start, fakes: dict[str, FakeBackend], role: str
) -> None:
    fakes["native" if role == "native" else "cloud"].set(crash_after_chunks=3)
    gw = start_gateway(fabric(fakes))
    body = {"model": role, "max_tokens": 50, "messages": HI, "stream": True}
    with httpx.Client(base_url=gw.url, headers={"x-api-key": KEY}) as http:
        resp = http.post("/v1/messages", json=body)
    events = _events(resp.content)
    assert events[0][0] == "message_start"
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    assert "mid-stream" in events[-1][1]["error"]["message"]
    with (
        anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0) as c,
        pytest.raises(anthropic.APIStatusError),
        c.messages.stream(model=role, max_tokens=50, messages=HI) as s,
    ):
        s.until_done()


def test_metrics_and_access_log_count_messages_like_chat(
    start_gateway: Start, fakes: dict[str, FakeBackend], caplog: pytest.LogCaptureFixture
) -> None:
    gw = start_gateway(
        fabric(fakes).replace(
            f'gateway: {{api_keys: ["{KEY}"]}}',
            f'gateway: {{api_keys: ["{KEY}"], admin_keys: ["{KEY}"], access_log: true}}',
        )
    )
    caplog.set_level(logging.INFO, logger="aifabric.access")
    with anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        c.messages.create(
            model="translated", max_tokens=5, messages=HI, extra_headers={"x-request-id": "rq-9"}
        )
        with pytest.raises(anthropic.NotFoundError):
            c.messages.create(model="nope", max_tokens=5, messages=HI)
    metrics = httpx.get(
        gw.url + "/metrics", headers={"authorization": f"Bearer {KEY}"}
    ).text  # an operator view
    assert 'aifabric_requests_total{role="translated",status="200"} 1' in metrics
    assert 'aifabric_upstream_attempts_total{role="translated",backend="cloud",outcome="ok"} 1' in metrics
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "aifabric.access"]
    served = lines[0]
    assert (served["role"], served["backend"], served["status"], served["request_id"]) == (
        "translated",
        "cloud",
        200,
        "rq-9",
    )
    assert lines[1]["status"] == 404
    assert all(KEY not in json.dumps(line) for line in lines)


def test_a_loading_backend_holds_a_messages_request_until_it_is_ready(
    start_gateway: Start, fakes: dict[str, FakeBackend]
) -> None:
    # llama-server style 503 "Loading model" for a while: the request waits (warm-up), then succeeds.
    fakes["native"].set(loading=True, loading_ms=600)
    gw = start_gateway(fabric(fakes))
    with anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        raw = c.messages.with_raw_response.create(model="native", max_tokens=5, messages=HI)
    assert raw.parse().content[0].text == "[qwen] hello there"  # type: ignore[union-attr]
    assert int(raw.headers["x-aifabric-attempts"]) >= 2


def test_a_hung_native_backend_fails_over_to_a_translated_one_within_the_try_timeout(
    start_gateway: Start, fakes: dict[str, FakeBackend]
) -> None:
    fakes["native"].set(hang=True)
    text = fabric(fakes).replace("retry: {", "retry: {try_timeout: 300ms, ")
    gw = start_gateway(text)
    try:
        with anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0, timeout=30) as c:
            with c.messages.stream(model="native-then-translated", max_tokens=50, messages=HI) as stream:
                assert "".join(stream.text_stream) == "[gpt] hello there"
            assert stream.response.headers["x-aifabric-backend"] == "cloud"
    finally:
        fakes["native"].set(hang=False)


@pytest.mark.parametrize("role", ["native", "translated", "counted"])
def test_answers_and_events_validate_against_the_sdks_own_types(
    start_gateway: Start, fakes: dict[str, FakeBackend], role: str
) -> None:
    # The SDK builds its objects without validation; here every field's type is checked, strictly.
    from anthropic.types import Message, RawMessageStreamEvent
    from pydantic import TypeAdapter

    gw = start_gateway(fabric(fakes))
    with httpx.Client(base_url=gw.url, headers={"x-api-key": KEY}) as http:
        for tools in (None, TOOLS):
            body: dict[str, Any] = {"model": role, "max_tokens": 50, "messages": HI}
            if tools:
                body["tools"] = tools
            answer = http.post("/v1/messages", json=body).json()
            Message.model_validate(answer, strict=True)
            streamed = http.post("/v1/messages", json={**body, "stream": True})
            adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
            names = []
            for name, data in _events(streamed.content):
                names.append(name)
                if name != "ping":  # Anthropic's keep-alive, outside the SDK's event union
                    adapter.validate_python(data, strict=True)
            assert names[-1] == "message_stop"


def test_claude_codes_beta_query_and_headers_are_accepted(
    start_gateway: Start, fakes: dict[str, FakeBackend]
) -> None:
    # Claude Code posts to /v1/messages?beta=true with anthropic-beta flags and a thinking budget.
    gw = start_gateway(fabric(fakes))
    body = {
        "model": "translated",
        "max_tokens": 50,
        "messages": HI,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    headers = {
        "x-api-key": KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "interleaved-thinking-2025-05-14",
    }
    resp = httpx.post(gw.url + "/v1/messages?beta=true", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["content"][0]["text"] == "[gpt] hello there"
    assert "thinking" not in fakes["cloud"].requests[-1].json  # not carried to chat completions


def _native_target(gw: Any) -> dict[str, Any]:
    view = httpx.get(gw.url + "/status", headers={"authorization": f"Bearer {KEY}"}).json()
    return dict(view["roles"]["native-then-translated"]["targets"][0])


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_native_target_is_ejected_and_then_left_alone(
    start_gateway: Start, fakes: dict[str, FakeBackend], stream: bool
) -> None:
    fakes["native"].set(status_override=500)
    gw = start_gateway(
        fabric(fakes).replace(f'api_keys: ["{KEY}"]', f'api_keys: ["{KEY}"], admin_keys: ["{KEY}"]')
    )
    with anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        for _ in range(3):  # health.consecutive_failures (3) failed attempts, each served by the fallback
            if stream:
                with c.messages.stream(model="native-then-translated", max_tokens=50, messages=HI) as s:
                    assert "".join(s.text_stream) == "[gpt] hello there"
            else:
                reply = c.messages.create(model="native-then-translated", max_tokens=50, messages=HI)
                assert reply.content[0].text == "[gpt] hello there"  # type: ignore[union-attr]
        assert _native_target(gw)["outlier"] == "ejected"
        tried = fakes["native"].count("/v1/messages")
        for _ in range(3):
            raw = c.messages.with_raw_response.create(
                model="native-then-translated", max_tokens=50, messages=HI
            )
            assert raw.headers["x-aifabric-backend"] == "cloud"
            assert raw.headers["x-aifabric-attempts"] == "1"  # the ejected target is not tried first
    assert fakes["native"].count("/v1/messages") == tried


@pytest.mark.parametrize("stream", [False, True])
def test_the_deadline_is_a_504_timeout_error_in_anthropics_shape(
    start_gateway: Start, fakes: dict[str, FakeBackend], stream: bool
) -> None:
    fakes["native"].set(hang=True)
    gw = start_gateway(fabric(fakes).replace("retry: {", "retry: {deadline: 400ms, try_timeout: 5s, "))
    try:
        with httpx.Client(base_url=gw.url, headers={"x-api-key": KEY}, timeout=30) as http:
            resp = http.post(
                "/v1/messages", json={"model": "native", "max_tokens": 5, "messages": HI, "stream": stream}
            )
    finally:
        fakes["native"].set(hang=False)
    assert resp.status_code == 504
    assert resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "timeout_error"
    assert "did not answer in time" in resp.json()["error"]["message"]
    _strict_error(resp.json())


@pytest.mark.parametrize("stream", [False, True])
def test_a_native_backend_that_drops_the_request_fails_over_to_a_translated_one(
    client: anthropic.Anthropic, fakes: dict[str, FakeBackend], stream: bool
) -> None:
    fakes["native"].set(crash_before_headers=True)
    if stream:
        with client.messages.stream(model="native-then-translated", max_tokens=50, messages=HI) as s:
            assert "".join(s.text_stream) == "[gpt] hello there"
        assert s.response.headers["x-aifabric-backend"] == "cloud"
    else:
        raw = client.messages.with_raw_response.create(
            model="native-then-translated", max_tokens=50, messages=HI
        )
        assert raw.parse().content[0].text == "[gpt] hello there"  # type: ignore[union-attr]
        assert raw.headers["x-aifabric-backend"] == "cloud"
    assert fakes["native"].counters["crashes"] >= 1
    assert [r.path for r in fakes["cloud"].requests] == ["/v1/chat/completions"]


def test_a_404_lists_only_the_models_messages_serves_and_a_401_names_x_api_key(
    start_gateway: Start, fakes: dict[str, FakeBackend]
) -> None:
    # Roles of other kinds (embeddings, rerank, transcription) and their aliases are no valid model for
    # /v1/messages; a chat role's alias is.
    extra = """
  rr: {kind: rerank, targets: [{backend: native, model: bge}]}
  stt: {kind: transcription, targets: [{backend: native, model: whisper}]}
aliases: {claude/native: native, v/embed: embed, r/rr: rr}
"""
    gw = start_gateway(fabric(fakes) + extra)
    with (
        anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0) as c,
        pytest.raises(anthropic.NotFoundError) as unknown,
    ):
        c.messages.create(model="nope", max_tokens=5, messages=HI)
    chat = "claude/native, counted, llama, native, native-then-translated, translated"
    assert f"Valid models: {chat}. " in unknown.value.body["error"]["message"]  # type: ignore[index]
    with httpx.Client(base_url=gw.url) as http:
        # No key: Anthropic's SDKs send it as x-api-key, which the 401 names first.
        missing = http.post("/v1/messages", json={"model": "native", "max_tokens": 5, "messages": HI})
        assert missing.status_code == 401
        message = missing.json()["error"]["message"]
        assert "send `x-api-key: <key>` (or `Authorization: Bearer <key>`)" in message
        # The OpenAI routes keep naming Authorization: Bearer.
        openai_missing = http.post("/v1/chat/completions", json={"model": "native", "messages": HI})
        assert openai_missing.status_code == 401
        assert "send `Authorization: Bearer <key>`" in openai_missing.json()["error"]["message"]
        assert "x-api-key" not in openai_missing.json()["error"]["message"]
