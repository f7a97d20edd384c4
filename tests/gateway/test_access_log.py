"""The access log says what served each request, and never carries a key."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from aifabric.observability.logging import JsonFormatter
from aifabric.testing.fake_backend import FakeBackend

Start = Callable[..., Any]


def test_access_log_lines_name_role_backend_and_hide_secrets(
    start_gateway: Start, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeBackend(kind="vllm", models=("m1",), api_key="sk-backend-secret-1") as fb:
        gw = start_gateway(
            f"""
gateway:
  api_keys: ["${{KEY}}"]
  access_log: true
backends:
  b1: {{kind: vllm, url: "{fb.url}", api_key: "sk-backend-secret-1"}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: b1, model: m1}}]}}
""",
            environ={"KEY": "sk-gateway-secret-2"},
        )
        caplog.set_level(logging.INFO, logger="aifabric.access")
        ok = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "chat-fast", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": "Bearer sk-gateway-secret-2", "x-request-id": "req-42"},
        )
        assert ok.status_code == 200
        denied = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "chat-fast", "messages": []},
            headers={"authorization": "Bearer sk-gateway-secret-2-typo"},
        )
        assert denied.status_code == 401
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "aifabric.access"]
    assert len(lines) == 2
    served = lines[0]
    assert served["request_id"] == "req-42"
    assert (served["role"], served["backend"], served["status"]) == ("chat-fast", "b1", 200)
    assert lines[1]["status"] == 401
    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "sk-backend-secret-1" not in text and "sk-gateway-secret-2" not in text


def test_formatter_redacts_registered_secrets_and_bearer_tokens() -> None:
    from aifabric.observability.logging import register_secret

    register_secret("hunter2-very-secret")
    record = logging.LogRecord(
        "x",
        logging.ERROR,
        __file__,
        1,
        "calling with hunter2-very-secret and Bearer abcdefghijklmnop",
        None,
        None,
    )
    line = JsonFormatter().format(record)
    assert "hunter2-very-secret" not in line and "abcdefghijklmnop" not in line
    assert "********" in line
