"""One small estate on fake backends behind a real, probing gateway, in every state the page must show.

gpu          up, needs its own api key                      chat-fast (weight 2)
flaky        up to probes, answers real requests 500        chat-fast: ejected by the outlier detector
embed        up, serves BAAI/bge-base-en-v1.5               embeddings-general asks bge-base-en-v1.5: drift
dead         stopped (connection refused), URL password     chat-legacy
workstation  stopped, on a host with always_on: false       chat-deep: asleep
slow         llama-server holding one request               chat-deep: one in flight
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from ui_support import wait_for_status

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

MASTER_KEY = "sk-master-SECRET-4f1d2c"
ADMIN = {"authorization": f"Bearer {MASTER_KEY}"}  # the operator views need an admin key
GPU_KEY = "sk-gpu-SECRET-9a7e31"
URL_PASSWORD = "urlpass-SECRET-55c0"
SECRETS = (MASTER_KEY, GPU_KEY, URL_PASSWORD)
CHAT_MODEL = "Qwen2.5-7B-Instruct-AWQ"
DEEP_MODEL = "Llama-3-8B-Instruct-AWQ"


@dataclass
class Estate:
    gateway: RunningGateway
    backends: dict[str, FakeBackend]
    dead_port: int
    requests_sent: int = 0
    held: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def page_url(self) -> str:
        """The gateway's URL with the admin key as a browser would be given it (user:key@)."""
        return self.gateway.url.replace("http://", f"http://admin:{MASTER_KEY}@")


def fabric(fb: dict[str, FakeBackend], dead_port: int, asleep_port: int) -> str:
    probe = "health: {interval: 1s}"
    return f"""
gateway: {{api_keys: ["${{FABRIC_MASTER_KEY}}"], admin_keys: ["${{FABRIC_MASTER_KEY}}"]}}
hosts:
  box: {{address: 127.0.0.1}}
  wintermute: {{address: 127.0.0.1, always_on: false}}
backends:
  gpu: {{host: box, kind: vllm, url: "{fb["gpu"].url}", api_key: "${{GPU_KEY}}", {probe}}}
  flaky:
    host: box
    kind: vllm
    url: "{fb["flaky"].url}"
    health: {{interval: 1s, consecutive_failures: 1, base_ejection: 5m}}
  embed: {{host: box, kind: vllm, url: "{fb["embed"].url}", {probe}}}
  dead: {{host: box, kind: vllm, url: "http://ops:{URL_PASSWORD}@127.0.0.1:{dead_port}/v1", {probe}}}
  workstation: {{host: wintermute, kind: vllm, url: "http://127.0.0.1:{asleep_port}/v1", {probe}}}
  slow: {{host: box, kind: llamacpp, url: "{fb["slow"].url}", {probe}}}
roles:
  chat-fast:
    kind: chat
    description: quick answers for interactive tools
    targets: [{{backend: gpu, model: {CHAT_MODEL}, weight: 2}}, {{backend: flaky, model: {CHAT_MODEL}}}]
    fallbacks: [chat-deep]
    balance: least_outstanding
    overflow: {{queue_depth: 2}}
  chat-deep:
    kind: chat
    targets: [{{backend: workstation, model: {DEEP_MODEL}}}, {{backend: slow, model: {DEEP_MODEL}}}]
  embeddings-general:
    kind: embeddings
    targets: [{{backend: embed, model: bge-base-en-v1.5}}]
  chat-legacy:
    kind: chat
    targets: [{{backend: dead, model: old-model}}]
aliases:
  local/chat: chat-fast
  local/reasoner: chat-deep
  local/embed: embeddings-general
"""


def _chat(url: str, model: str, timeout: float = 30.0) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def estate() -> Iterator[Estate]:
    fb = {
        "gpu": FakeBackend(kind="vllm", models=(CHAT_MODEL,), api_key=GPU_KEY),
        "flaky": FakeBackend(kind="vllm", models=(CHAT_MODEL,), status_override=500),
        "embed": FakeBackend(kind="vllm", models=("BAAI/bge-base-en-v1.5",)),
        "slow": FakeBackend(kind="llamacpp", models=(DEEP_MODEL,), hang=True),
        "dead": FakeBackend(kind="vllm", models=("old-model",)),
        "workstation": FakeBackend(kind="vllm", models=(DEEP_MODEL,)),
    }
    for backend in fb.values():
        backend.start()
    # Killed servers: their ports answer "connection refused".
    dead_port, asleep_port = fb["dead"].port, fb["workstation"].port
    fb["dead"].stop()
    fb["workstation"].stop()
    text = fabric(fb, dead_port, asleep_port)
    config = load_config_text(
        text, "/etc/aifabric/fabric.yaml", environ={"FABRIC_MASTER_KEY": MASTER_KEY, "GPU_KEY": GPU_KEY}
    )
    gateway = RunningGateway(config, probe=True).start()
    estate = Estate(gateway, fb, dead_port)
    try:
        wait_for_status(
            estate.url,
            ADMIN,
            lambda v: all(b["state"] != "unknown" for b in v["backends"].values()),  # type: ignore[attr-defined]
            "every backend probed",
        )
        # Real requests until the flaky target is ejected (least_outstanding draws it 1 time in 3);
        # each one still succeeds on gpu, the retry the detector counts against flaky.
        for _ in range(100):
            assert _chat(estate.url, "local/chat").status_code == 200
            estate.requests_sent += 1
            if fb["flaky"].count("/v1/chat/completions"):
                break
        assert _chat(estate.url, "no-such-model").status_code == 404
        estate.requests_sent += 1
        # One request held by the slow backend: in flight while the page looks.
        responses: list[int] = []

        def held() -> None:
            try:
                responses.append(_chat(estate.url, "chat-deep", timeout=120).status_code)
            except httpx.HTTPError as exc:  # the assertion below names it
                responses.append(-1)
                print("held request failed:", exc)

        thread = threading.Thread(target=held, daemon=True)
        thread.start()
        estate.held.append(thread)
        fb["slow"].wait_for_requests(1, "/v1/chat/completions")
        wait_for_status(
            estate.url,
            ADMIN,
            lambda v: v["roles"]["chat-deep"]["targets"][1]["outstanding"] == 1,  # type: ignore[index]
            "the held request in flight",
        )
        yield estate
        fb["slow"].set(hang=False)  # the held request is answered
        thread.join(30)
        assert responses == [200]
    finally:
        gateway.stop()
        for backend in fb.values():
            backend.stop()
