"""The fuzz tests count the cases they generate; the count is printed at the end of the run. Each
module fuzzes its own real gateway (a fake backend behind it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

CASES: Counter[str] = Counter()


@pytest.fixture
def count_case() -> Counter[str]:
    return CASES


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
            yield gw.url + "/v1"  # the servers entry of OpenAI's description ends in /v1
        finally:
            gw.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CASES:
        parts = ", ".join(f"{name} {n}" for name, n in sorted(CASES.items()))
        terminalreporter.write_line(f"fuzz: {sum(CASES.values())} generated cases ({parts})")
