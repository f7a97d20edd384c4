"""The platform contract through the official `openai` client: roles, aliases, streaming, embeddings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from aifabric.testing.fake_backend import FakeBackend


@pytest.fixture
def backends() -> Iterator[dict[str, FakeBackend]]:
    fakes = {
        "chat": FakeBackend(
            kind="vllm", models=("Qwen2.5-7B-Instruct-AWQ",), api_key="chat-backend-key"
        ).start(),
        "embed": FakeBackend(kind="vllm", models=("bge-base-en-v1.5",)).start(),
        "lcp": FakeBackend(kind="llama-cpp-python", models=("smollm2",)).start(),
    }
    yield fakes
    for fb in fakes.values():
        fb.stop()


def fabric(b: dict[str, FakeBackend], extra_gateway: str = "") -> str:
    return f"""
gateway:
  host: 127.0.0.1
  port: 0
{extra_gateway}
backends:
  chat-vllm: {{kind: vllm, url: "{b["chat"].url}", api_key: "chat-backend-key"}}
  embed: {{kind: vllm, url: "{b["embed"].url}"}}
  local-lcp: {{kind: llama-cpp-python, url: "{b["lcp"].url}"}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: chat-vllm, model: Qwen2.5-7B-Instruct-AWQ}}]
  chat-local:
    kind: chat
    targets: [{{backend: local-lcp, model: smollm2}}]
  embeddings-general:
    kind: embeddings
    targets: [{{backend: embed, model: bge-base-en-v1.5}}]
aliases:
  local/chat: chat-fast
  local/embed: embeddings-general
"""


Start = Callable[..., Any]


def test_models_lists_every_role_and_alias(start_gateway: Start, backends: dict[str, FakeBackend]) -> None:
    gw = start_gateway(fabric(backends))
    client = gw.openai()
    ids = {m.id for m in client.models.list()}
    assert ids == {"chat-fast", "chat-local", "embeddings-general", "local/chat", "local/embed"}
    # Also without the /v1 prefix, as some clients are configured.
    plain = httpx.get(gw.url + "/models").json()
    assert {m["id"] for m in plain["data"]} == ids


def test_alias_routes_to_role_and_rewrites_model(
    start_gateway: Start, backends: dict[str, FakeBackend]
) -> None:
    gw = start_gateway(fabric(backends))
    client = gw.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="local/chat", messages=[{"role": "user", "content": "hello there"}], max_tokens=10
    )
    completion = raw.parse()
    assert "hello there" in (completion.choices[0].message.content or "")
    # The body's model is what the backend reports; headers say what served it.
    assert completion.model == "Qwen2.5-7B-Instruct-AWQ"
    assert raw.headers["x-aifabric-role"] == "chat-fast"
    assert raw.headers["x-aifabric-backend"] == "chat-vllm"
    assert raw.headers["x-aifabric-model"] == "Qwen2.5-7B-Instruct-AWQ"
    assert raw.headers["x-aifabric-attempts"] == "1"
    sent = backends["chat"].requests[-1]
    assert sent.json["model"] == "Qwen2.5-7B-Instruct-AWQ"


def test_every_other_field_passes_through_untouched(
    start_gateway: Start, backends: dict[str, FakeBackend]
) -> None:
    gw = start_gateway(fabric(backends))
    body: dict[str, Any] = {
        "model": "chat-fast",
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        ],
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "top_logprobs": 2,
        "n": 2,
        "stop": ["\n\n", "END"],
        "seed": 1234,
        "temperature": 0.7,
        "max_tokens": 10,
        "guided_json": {"type": "object"},  # a vLLM vendor field
        "nested": {"deep": [1, 2.5, None, "x"], "big": 12345678901234567890123},
    }
    r = httpx.post(gw.url + "/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    sent = backends["chat"].requests[-1].json
    expected = dict(body, model="Qwen2.5-7B-Instruct-AWQ")
    assert sent == expected


def test_backend_key_is_sent_and_client_authorization_never_forwarded(
    start_gateway: Start, backends: dict[str, FakeBackend]
) -> None:
    gw = start_gateway(
        fabric(backends, '  api_keys: ["${FABRIC_MASTER_KEY}"]'),
        environ={"FABRIC_MASTER_KEY": "sk-master-123456"},
    )
    client = gw.openai(api_key="sk-master-123456")
    client.chat.completions.create(model="chat-fast", messages=[{"role": "user", "content": "hi"}])
    headers = backends["chat"].requests[-1].headers
    assert headers["authorization"] == "Bearer chat-backend-key"
    client.embeddings.create(model="embeddings-general", input="x")
    # The embeddings backend has no key: it gets no Authorization at all, certainly not the client's.
    assert "authorization" not in backends["embed"].requests[-1].headers


def test_streaming_passes_chunks_through(start_gateway: Start, backends: dict[str, FakeBackend]) -> None:
    backends["chat"].set(tokens=6, token_delay_ms=20)
    gw = start_gateway(fabric(backends))
    client = gw.openai()
    stream = client.chat.completions.create(
        model="chat-fast",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content
    assert len([c for c in chunks if c.choices]) >= 6
    # include_usage honoured: the last chunk carries usage and no choices.
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].choices == []


def test_stream_headers_say_no_buffering(start_gateway: Start, backends: dict[str, FakeBackend]) -> None:
    gw = start_gateway(fabric(backends))
    body = {"model": "chat-fast", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body) as r:
        assert r.headers["x-accel-buffering"] == "no"
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    assert text.rstrip().endswith("data: [DONE]")


def test_include_usage_is_synthesized_for_backends_that_ignore_it(
    start_gateway: Start, backends: dict[str, FakeBackend]
) -> None:
    # llama-cpp-python does not support stream_options.include_usage: the gateway adds the usage chunk.
    backends["lcp"].set(tokens=5)
    gw = start_gateway(fabric(backends))
    client = gw.openai()
    chunks = list(
        client.chat.completions.create(
            model="chat-local",
            messages=[{"role": "user", "content": "count to five"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == len([c for c in chunks if c.choices and c.choices[0].delta.content])
    assert usage.prompt_tokens > 0
    assert "stream_options" not in backends["lcp"].requests[-1].json


def test_async_client_chat_stream_and_embeddings(
    start_gateway: Start, backends: dict[str, FakeBackend]
) -> None:
    gw = start_gateway(fabric(backends))

    async def main() -> None:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused")
        results = await asyncio.gather(
            *[
                client.chat.completions.create(
                    model="chat-fast", messages=[{"role": "user", "content": f"q{i}"}]
                )
                for i in range(8)
            ]
        )
        assert [f"q{i}" in (r.choices[0].message.content or "") for i, r in enumerate(results)] == [True] * 8
        stream = await client.chat.completions.create(
            model="chat-fast", messages=[{"role": "user", "content": "s"}], stream=True
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(parts)
        emb = await client.embeddings.create(model="local/embed", input=["one", "two"])
        assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
        await client.close()

    asyncio.run(main())


def test_completions_endpoint(start_gateway: Start, backends: dict[str, FakeBackend]) -> None:
    gw = start_gateway(fabric(backends))
    client = gw.openai()
    done = client.completions.create(model="chat-fast", prompt="Once upon", max_tokens=5)
    assert done.choices[0].text
    assert backends["chat"].requests[-1].path == "/v1/completions"


def test_health_live_and_ready(start_gateway: Start, backends: dict[str, FakeBackend]) -> None:
    gw = start_gateway(fabric(backends))
    assert httpx.get(gw.url + "/health/live").status_code == 200
    ready = httpx.get(gw.url + "/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
