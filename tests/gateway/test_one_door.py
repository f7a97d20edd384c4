"""The door holds for what a client sends: every malformed or ambiguous request is a 4xx with the
request's id, never a 5xx, and means one thing only (found by an audit with raw sockets; issue 13)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from aifabric.testing.fake_backend import FakeBackend

Start = Callable[..., Any]
KEY = "sk-door-0123456789abcdef"


def fabric(url: str, *, keys: bool = False) -> str:
    gateway = f'gateway: {{api_keys: ["{KEY}"]}}\n' if keys else ""
    return (
        gateway
        + f"""
backends:
  b1: {{kind: vllm, url: "{url}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: b1, model: m1}}]}}
  openai/strong: {{kind: chat, targets: [{{backend: b1, model: m1}}]}}
"""
    )


def raw(port: int, payload: bytes, *, timeout: float = 5.0) -> bytes:
    """Send `payload` in one write; everything the gateway sends until it closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while data := sock.recv(65536):
                chunks.append(data)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def post_raw(port: int, body: bytes) -> bytes:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    return raw(port, head + body)


def status_and_error(reply: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), json.loads(body)["error"], headers


def nested(depth: int) -> bytes:
    return b'{"model":"chat-fast","messages":[{"role":"user","content":"hi"}],"x":' + (
        b"[" * depth + b"]" * depth + b"}"
    )


@pytest.mark.parametrize("depth", [65, 1_025, 100_000])
def test_deep_nesting_is_400_at_the_door_and_reaches_no_backend(
    start_gateway: Start, fb: FakeBackend, depth: int
) -> None:
    gw = start_gateway(fabric(fb.url))
    status, error, headers = status_and_error(post_raw(gw.port, nested(depth)))
    assert status == 400 and error["code"] == "json_too_deep"
    assert headers["x-request-id"] in error["message"]
    assert fb.requests == []  # no backend saw it, none was ejected for it


def test_nesting_within_the_bound_is_forwarded(start_gateway: Start, fb: FakeBackend) -> None:
    gw = start_gateway(fabric(fb.url))
    assert post_raw(gw.port, nested(60)).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "body",
    [
        rb'{"model":"\ud800","messages":[]}',  # a lone surrogate in the model name
        rb'{"model":"chat-fast","model":"chat-fast","x":"\ud800","messages":[]}',  # and duplicate keys
        rb'{"model":"chat-fast","messages":[{"role":"user","content":"\udfff"}]}',
    ],
)
def test_a_lone_surrogate_is_400_not_500(start_gateway: Start, fb: FakeBackend, body: bytes) -> None:
    gw = start_gateway(fabric(fb.url))
    status, error, headers = status_and_error(post_raw(gw.port, body))
    assert status == 400, error
    assert error["type"] == "invalid_request_error" and "surrogate" in error["message"]
    assert headers["x-request-id"] in error["message"]
    assert fb.requests == []


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (rb'{"model":"chat-fast","mod\u0065l":"other","messages":[]}', "model"),
        (rb'{"model":"chat-fast","model":"openai/strong","messages":[]}', "model"),
        (rb'{"model":"chat-fast","stream":false,"str\u0065am":true,"messages":[]}', "stream"),
        # Written twice plainly: the gateway read the last `stream` and answered a stream, both reached
        # the backend, whose parser may take the first.
        (rb'{"model":"chat-fast","stream":false,"stream":true,"messages":[]}', "stream"),
        (rb'{"model":"chat-fast","max_tokens":1,"max_tokens":5,"messages":[]}', "max_tokens"),
        (b'{"model":"chat-fast", "messages" :[], "max_tokens": 1, "messages"\n:[]}', "messages"),
        # Keys the gateway does not read: the backend's parser may take either spelling's value.
        (rb'{"model":"chat-fast","max_tokens":1,"max_tok\u0065ns":4096,"messages":[]}', "max_tokens"),
        (rb'{"model":"chat-fast","messages":[],"m\u0065ssages":[{"role":"user","content":"x"}]}', "messages"),
        (rb'{"model":"chat-fast","messages":[],"a/b":1,"a\/b":2}', "a/b"),
        # A slash escaped before a key spelled with \u: the first escape found is not the only one.
        (rb'{"model":"chat-fast","url":"http:\/\/x","mod\u0065l":"other","messages":[]}', "model"),
    ],
)
def test_a_repeated_top_level_key_is_400_naming_it(
    start_gateway: Start, fb: FakeBackend, body: bytes, key: str
) -> None:
    """Routed on one `model`, read by the backend as the other: a role restriction bypassed; any other
    key read differently by two parsers is one request with two meanings."""
    gw = start_gateway(fabric(fb.url))
    status, error, _ = status_and_error(post_raw(gw.port, body))
    assert status == 400 and error["code"] == "duplicate_key" and error["param"] == key
    assert f"`{key}`" in error["message"]
    assert fb.requests == []


