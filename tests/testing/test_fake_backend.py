"""The fake backend speaks the OpenAI API the way the official client and a plain HTTP client expect.

Its fault switches are proven in test_fake_backend_faults.py, its process interfaces (HTTP control, CLI,
asyncio) in test_fake_backend_control.py.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from aifabric.testing.fake_backend import FakeBackend

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def fb() -> Iterator[FakeBackend]:
    with FakeBackend("vllm", ("m1", "m2")) as backend:
        yield backend


_clients: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    # An unclosed client leaves a pooled socket for the garbage collector: a ResourceWarning, an error here.
    yield
    while _clients:
        _clients.pop().close()


def client(fb: FakeBackend, api_key: str = "unused") -> openai.OpenAI:
    made = openai.OpenAI(base_url=fb.url, api_key=api_key, max_retries=0)
    _clients.append(made)
    return made


def sse_events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    return [e.removeprefix("data: ") for e in events]


def test_urls_name_the_loopback_port(fb: FakeBackend) -> None:
    assert fb.base_url == f"http://127.0.0.1:{fb.port}"
    assert fb.url == fb.base_url + "/v1"


def test_chat_reply_names_the_served_model_and_echoes_the_user(fb: FakeBackend) -> None:
    reply = client(fb).chat.completions.create(model="m2", messages=USER)
    assert reply.model == "m2"
    assert reply.choices[0].message.content == "[m2] hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (2, 3, 5)


def test_chat_stream_sends_one_chunk_per_token_then_done(fb: FakeBackend) -> None:
    body = {"model": "m1", "messages": USER, "stream": True}
    response = httpx.post(fb.url + "/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[:-1]]
    assert contents == ["[m1]", " hello", " there"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["model"] == "m1" and "usage" not in c for c in chunks)


def test_chat_stream_with_the_official_client_and_include_usage(fb: FakeBackend) -> None:
    stream = client(fb).chat.completions.create(
        model="m1", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[m1] hello there"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


@pytest.mark.parametrize(
    ("kind", "switches"),
    [("llama-cpp-python", {}), ("vllm", {"supports_include_usage": False})],
)
def test_include_usage_ignored_where_the_server_does_not_support_it(
    kind: str, switches: dict[str, Any]
) -> None:
    with FakeBackend(kind, ("m",), **switches) as fb:
        stream = client(fb).chat.completions.create(
            model="m", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        assert all(c.usage is None and c.choices for c in stream)


def test_tokens_switch_sets_the_chunk_count_and_max_tokens_cuts(fb: FakeBackend) -> None:
    fb.set(tokens=7)
    stream = client(fb).chat.completions.create(model="m1", messages=USER, stream=True)
    contents = [c.choices[0].delta.content for c in stream if c.choices[0].finish_reason is None]
    assert len(contents) == 7
    cut = client(fb).chat.completions.create(model="m1", messages=USER, max_tokens=2)
    assert cut.choices[0].message.content == "[m1] hello"
    assert cut.choices[0].finish_reason == "length"


def test_reply_switch_replaces_the_text(fb: FakeBackend) -> None:
    fb.set(reply='{"answer": 42}')
    reply = client(fb).chat.completions.create(model="m1", messages=USER)
    assert reply.choices[0].message.content == '{"answer": 42}'


def test_completions_plain_and_streamed(fb: FakeBackend) -> None:
    done = client(fb).completions.create(model="m1", prompt="once upon")
    assert done.choices[0].text == "[m1] once upon"
    assert done.object == "text_completion"
    streamed = client(fb).completions.create(model="m1", prompt="once upon", stream=True)
    assert "".join(c.choices[0].text for c in streamed) == "[m1] once upon"


def test_embeddings_are_deterministic_unit_vectors_in_float_and_base64(fb: FakeBackend) -> None:
    # The official client asks for base64 and decodes it; a raw request gets floats. They must agree.
    official = client(fb).embeddings.create(model="m1", input=["alpha", "beta"])
    raw = httpx.post(fb.url + "/embeddings", json={"model": "m1", "input": ["alpha", "beta"]}).json()
    assert official.model == raw["model"] == "m1"
    assert [d.embedding for d in official.data] == [d["embedding"] for d in raw["data"]]
    alpha, beta = (d["embedding"] for d in raw["data"])
    assert len(alpha) == 8
    assert math.isclose(sum(x * x for x in alpha), 1.0, rel_tol=1e-5)
    assert alpha != beta
    again = httpx.post(fb.url + "/embeddings", json={"model": "m1", "input": "alpha"}).json()
    assert again["data"][0]["embedding"] == alpha
    assert raw["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


def test_embedding_dim_switch_and_base64_layout(fb: FakeBackend) -> None:
    fb.set(embedding_dim=384)
    body = {"model": "m1", "input": "x", "encoding_format": "base64"}
    encoded = httpx.post(fb.url + "/embeddings", json=body).json()["data"][0]["embedding"]
    vector = struct.unpack("<384f", base64.b64decode(encoded))
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5)


def test_models_lists_the_served_ids_and_follows_the_switch(fb: FakeBackend) -> None:
    assert [m.id for m in client(fb).models.list()] == ["m1", "m2"]
    fb.set(models=["BAAI/bge-base-en-v1.5"])
    assert [m.id for m in client(fb).models.list()] == ["BAAI/bge-base-en-v1.5"]


def test_bad_requests_get_400_in_the_kinds_shape(fb: FakeBackend) -> None:
    bad_json = httpx.post(fb.url + "/chat/completions", content=b"{not json", headers={"content-type": "x"})
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["code"] == 400
    no_messages = httpx.post(fb.url + "/chat/completions", json={"model": "m1"})
    assert no_messages.status_code == 400
    assert no_messages.json()["error"]["type"] == "BadRequestError"


@pytest.mark.parametrize("spec", [[], 1.0, "x", None])
def test_a_malformed_json_schema_or_tool_choice_is_answered_not_a_closed_connection(
    fb: FakeBackend, spec: object
) -> None:
    # The gateway's fuzz tests send such bodies through to the fake backend: a crash there closed the
    # connection, and the gateway rightly answered 502 (a generated case found it).
    body = {
        "model": "m1",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": spec},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": {"type": "function", "function": spec},
    }
    answer = httpx.post(fb.url + "/chat/completions", json=body)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "f"


# ------------------------------------------------------------------------------------ probes per kind


@pytest.mark.parametrize(
    ("kind", "status", "body"),
    [
        ("vllm", 200, b""),
        ("llamacpp", 200, b'{"status":"ok"}'),
        ("tei", 200, b""),
        ("llama-cpp-python", 404, None),
    ],
)
def test_health_probe_per_kind(kind: str, status: int, body: bytes | None) -> None:
    with FakeBackend(kind, ("m",)) as fb:
        response = httpx.get(fb.base_url + "/health")
        assert response.status_code == status
        if body is not None:
            assert response.content == body


def test_ollama_root_and_tags() -> None:
    with FakeBackend("ollama", ("llama3:8b", "qwen:0.5b")) as fb, httpx.Client() as http:
        root = http.get(fb.base_url + "/")
        assert (root.status_code, root.text) == (200, "Ollama is running")
        head = http.head(fb.base_url + "/")  # no body after a HEAD, or the next answer would be garbled
        assert (head.status_code, head.content) == (200, b"")
        tags = http.get(fb.base_url + "/api/tags").json()
        assert [m["name"] for m in tags["models"]] == ["llama3:8b", "qwen:0.5b"]


def test_vllm_metrics_carry_switchable_load_gauges(fb: FakeBackend) -> None:
    fb.set(num_requests_running=3, num_requests_waiting=7, kv_cache_usage=0.92)
    text = httpx.get(fb.base_url + "/metrics").text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert float(lines['vllm:num_requests_running{model_name="m1"}']) == 3
    assert float(lines['vllm:num_requests_waiting{model_name="m1"}']) == 7
    assert float(lines['vllm:kv_cache_usage_perc{model_name="m1"}']) == pytest.approx(0.92)
    assert "# TYPE vllm:num_requests_waiting gauge" in text


def test_llama_server_slots() -> None:
    with FakeBackend("llamacpp", ("m",), slots=4, slots_busy=3) as fb:
        slots = httpx.get(fb.base_url + "/slots").json()
        assert [s["id"] for s in slots] == [0, 1, 2, 3]
        assert [s["is_processing"] for s in slots] == [True, True, True, False]


# ------------------------------------------------------------------------------- unknown model, auth


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "vllm",
            {
                "message": "The model `nope` does not exist.",
                "type": "NotFoundError",
                "param": None,
                "code": 404,
            },
        ),
        ("openai", {"type": "invalid_request_error", "code": "model_not_found"}),
        ("ollama", {"type": "not_found_error", "code": None}),
    ],
)
def test_unknown_model_is_404_in_the_kinds_shape(kind: str, expected: dict[str, object]) -> None:
    with FakeBackend(kind, ("m",)) as fb:
        response = httpx.post(fb.url + "/chat/completions", json={"model": "nope", "messages": USER})
        assert response.status_code == 404
        error = response.json()["error"]
        assert expected.items() <= error.items()


@pytest.mark.parametrize(
    ("kind", "switches"), [("llama-cpp-python", {}), ("vllm", {"unknown_model_404": False})]
)
def test_unknown_model_silently_served_by_the_first_id(kind: str, switches: dict[str, Any]) -> None:
    with FakeBackend(kind, ("loaded",), **switches) as fb:
        reply = client(fb).chat.completions.create(model="whatever", messages=USER)
        assert reply.model == "loaded"


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("vllm", {"error": "Unauthorized"}),
        ("llamacpp", {"error": {"code": 401, "message": "Invalid API key", "type": "authentication_error"}}),
        ("llama-cpp-python", {"detail": "Invalid API key"}),
        ("openai", {"error": {"message": "Invalid API key", "type": "invalid_request_error", "param": None,
                              "code": "invalid_api_key"}}),
    ],
)  # fmt: skip
def test_api_key_required_with_401_in_the_kinds_shape(kind: str, body: dict[str, object]) -> None:
    with FakeBackend(kind, ("m",), api_key="sekrit") as fb:
        for headers in ({}, {"authorization": "Bearer wrong"}):
            response = httpx.get(fb.url + "/models", headers=headers)
            assert response.status_code == 401
            assert response.json() == body
        good = client(fb, api_key="sekrit")
        assert [m.id for m in good.models.list()] == ["m"]


def test_api_key_does_not_guard_the_probes() -> None:
    with FakeBackend("vllm", ("m",), api_key="sekrit") as fb:
        assert httpx.get(fb.base_url + "/health").status_code == 200


# --------------------------------------------------------------------------- HTTP/1.1 and recording


def test_keep_alive_serves_many_requests_on_one_connection(fb: FakeBackend) -> None:
    with httpx.Client(base_url=fb.url) as http:
        for stream in (False, True, False, True):
            body = {"model": "m1", "messages": USER, "stream": stream}
            assert http.post("/chat/completions", json=body).status_code == 200
        assert http.get("/models").status_code == 200
    assert fb.counters["connections"] == 1
    assert fb.counters["requests"] == 5


def raw_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_pipelined_requests_chunked_request_body_and_connection_close(fb: FakeBackend) -> None:
    body = json.dumps({"model": "m1", "input": "hi"}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    payload = (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
        + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )  # fmt: skip
    received = raw_exchange(fb.port, payload)  # returns only because the server honours Connection: close
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert received.index(b'"object":"list","data":[{"id":"m1"') < received.index(b'"object":"embedding"')
    assert received.count(b"Connection: close") == 1  # only the last answer announces the close


def test_requests_are_recorded_with_lower_case_headers_and_json(fb: FakeBackend) -> None:
    httpx.post(fb.url + "/chat/completions", json={"model": "m1", "messages": USER, "seed": 7},
               headers={"X-Trace": "abc", "Authorization": "Bearer k"})  # fmt: skip
    httpx.get(fb.base_url + "/health")
    first, second = fb.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["x-trace"] == "abc"
    assert first.headers["authorization"] == "Bearer k"
    assert first.json["seed"] == 7
    assert (second.method, second.path, second.json) == ("GET", "/health", None)
    assert fb.count("/health") == 1
    fb.clear_requests()
    assert fb.requests == []


def test_tei_errors_are_flat_native_and_openai_compatible() -> None:
    with FakeBackend("tei", ("bge",), status_override=413) as fb:
        native = httpx.post(fb.base_url + "/embed", json={"inputs": "x"})
        assert native.status_code == 413
        assert native.json() == {
            "error": "fake backend: injected failure (HTTP 413)",
            "error_type": "Validation",
        }
        compat = httpx.post(fb.url + "/embeddings", json={"model": "bge", "input": "x"})
        assert compat.json() == {
            "message": "fake backend: injected failure (HTTP 413)",
            "code": 413,
            "type": "Validation",
        }
        fb.set(status_override=None)
        assert len(httpx.post(fb.base_url + "/embed", json={"inputs": ["a", "b"]}).json()) == 2


def test_ollama_native_errors_are_flat_and_error_style_overrides() -> None:
    with FakeBackend("ollama", ("llama3",), status_override=500, fault_scope="all") as fb:
        assert httpx.get(fb.base_url + "/api/tags").json() == {
            "error": "fake backend: injected failure (HTTP 500)"
        }
        fb.set(error_style="ollama")  # the native shape on /v1 too, for a normalizer's test
        response = httpx.post(fb.url + "/chat/completions", json={"model": "llama3", "messages": USER})
        assert response.json() == {"error": "fake backend: injected failure (HTTP 500)"}
