"""The pure translation Responses -> chat completions: what is carried, and what is refused with a 400."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aifabric.backends.base import RequestField
from aifabric.errors import BadRequest
from aifabric.gateway.dialects.responses import request_to_chat, response_skeleton
from aifabric.gateway.dialects.responses_dialect import set_fields
from aifabric.gateway.dialects.responses_stream import ResponsesStream


def chat(**payload: Any) -> dict[str, Any]:
    return request_to_chat({"model": "r", **payload})


def test_items_become_messages() -> None:
    image = {"type": "input_image", "image_url": "data:x", "detail": "low"}
    sent = chat(
        instructions="rules",
        input=[
            {"role": "developer", "content": "dev says"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "look"}, image]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": '{"a":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "two"}],
            },
        ],
    )
    assert sent["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "system", "content": "dev says"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:x", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [  # parallel calls: one assistant turn
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": '{"a":1}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]


def test_settings_are_carried() -> None:
    sent = chat(
        input="x",
        max_output_tokens=7,
        temperature=0.2,
        top_p=0.5,
        stop=["\n"],
        user="u1",
        metadata={"k": "v"},
        store=False,
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": False}],
        tool_choice="required",
        parallel_tool_calls=False,
        text={"format": {"type": "json_object"}},
    )
    assert sent == {
        "model": "r",
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.2,
        "top_p": 0.5,
        "stop": ["\n"],
        "user": "u1",
        "max_tokens": 7,
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": False}}
        ],
        "parallel_tool_calls": False,
        "tool_choice": "required",
        "response_format": {"type": "json_object"},
    }  # metadata and store stay with the gateway
    forced = chat(
        input="x", tools=[{"type": "function", "name": "f"}], tool_choice={"type": "function", "name": "f"}
    )
    assert forced["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    schema = {"type": "object", "properties": {}}
    fmt = chat(
        input="x", text={"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True}}
    )
    assert fmt["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": []}, "input"),
        ({"input": [{"type": "file_search_call", "id": "x"}]}, "input[0]"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"input": "x", "tools": {"type": "function"}}, "tools"),
        ({"input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        ({"input": "x", "instructions": 3}, "instructions"),
    ],
)
def test_what_cannot_be_carried_is_a_400_naming_the_parameter(payload: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        chat(**payload)
    assert caught.value.param == param
    assert caught.value.status == 400


def _chat_stream() -> bytes:
    usage = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    chunks = [
        {"model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"model": "m", "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {"model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
        ]}}]},
        {"model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": ": 1}"}}
        ]}}]},
        {"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"model": "m", "choices": [], "usage": usage},
    ]  # fmt: skip
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)
    return body + b"data: [DONE]\r\n\r\n"


def _events(translator: ResponsesStream, pieces: list[bytes]) -> list[dict[str, Any]]:
    out = b"".join(translator.feed(p) for p in pieces) + translator.finish()
    events = [json.loads(block.split(b"data: ", 1)[1]) for block in out.split(b"\n\n") if block]
    for event in events:  # ids are random: compare the rest
        event.pop("item_id", None)
        for key in ("item", "response"):
            if isinstance(event.get(key), dict):
                event[key] = {k: v for k, v in event[key].items() if k not in ("id", "output")}
    return events


def test_the_stream_translation_does_not_depend_on_where_chunks_are_cut() -> None:
    skeleton = response_skeleton({"model": "r", "input": "x"}, "resp_1", 1, "r")
    body = _chat_stream()
    whole = _events(ResponsesStream(dict(skeleton), lambda: 2.0), [body])
    byte_by_byte = _events(
        ResponsesStream(dict(skeleton), lambda: 2.0), [body[i : i + 1] for i in range(len(body))]
    )
    assert whole == byte_by_byte
    kinds = [e["type"] for e in whole]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",  # the text closes when the call starts
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert whole[-1]["response"]["usage"]["input_tokens"] == 5
    assert whole[-3]["arguments"] == '{"a": 1}'
    assert [e["output_index"] for e in whole if "output_index" in e] == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]


JSON_OBJECT = {"format": {"type": "json_object"}}


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"input": "x"}, set()),
        ({"input": "x", "max_output_tokens": 8}, {"max_output_tokens"}),
        ({"input": "x", "max_output_tokens": None}, set()),
        ({"input": "x", "max_output_tokens": True}, set()),  # not an integer: no limit the route acts on
        ({"input": "x", "text": {"format": {"type": "text"}}}, set()),
        ({"input": "x", "text": JSON_OBJECT}, {"text.format"}),
        ({"input": "x", "text": JSON_OBJECT, "max_output_tokens": 8}, {"text.format", "max_output_tokens"}),
        ({"input": "x", "text": {"format": {"type": "text"}}, "max_output_tokens": 8}, {"max_output_tokens"}),
    ],
)
def test_the_fields_a_request_sets_that_a_native_route_may_not_honour(
    payload: dict[str, Any], fields: set[str]
) -> None:
    found = set_fields(payload)
    assert {str(f) for f in found} == fields
    assert all(isinstance(f, RequestField) for f in found)