def test_key_names_inside_values_are_not_duplicates(start_gateway: Start, fb: FakeBackend) -> None:
    """The cheap pass counts `"name":`; text quoting a key, a value equal to a key's name and a nested
    key of the same name are one request like any other."""
    gw = start_gateway(fabric(fb.url))
    body = json.dumps(
        {
            "model": "chat-fast",
            "messages": [
                {"role": "user", "content": 'send {"model": "x", "stream": true}'},
                {"role": "user", "content": "user"},
            ],
            "user": "u1",
            "metadata": {"stream": "no", "user": "x"},
        }
    ).encode()
    reply = post_raw(gw.port, body)
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
    sent = fb.requests[-1].json
    assert sent["model"] == "m1" and sent["metadata"] == {"stream": "no", "user": "x"}
    assert sent["messages"][0]["content"] == 'send {"model": "x", "stream": true}'


def test_escaped_slashes_in_content_are_served(start_gateway: Start, fb: FakeBackend) -> None:
    """PHP's json_encode escapes every slash: such a body is one request like any other."""
    gw = start_gateway(fabric(fb.url))
    body = rb'{"model":"chat-fast","messages":[{"role":"user","content":"see https:\/\/example.com\/a"}]}'
    reply = post_raw(gw.port, body)
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
    assert fb.requests[-1].json["messages"][0]["content"] == "see https://example.com/a"


def test_a_model_key_nested_in_a_tool_schema_is_not_a_duplicate(
    start_gateway: Start, fb: FakeBackend
) -> None:
    gw = start_gateway(fabric(fb.url))
    body = {
        "model": "chat-fast",
        "messages": [{"role": "user", "content": "caf\u00e9"}],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"model": {"type": "string"}}}}
        ],
    }
    # ensure_ascii: the body holds \u escapes, so the exact (slower) duplicate check runs and passes.
    reply = post_raw(gw.port, json.dumps(body, ensure_ascii=True).encode())
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
    assert fb.requests[-1].json["model"] == "m1"


def test_an_upgrade_request_gets_one_answer_then_close(start_gateway: Start, fb: FakeBackend) -> None:
    gw = start_gateway(fabric(fb.url))
    reply = raw(
        gw.port,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"\x81\x85not-http-at-all",
    )
    assert reply.count(b"HTTP/1.1 ") == 1, reply  # no unrequested 400 after it (a desync)
    assert reply.startswith(b"HTTP/1.1 200 ") and b"connection: close" in reply


@pytest.mark.parametrize("method", ["TRACE", "DELETE", "POST", "PUT"])
def test_any_other_method_on_models_is_405_with_allow(
    start_gateway: Start, fb: FakeBackend, method: str
) -> None:
    gw = start_gateway(fabric(fb.url))
    for path in ("/v1/models", "/v1/models/chat-fast"):
        r = httpx.request(method, gw.url + path)
        assert r.status_code == 405, (method, path)
        assert r.headers["allow"] == "GET, HEAD"
        assert r.json()["error"]["code"] == "method_not_allowed"
        assert r.headers["x-request-id"] in r.json()["error"]["message"]


def test_a_percent_encoded_role_name_is_decoded(start_gateway: Start, fb: FakeBackend) -> None:
    gw = start_gateway(fabric(fb.url))
    r = httpx.get(gw.url + "/v1/models/openai%2Fstrong")
    assert r.status_code == 200 and r.json()["id"] == "openai/strong"


