"""Role-level behaviour when backends fail: fallbacks, warm-up, model-id drift, slow targets, and a
workstation that is simply switched off."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest
from resilience_support import load, post_chat, report

from aifabric.errors import ConfigError
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until

StartGateway = Callable[..., RunningGateway]
MakeBackend = Callable[..., FakeBackend]

FAST_PROBES = "health: {interval: 200ms, timeout: 300ms, unhealthy_threshold: 1, healthy_threshold: 1}"


def runbook_estate(armitage: str, openai_url: str, *, retry: str = "{deadline: 10s, try_timeout: 2s}") -> str:
    """The runbook's chat-fast with its `openai/strong` fallback (a fake cloud with a key)."""
    return f"""
hosts:
  armitage: {{address: 127.0.0.1, always_on: false}}
backends:
  armitage-vllm: {{host: armitage, kind: vllm, url: "{armitage}", {FAST_PROBES}}}
  openai: {{kind: openai, url: "{openai_url}", api_key: "${{OPENAI_API_KEY}}"}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: armitage-vllm, model: Qwen2.5-7B-Instruct-AWQ}}]
    fallbacks: [openai/strong]
  openai/strong:
    kind: chat
    targets: [{{backend: openai, model: gpt-4o}}]
aliases:
  local/chat: chat-fast
retry: {retry}
"""


SECRET = "sk-test-fallback-key"


