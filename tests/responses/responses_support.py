"""What the Responses tests share: the estate of fake backends behind one gateway, and an SSE reader."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

__all__ = ["FABRIC", "Estate", "events_of"]

# A role per way of serving: `native` (a vLLM that serves /v1/responses), `translated` (llama-cpp-python:
# chat completions only), `llama` (llama-server: native, but its streams translated), and `failover`,
# whose own vLLM target falls back to the translated role.
FABRIC = """
gateway: {{host: 127.0.0.1, port: 0}}
state: "{state}"
retry: {{max_attempts: 3, try_timeout: 5s, deadline: 10s, backoff_base: 10ms, backoff_max: 50ms}}
backends:
  nat: {{kind: vllm, url: "{nat}/v1"}}
  tr: {{kind: llama-cpp-python, url: "{tr}/v1"}}
  llama: {{kind: llamacpp, url: "{llama}/v1"}}
  flaky: {{kind: vllm, url: "{flaky}/v1", timeout: 1s}}
roles:
  native: {{kind: chat, targets: [{{backend: nat, model: m}}]}}
  translated: {{kind: chat, targets: [{{backend: tr, model: m}}]}}
  llama: {{kind: chat, targets: [{{backend: llama, model: m}}]}}
  failover: {{kind: chat, targets: [{{backend: flaky, model: m}}], fallbacks: [translated]}}
  vectors: {{kind: embeddings, targets: [{{backend: nat, model: m}}]}}
"""


@dataclass
class Estate:
    nat: FakeBackend
    tr: FakeBackend
    llama: FakeBackend
    flaky: FakeBackend
    start: Callable[..., RunningGateway]

    @property
    def backends(self) -> tuple[FakeBackend, ...]:
        return (self.nat, self.tr, self.llama, self.flaky)


def events_of(body: str) -> list[dict[str, Any]]:
    """The JSON events of an SSE body, checking that each `event:` name is its event's `type`."""
    events = []
    for block in body.split("\n\n"):
        lines = block.strip().splitlines()
        data = [line[5:].strip() for line in lines if line.startswith("data:")]
        if data:
            event = json.loads("".join(data))
            named = [line[6:].strip() for line in lines if line.startswith("event:")]
            assert named == [event["type"]], "the SSE event name is the event's type"
            events.append(event)
    return events
