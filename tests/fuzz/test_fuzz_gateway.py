"""Schemathesis against a real gateway (a fake backend behind it), from OpenAI's own OpenAPI
description cut to the operations the gateway serves (openapi/openai-served.json, see its NOTICE:
chat completions, completions, embeddings, models and the Responses API):
cases that fit OpenAI's request shapes and cases that break them. Whatever comes: never a 5xx,
always one `x-request-id`, every error OpenAI-shaped and naming the id, and every body the gateway
writes itself (errors, the model list) conforming to the official description."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

SCHEMA = schemathesis.openapi.from_path(Path(__file__).parent / "openapi" / "openai-served.json")
OPERATIONS = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in SCHEMA.get_all_operations())}
# Cases per operation and mode: ~600 in all, well under a minute. Chat's request schema is OpenAI's
# largest, slowest to generate.
EXAMPLES = {
    "POST /chat/completions": 30,
    "POST /responses": 20,
    "POST /responses/input_tokens": 20,
    "GET /responses/{response_id}": 20,
}
DEFAULT_EXAMPLES = 60
# Most generated `model` values name no role (404, which is worth testing too); half the cases are
# given a role of the fabric instead, so that they are forwarded and the backend's answer relayed.
ROLES = st.sampled_from([None, "chat-fast", "local/chat", "embeddings-general", "openai/strong"])
CASES = [
    pytest.param(name, mode, id=f"{name} {mode}")
    for name in sorted(OPERATIONS)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or name.startswith("POST")  # a GET has no body to break
]


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_the_gateway_answers_every_generated_case_well(
    gateway_url: str, name: str, mode: GenerationMode, count_case: Counter[str]
) -> None:
    operation = OPERATIONS[name]
    session = requests.Session()

    @given(case=operation.as_strategy(generation_mode=mode), role=ROLES)
    @settings(
        max_examples=EXAMPLES.get(name, DEFAULT_EXAMPLES),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case, role: str | None) -> None:
        count_case["schemathesis"] += 1
        body: Any = case.body
        if role is not None and isinstance(body, dict) and "model" in body:
            body["model"] = role
        response = case.call(base_url=gateway_url, session=session, timeout=10)
        where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
        assert response.status_code < 500, where
        ids = response.headers.get("x-request-id") or []  # schemathesis keeps every value of a header
        assert len(ids) == 1 and ids[0], where
        relayed = "x-aifabric-backend" in response.headers  # the backend's body, not the gateway's
        if response.status_code >= 400 and not relayed:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, where
            assert isinstance(error["message"], str) and ids[0] in error["message"], where
        if not relayed and (response.status_code >= 400 or mode is GenerationMode.POSITIVE):
            case.validate_response(response, checks=[schemathesis.checks.response_schema_conformance])

    try:
        check()
    finally:
        session.close()
