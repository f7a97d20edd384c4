"""Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) fuzzed against a real
gateway. Anthropic publishes no OpenAPI description we can vendor, so the request shape is written here
from its API reference (the documented fields and their types, kept small); schemathesis generates
cases that fit it and cases that break it. Whatever comes: never a 5xx, one `x-request-id`, and every
error in Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`) naming the id."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from aifabric.gateway.dialects.messages import ANTHROPIC_ERROR_TYPES

_TEXT_BLOCK = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"enum": ["text"]}, "text": {"type": "string"}},
}
_TOOL_USE_BLOCK = {
    "type": "object",
    "required": ["type", "id", "name", "input"],
    "properties": {
        "type": {"enum": ["tool_use"]},
        "id": {"type": "string"},
        "name": {"type": "string"},
        "input": {"type": "object"},
    },
}
_TOOL_RESULT_BLOCK = {
    "type": "object",
    "required": ["type", "tool_use_id"],
    "properties": {
        "type": {"enum": ["tool_result"]},
        "tool_use_id": {"type": "string"},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_BLOCK}]},
        "is_error": {"type": "boolean"},
    },
}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["user", "assistant"]},
        "content": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"oneOf": [_TEXT_BLOCK, _TOOL_USE_BLOCK, _TOOL_RESULT_BLOCK]}},
            ]
        },
    },
}
_TOOL = {
    "type": "object",
    "required": ["name", "input_schema"],
    "properties": {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "input_schema": {"type": "object", "properties": {"type": {"enum": ["object"]}}},
    },
}
_COMMON = {
    "model": {"type": "string"},
    "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
    "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_BLOCK}]},
    "tools": {"type": "array", "items": _TOOL},
    "tool_choice": {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": ["auto", "any", "tool", "none"]}, "name": {"type": "string"}},
    },
}
_MESSAGES_REQUEST = {
    "type": "object",
    "required": ["model", "messages", "max_tokens"],
    "properties": {
        **_COMMON,
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 64},
        "stream": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "top_k": {"type": "integer", "minimum": 0},
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object", "properties": {"user_id": {"type": "string"}}},
    },
}
_COUNT_REQUEST = {"type": "object", "required": ["model", "messages"], "properties": _COMMON}


def _operation(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {"200": {"description": "the message"}},
        }
    }


SCHEMA = schemathesis.openapi.from_dict(
    {
        "openapi": "3.0.3",
        "info": {"title": "Anthropic Messages API (request shapes, from its API reference)", "version": "1"},
        "paths": {
            "/messages": _operation(_MESSAGES_REQUEST),
            "/messages/count_tokens": _operation(_COUNT_REQUEST),
        },
    }
)
OPERATIONS = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in SCHEMA.get_all_operations())}
EXAMPLES = 20
ROLES = st.sampled_from([None, "chat-fast", "local/chat", "embeddings-general"])
HEADERS = {"anthropic-version": "2023-06-01"}


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        pytest.param(name, mode, id=f"{name} {mode}")
        for name in sorted(OPERATIONS)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ],
)
def test_every_generated_messages_request_is_answered_in_anthropics_shape(
    gateway_url: str, name: str, mode: GenerationMode, count_case: Counter[str]
) -> None:
    operation = OPERATIONS[name]
    session = requests.Session()

    @given(case=operation.as_strategy(generation_mode=mode), role=ROLES)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case, role: str | None) -> None:
        count_case["messages"] += 1
        body: Any = case.body
        if role is not None and isinstance(body, dict) and "model" in body:
            body["model"] = role
        response = case.call(base_url=gateway_url, session=session, headers=HEADERS, timeout=10)
        where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
        assert response.status_code < 500, where
        ids = response.headers.get("x-request-id") or []
        assert len(ids) == 1 and ids[0], where
        if response.status_code >= 400:
            answer = response.json()
            assert set(answer) == {"type", "error"} and answer["type"] == "error", where
            error = answer["error"]
            assert set(error) == {"type", "message"}, where
            assert error["type"] in {*ANTHROPIC_ERROR_TYPES.values(), "api_error"}, where
            assert isinstance(error["message"], str) and ids[0] in error["message"], where

    try:
        check()
    finally:
        session.close()
