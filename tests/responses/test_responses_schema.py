"""The gateway's own Responses JSON (translated answers, stream events, errors, counts) checked against
OpenAI's OpenAPI description, Draft 2020-12."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openai_schema import assert_valid
from responses_support import Estate, events_of

from aifabric.testing.gateway import RunningGateway

TOOLS = [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {"query": {}}}}]
SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "string"}},
    "required": ["a"],
    "additionalProperties": False,
}
CASES: dict[str, dict[str, Any]] = {
    "text": {"input": "hello there"},
    "instructions and items": {
        "instructions": "be brief",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "metadata": {"k": "v"},
        "temperature": 0.5,
        "top_p": 0.9,
    },
    "tool call": {"input": "call it", "tools": TOOLS, "tool_choice": "auto", "parallel_tool_calls": False},
    "forced tool": {"input": "call it", "tools": TOOLS, "tool_choice": {"type": "function", "name": "f"}},
    "cut by max_output_tokens": {"input": "one two three four five", "max_output_tokens": 2},
    "json schema": {
        "input": "x",
        "text": {"format": {"type": "json_schema", "name": "out", "schema": SCHEMA, "strict": True}},
    },
}


@pytest.mark.parametrize("case", CASES)
def test_translated_answer_is_a_valid_response(gateway: RunningGateway, case: str) -> None:
    reply = httpx.post(gateway.url + "/v1/responses", json={"model": "translated", **CASES[case]}, timeout=10)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert_valid("Response", body)
    if case == "cut by max_output_tokens":
        assert body["status"] == "incomplete"
        assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    if case == "tool call":
        assert body["output"][0]["type"] == "function_call"
        assert body["parallel_tool_calls"] is False
    stored = httpx.get(gateway.url + f"/v1/responses/{body['id']}", timeout=10)
    assert stored.status_code == 200
    assert stored.json() == body


@pytest.mark.parametrize("case", CASES)
def test_translated_stream_events_are_valid(gateway: RunningGateway, case: str) -> None:
    payload = {"model": "translated", "stream": True, **CASES[case]}
    reply = httpx.post(gateway.url + "/v1/responses", json=payload, timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = events_of(reply.text)
    for event in events:
        assert_valid("ResponseStreamEvent", event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    last = "response.incomplete" if case == "cut by max_output_tokens" else "response.completed"
    assert kinds[-1] == last
    final = events[-1]["response"]
    assert final["usage"]["output_tokens"] > 0
    if "tool" in case:
        assert "response.function_call_arguments.delta" in kinds
        assert "response.function_call_arguments.done" in kinds
    else:
        deltas = [e for e in events if e["type"] == "response.output_text.delta"]
        assert deltas and all(e["content_index"] == 0 and e["output_index"] == 0 for e in deltas)
        assert "".join(e["delta"] for e in deltas) == final["output"][0]["content"][0]["text"]


def test_error_bodies_are_valid(gateway: RunningGateway) -> None:
    cases = [
        ({"model": "translated", "input": 3}, 400, "input"),
        ({"model": "nope", "input": "x"}, 404, "model"),
        ({"model": "vectors", "input": "x"}, 400, "model"),
        ({"model": "translated", "input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0]"),
    ]
    for payload, status, param in cases:
        reply = httpx.post(gateway.url + "/v1/responses", json=payload, timeout=10)
        assert reply.status_code == status, payload
        assert_valid("ErrorResponse", reply.json())
        assert reply.json()["error"]["param"] == param
    missing = httpx.get(gateway.url + "/v1/responses/resp_missing", timeout=10)
    assert missing.status_code == 404
    assert_valid("ErrorResponse", missing.json())
    assert (missing.json()["error"]["type"], missing.json()["error"]["code"]) == (
        "invalid_request_error",
        "response_not_found",
    )


def test_models_are_valid(gateway: RunningGateway) -> None:
    listed = httpx.get(gateway.url + "/v1/models", timeout=10).json()
    assert_valid("ListModelsResponse", listed)
    one = httpx.get(gateway.url + "/v1/models/translated", timeout=10).json()
    assert_valid("Model", one)


def test_input_tokens_answer_is_valid(estate: Estate, gateway: RunningGateway) -> None:
    reply = httpx.post(gateway.url + "/v1/responses/input_tokens", json={"model": "native", "input": "a b"})
    assert reply.status_code == 200, reply.text
    assert_valid("TokenCountsResource", reply.json())
    assert estate.nat.requests[-1].path == "/tokenize"
