"""Schemathesis against a real gateway (fake backends behind it): every operation it serves, with
cases that fit the OpenAI request shapes and cases that break them. Whatever comes: never a 5xx,
always an `x-request-id`, every error OpenAI-shaped and naming the id, every success conforming."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

SCHEMA = schemathesis.openapi.from_path(Path(__file__).with_name("openai_served.yaml"))
OPERATIONS = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in SCHEMA.get_all_operations())}
EXAMPLES = 60  # per operation and mode: a few hundred cases in seconds


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    with FakeBackend(kind="vllm", models=("m1", "e1")) as fb:
        config = load_config_text(
            f"""
backends:
  b1: {{kind: vllm, url: "{fb.url}"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: b1, model: m1}}]}}
  openai/strong: {{kind: chat, targets: [{{backend: b1, model: m1}}]}}
  embeddings-general: {{kind: embeddings, targets: [{{backend: b1, model: e1}}]}}
aliases:
  local/chat: chat-fast
""",
            "fabric.yaml",
            environ={},
        )
        gw = RunningGateway(config).start()
        try:
            yield gw.url
        finally:
            gw.stop()


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

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        count_case["schemathesis"] += 1
        response = case.call(base_url=gateway_url, session=session, timeout=10)
        where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
        assert response.status_code < 500, where
        ids = response.headers.get("x-request-id") or []  # schemathesis keeps every value of a header
        assert len(ids) == 1 and ids[0], where
        request_id = ids[0]
        if response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, where
            assert isinstance(error["message"], str) and request_id in error["message"], where
        elif mode is GenerationMode.POSITIVE:
            case.validate_response(response, checks=[schemathesis.checks.response_schema_conformance])

    try:
        check()
    finally:
        session.close()
