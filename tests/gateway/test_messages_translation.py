"""The Messages <-> chat completions translation as pure functions: what the SDK tests cannot reach
(chunk boundaries anywhere, CRLF events, an upstream error chunk, odd tool arguments)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aifabric.errors import BadRequest
from aifabric.gateway.dialects.messages import MessagesStream, check_request, from_chat, to_chat


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    obj = {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def events(data: bytes) -> list[dict[str, Any]]:
    out = []
    for block in data.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                out.append(orjson.loads(line[6:]))
    return out


UPSTREAM = (
    chunk({"role": "assistant", "content": "Hel"})
    + chunk({"content": "lo"})
    + chunk({}, "stop")
    + b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}\n\n'
    + b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("size", [1, 7, 64, len(UPSTREAM)])
def test_stream_translation_does_not_depend_on_where_chunks_are_cut(size: int) -> None:
    translator = MessagesStream({"model": "role"}, upstream_usage=True)
    out = b"".join(translator.feed(UPSTREAM[i : i + size]) for i in range(0, len(UPSTREAM), size))
    out += translator.finish()
    got = events(out)
    assert [e["type"] for e in got] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "".join(e["delta"]["text"] for e in got if e["type"] == "content_block_delta") == "Hello"
    assert got[-2]["usage"] == {"input_tokens": 7, "output_tokens": 2}
    assert got[0]["message"]["id"] == "msg_c1"


def test_crlf_events_and_no_usage_are_counted() -> None:
    upstream = (chunk({"content": "a"}) + chunk({"content": "b"}) + chunk({}, "length")).replace(
        b"\n\n", b"\r\n\r\n"
    )
    translator = MessagesStream({"model": "role"}, upstream_usage=False)
    got = events(translator.feed(upstream) + translator.finish())
    assert got[-2]["delta"]["stop_reason"] == "max_tokens"
    assert got[-2]["usage"]["output_tokens"] == 2


def test_an_error_chunk_ends_the_stream_with_an_error_event() -> None:
    translator = MessagesStream({}, upstream_usage=True)
    out = translator.feed(chunk({"content": "a"}) + b'data: {"error": {"message": "boom"}}\n\n')
    out += translator.feed(chunk({"content": "ignored"})) + translator.finish()
    got = events(out)
    assert got[-1] == {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    assert "ignored" not in out.decode()


def test_an_empty_stream_is_still_a_complete_message() -> None:
    translator = MessagesStream({"model": "role"}, upstream_usage=True)
    got = events(translator.feed(b"data: [DONE]\n\n") + translator.finish())
    assert [e["type"] for e in got] == ["message_start", "ping", "message_delta", "message_stop"]


def test_text_then_two_tool_calls_are_three_blocks() -> None:
    translator = MessagesStream({}, upstream_usage=True)
    upstream = (
        chunk({"content": "Let me look."})
        + chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x"'}}]})
        + chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})
        + chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]})
        + chunk({}, "tool_calls")
    )
    got = events(translator.feed(upstream) + translator.finish())
    starts = [e for e in got if e["type"] == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [
        (0, "text"),
        (1, "tool_use"),
        (2, "tool_use"),
    ]
    assert starts[1]["content_block"]["id"] == "a"
    partial = "".join(
        e["delta"].get("partial_json", "")
        for e in got
        if e.get("index") == 1 and e["type"] == "content_block_delta"
    )
    assert orjson.loads(partial) == {"x": 1}
    assert [e["index"] for e in got if e["type"] == "content_block_stop"] == [0, 1, 2]
    assert got[-2]["delta"]["stop_reason"] == "tool_use"


def test_request_translation() -> None:
    chat = to_chat(
        {
            "model": "r",
            "max_tokens": 9,
            "system": "sys",
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "t"},
                        {"type": "tool_use", "id": "u1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "u1",
                            "content": [{"type": "text", "text": "r1"}],
                            "is_error": True,
                        },
                        {"type": "text", "text": "and?"},
                    ],
                },
            ],
            "tool_choice": {"type": "auto"},
            "tools": [
                {"name": "f", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search"},  # a server tool: not carried
            ],
            "metadata": {"user_id": "u-7"},
            "top_k": 5,
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": "t",
            "tool_calls": [
                {"id": "u1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "u1", "content": "Error: r1"},
        {"role": "user", "content": "and?"},
    ]
    assert chat["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in chat["tools"]] == ["f"]
    assert chat["tools"][0]["function"]["parameters"] == {"type": "object"}
    assert chat["user"] == "u-7"
    assert "top_k" not in chat  # not carried (docs/api.md)


def test_answer_translation_keeps_unparseable_tool_arguments() -> None:
    message = from_chat(
        {
            "id": "x",
            "model": "m",
            "choices": [
                {
                    "message": {
                        "content": None,
                        "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "not json"}}],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
        },
        {},
    )
    assert message["content"] == [
        {"type": "tool_use", "id": "t", "name": "f", "input": {"arguments": "not json"}}
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 0, "output_tokens": 0}


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"max_tokens": 1}, "messages"),
        ({"max_tokens": 1, "messages": []}, "messages"),
        ({"max_tokens": 1, "messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
        (
            {"max_tokens": 1, "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
            "messages.0.content.0",
        ),
        (
            {
                "max_tokens": 1,
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": [{"type": "text", "text": "y"}, "z"]},
                ],
            },
            "messages.1.content.1",
        ),
        ({"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"max_tokens": True, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "system": 5}, "system"),
        ({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tools": [{}]}, "tools.0.name"),
        ({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tools": {"name": "f"}}, "tools"),
        ({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tools": [5]}, "tools.0"),
        (
            {"max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tools": [{"name": 5}]},
            "tools.0.name",
        ),
    ],
)
def test_request_checks(payload: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as bad:
        check_request(payload)
    assert bad.value.param == param