def test_every_target_down_is_served_by_the_fallback_role(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    armitage = backend(models=("Qwen2.5-7B-Instruct-AWQ",))
    cloud = backend(kind="openai", models=("gpt-4o",), api_key=SECRET)
    gw = start_gateway(runbook_estate(armitage.url, cloud.url), environ={"OPENAI_API_KEY": SECRET})
    resp = post_chat(gw.url, "local/chat")
    assert resp.headers["x-aifabric-role"] == "chat-fast"
    armitage.stop()  # the workstation is switched off
    resp = post_chat(gw.url, "local/chat")
    assert resp.status_code == 200
    # The headers say which role served, and what was asked for.
    assert resp.headers["x-aifabric-role"] == "openai/strong"
    assert resp.headers["x-aifabric-requested-role"] == "chat-fast"
    assert resp.headers["x-aifabric-backend"] == "openai"
    assert resp.json()["choices"][0]["message"]["content"] == "[gpt-4o] hi"
    sent = cloud.requests[-1]
    assert sent.json["model"] == "gpt-4o"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"  # the cloud's key, not the client's


def test_fallback_cycles_are_rejected_when_the_file_is_loaded() -> None:
    with pytest.raises(ConfigError) as err:
        load("""
backends:
  a: {kind: vllm, url: "http://127.0.0.1:9/v1"}
roles:
  x: {kind: chat, targets: [{backend: a, model: m}], fallbacks: [y]}
  y: {kind: chat, targets: [{backend: a, model: m}], fallbacks: [x]}
""")
    assert "cycle" in str(err.value)


def single_llamacpp(url: str, warmup: str, max_attempts: int = 4) -> str:
    return f"""
backends:
  local-llama: {{kind: llamacpp, url: "{url}", {FAST_PROBES}}}
roles:
  chat-fast: {{kind: chat, targets: [{{backend: local-llama, model: m1}}]}}
retry: {{deadline: 30s, try_timeout: 5s, warmup_wait: {warmup}, max_attempts: {max_attempts}}}
"""


def test_request_is_held_while_the_only_backend_loads_and_answered_when_it_is_ready(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    llama = backend(kind="llamacpp", loading=True)
    gw = start_gateway(single_llamacpp(llama.url, "20s"), probe=True)
    wait_until(lambda: gw.state("local-llama") == "loading", "the probe to see the model loading")
    llama.set(loading=True, loading_ms=1500)  # the model finishes loading in 1.5 s
    started = time.monotonic()
    resp = post_chat(gw.url)
    report("request held during warm-up, answered after", time.monotonic() - started)
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "[m1] hi"
    assert int(resp.headers["x-aifabric-attempts"]) >= 2  # it was refused while loading, then served


def test_the_warm_up_hold_lasts_its_bound_not_max_attempts_tries(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    # A model that loads for longer than max_attempts backoff rounds (a slow or busy machine): the hold is
    # bounded by warmup_wait alone. It used to end once the attempts ran out, failing the request early.
    llama = backend(kind="llamacpp", loading=True)
    gw = start_gateway(single_llamacpp(llama.url, "20s", max_attempts=2), probe=True)
    wait_until(lambda: gw.state("local-llama") == "loading", "the probe to see the model loading")
    llama.set(loading=True, loading_ms=3000)
    resp = post_chat(gw.url)
    assert resp.status_code == 200, resp.text
    assert int(resp.headers["x-aifabric-attempts"]) > 2


def test_warm_up_bound_passed_gives_a_clear_503_with_retry_after(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    llama = backend(kind="llamacpp", loading=True)
    gw = start_gateway(single_llamacpp(llama.url, "1s"), probe=True)
    wait_until(lambda: gw.state("local-llama") == "loading", "the probe to see the model loading")
    resp = post_chat(gw.url)
    assert resp.status_code == 503
    assert int(resp.headers["retry-after"]) >= 1
    error = resp.json()["error"]
    assert error["code"] == "model_loading"
    assert "loading" in error["message"]


def test_drifted_model_id_is_reported_with_the_fix(start_gateway: StartGateway, backend: MakeBackend) -> None:
    embed = backend(models=("BAAI/bge-base-en-v1.5",))
    gw = start_gateway(
        f"""
backends:
  motoko-embed: {{kind: vllm, url: "{embed.url}", {FAST_PROBES}}}
roles:
  embeddings-general: {{kind: embeddings, targets: [{{backend: motoko-embed, model: bge-base-en-v1.5}}]}}
""",
        probe=True,
    )
    fix = "config says bge-base-en-v1.5, motoko-embed serves BAAI/bge-base-en-v1.5"
    wait_until(lambda: bool(gw.health()["backends"]["motoko-embed"]["mismatches"]), "the drift to be seen")
    [message] = gw.health()["backends"]["motoko-embed"]["mismatches"]
    assert message.startswith(fix)
    # The runbook's "Embeddings Return 404": the client is told what is wrong and how to fix it.
    import httpx

    resp = httpx.post(
        gw.url + "/v1/embeddings", json={"model": "embeddings-general", "input": "test"}, timeout=10
    )
    assert resp.status_code == 404
    assert fix in resp.json()["error"]["message"]


def test_slow_backend_gets_less_traffic_and_gets_it_back_when_the_other_slows(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    slow, fast = backend(latency_ms=150), backend()
    gw = start_gateway(f"""
backends:
  slow: {{kind: vllm, url: "{slow.url}"}}
  fast: {{kind: vllm, url: "{fast.url}"}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: slow, model: m1}}, {{backend: fast, model: m1}}]
    balance: p2c      # the policy under test (vLLM roles default to least_load)
    affinity: false   # the same prompt every time must not pin one target
""")

    def measured() -> bool:
        post_chat(gw.url)
        return gw.call(lambda: all(t.ewma_latency > 0 for t in gw.gateway.table.routes["chat-fast"].targets))  # type: ignore[union-attr]

    wait_until(measured, "both targets to have a latency measurement", limit=30)
    # p2c on EWMA latency: with both measured, one request at a time, the faster target wins every draw.
    served = [post_chat(gw.url).headers["x-aifabric-backend"] for _ in range(20)]
    assert served == ["fast"] * 20
    fast.set(latency_ms=400)  # now the other one is the slow one
    wait_until(lambda: post_chat(gw.url).headers["x-aifabric-backend"] == "slow", "traffic to move back", 30)


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port on 127.0.0.1 where connects hang (a listener with a full accept queue), like a powered-off
    host on the tailnet: a SYN with no answer, not a refusal."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(2):  # fill the queue (Linux admits backlog + 1)
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.05)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        hangs = probe.connect_ex(("127.0.0.1", port)) != 0
    except TimeoutError:
        hangs = True
    finally:
        probe.close()
    assert hangs, "the blackhole port accepted a connection"
    yield port
    for s in fillers:
        s.close()
    listener.close()


def test_sleeping_workstation_is_asleep_and_its_role_goes_to_the_fallback_at_once(
    start_gateway: StartGateway, backend: MakeBackend, blackhole: int
) -> None:
    cloud = backend(kind="openai", models=("gpt-4o",), api_key=SECRET)
    gw = start_gateway(
        runbook_estate(f"http://127.0.0.1:{blackhole}/v1", cloud.url),
        environ={"OPENAI_API_KEY": SECRET},
        probe=True,
    )
    wait_until(lambda: gw.state("armitage-vllm") == "asleep", "the powered-off workstation to be asleep")
    view = gw.health()["backends"]["armitage-vllm"]
    assert view["state"] == "asleep"
    started = time.monotonic()
    for _ in range(10):
        resp = post_chat(gw.url, "chat-fast")
        assert resp.status_code == 200
        # Straight to the fallback: the sleeping host is not tried first (no connect timeout paid).
        assert (resp.headers["x-aifabric-role"], resp.headers["x-aifabric-attempts"]) == (
            "openai/strong",
            "1",
        )
    report(
        "10 requests for a sleeping workstation's role, served by the fallback in", time.monotonic() - started
    )