def test_long_names_and_paths_are_cut_in_error_bodies(start_gateway: Start, fb: FakeBackend) -> None:
    gw = start_gateway(fabric(fb.url))
    big = "m" * 1_000_000
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": big, "messages": []})
    assert r.status_code == 404 and len(r.content) < 2_000
    assert "(1000000 characters)" in r.json()["error"]["message"]
    reply = raw(gw.port, b"GET /" + b"p" * 60_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, error, _ = status_and_error(reply)
    assert status == 404 and len(reply) < 2_000 and "characters)" in error["message"]


def test_a_100_kib_head_in_one_write_is_431(start_gateway: Start, fb: FakeBackend) -> None:
    gw = start_gateway(fabric(fb.url))
    head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"
    head += b"".join(b"x-pad-%d: %s\r\n" % (i, b"v" * 1000) for i in range(103)) + b"\r\n"
    assert len(head) > 100 * 1024
    status, error, headers = status_and_error(raw(gw.port, head))
    assert status == 431 and headers["x-request-id"] in error["message"]


def test_every_answer_carries_a_request_id_and_errors_name_it(start_gateway: Start, fb: FakeBackend) -> None:
    gw = start_gateway(fabric(fb.url, keys=True))
    auth = {"authorization": f"Bearer {KEY}"}
    chat = {"model": "chat-fast", "messages": [{"role": "user", "content": "hi"}]}
    answers = {
        "401": httpx.post(gw.url + "/v1/chat/completions", json=chat),
        "404 model": httpx.post(gw.url + "/v1/chat/completions", json=dict(chat, model="nope"), headers=auth),
        "400": httpx.post(gw.url + "/v1/chat/completions", content=b"{", headers=auth),
        "404 route": httpx.get(gw.url + "/nowhere"),
        "models": httpx.get(gw.url + "/v1/models", headers=auth),
        "live": httpx.get(gw.url + "/health/live"),
        "forwarded": httpx.post(gw.url + "/v1/chat/completions", json=chat, headers=auth),
    }
    for what, r in answers.items():
        rid = r.headers.get("x-request-id")
        assert rid, f"{what} has no x-request-id"
        if r.status_code >= 400:
            assert f"(request id {rid})" in r.json()["error"]["message"], what
    # The client's own id is kept, on errors too.
    mine = httpx.post(gw.url + "/v1/chat/completions", json=chat, headers={"x-request-id": "trace-77"})
    assert mine.headers["x-request-id"] == "trace-77" and "trace-77" in mine.json()["error"]["message"]
    # The listener's own errors (an unparsable request) have one as well.
    status, error, headers = status_and_error(raw(gw.port, b"NOT HTTP\r\n\r\n"))
    assert status == 400 and headers["x-request-id"] in error["message"]


def test_the_api_without_its_prefix_is_served_and_keyed_on_the_head(
    start_gateway: Start, fb: FakeBackend
) -> None:
    gw = start_gateway(fabric(fb.url, keys=True))
    chat = b'{"model":"chat-fast","messages":[{"role":"user","content":"hi"}]}'
    head = b"POST /chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n"
    refused = raw(gw.port, head % len(chat) + b"\r\n")  # the head alone: refused before any body
    assert refused.startswith(b"HTTP/1.1 401 ")
    served = raw(gw.port, head % len(chat) + b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n" + chat)
    assert served.startswith(b"HTTP/1.1 200 ")
    nowhere = raw(gw.port, b"POST /v1/nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    assert nowhere.startswith(b"HTTP/1.1 404 ")  # an unknown route with a body: at once, unread


def test_anthropic_errors_keep_their_shape_and_name_the_request_id(
    start_gateway: Start, fb: FakeBackend
) -> None:
    gw = start_gateway(fabric(fb.url, keys=True))
    head = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n"
    reply = raw(gw.port, head)  # refused on the head, in Anthropic's shape
    head_part, _, body = reply.partition(b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 401 ")
    doc = json.loads(body)
    assert doc["type"] == "error" and doc["error"]["type"] == "authentication_error"
    rid = dict(line.split(": ", 1) for line in head_part.decode().split("\r\n")[1:])["x-request-id"]
    assert f"(request id {rid})" in doc["error"]["message"]
    r = httpx.get(gw.url + "/v1/messages", headers={"x-request-id": "mine-1", "x-api-key": KEY})
    assert r.status_code == 405 and r.headers["x-request-id"] == "mine-1"
    assert r.json()["type"] == "error" and "mine-1" in r.json()["error"]["message"]
