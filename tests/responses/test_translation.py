"""The pure translation Responses -> chat completions: what is carried, and what is refused with a 400."""

from __future__ import annotations

from typing import Any

import pytest

from aifabric.errors import BadRequest
from aifabric.gateway.dialects.responses import request_to_chat


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
