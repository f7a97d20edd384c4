"""Session affinity end to end: a conversation's turns reach the same engine, through the official SDK."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from load_support import StartGateway, ask, probe

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until

FABRIC = """\
backends:
  a: {{kind: vllm, url: "{a}"}}
  b: {{kind: vllm, url: "{b}"}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: a, model: qwen}}, {{backend: b, model: qwen}}]
    affinity: {affinity}
"""

# Ollama reports no load: only the gateway's own in-flight count, held against each backend's cap.
CAPPED = """\
backends:
  a: {{kind: ollama, url: "{a}", max_concurrency: 1}}
  b: {{kind: ollama, url: "{b}", max_concurrency: 1}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: a, model: qwen}}, {{backend: b, model: qwen}}]
retry: {{try_timeout: 10s}}
"""


@pytest.fixture
def engines() -> Iterator[tuple[FakeBackend, FakeBackend]]:
    with FakeBackend(kind="vllm", models=("qwen",)) as a, FakeBackend(kind="vllm", models=("qwen",)) as b:
        yield a, b


def start(
    start_gateway: StartGateway,
    engines: tuple[FakeBackend, FakeBackend],
    affinity: bool,
    fabric: str = FABRIC,
) -> RunningGateway:
    a, b = engines
    gw = start_gateway(fabric.format(a=a.url, b=b.url, affinity=str(affinity).lower()))
    probe(gw, "a", "b")
    return gw


def conversation(turns: int, opening: str) -> list[list[dict[str, str]]]:
    """The messages of each turn of one conversation: it grows, its start stays."""
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": opening}]
    out = []
    for i in range(turns):
        out.append(list(history))
        history += [{"role": "assistant", "content": f"answer {i}"}, {"role": "user", "content": f"more {i}"}]
    return out


def test_each_turn_of_a_conversation_reaches_the_same_engine_and_conversations_spread(
    start_gateway: StartGateway, engines: tuple[FakeBackend, FakeBackend]
) -> None:
    gw = start(start_gateway, engines, True)
    landed: dict[str, set[str]] = {}
    for n in range(16):
        opening = f"conversation {n}: plan a trip"
        for messages in conversation(4, opening):
            landed.setdefault(opening, set()).add(ask(gw, messages=messages)["x-aifabric-backend"])
    assert all(len(backends) == 1 for backends in landed.values()), landed
    spread = Counter(next(iter(b)) for b in landed.values())
    assert set(spread) == {"a", "b"}, spread  # 16 conversations do not all hash to one engine


def test_the_session_header_and_the_fields_agents_send_are_keys(
    start_gateway: StartGateway, engines: tuple[FakeBackend, FakeBackend]
) -> None:
    gw = start(start_gateway, engines, True)
    client = gw.openai()
    for key in ("s-1", "s-2", "s-3"):  # a different question each time, one session
        served = {
            client.chat.completions.with_raw_response.create(
                model="chat-fast",
                messages=[{"role": "user", "content": f"question {i}"}],
                max_tokens=2,
                extra_headers={"x-session-id": key},
            ).headers["x-aifabric-backend"]
            for i in range(5)
        }
        assert len(served) == 1
    for field in ("user", "prompt_cache_key"):
        served = {
            ask(gw, messages=[{"role": "user", "content": f"q{i}"}], **{field: "agent-7"})[
                "x-aifabric-backend"
            ]
            for i in range(5)
        }
        assert len(served) == 1, field


def test_the_pin_yields_while_its_engine_queues_and_returns_when_it_drains(
    start_gateway: StartGateway, engines: tuple[FakeBackend, FakeBackend]
) -> None:
    gw = start(start_gateway, engines, True)
    messages = conversation(1, "a long story")[0]
    home = ask(gw, messages=messages)["x-aifabric-backend"]
    engine = dict(zip("ab", engines, strict=True))[home]
    engine.set(num_requests_waiting=3)
    probe(gw, home)
    assert ask(gw, messages=messages)["x-aifabric-backend"] != home
    engine.set(num_requests_waiting=0)
    probe(gw, home)
    assert ask(gw, messages=messages)["x-aifabric-backend"] == home


def test_affinity_false_balances_every_request_on_its_own(
    start_gateway: StartGateway, engines: tuple[FakeBackend, FakeBackend]
) -> None:
    gw = start(start_gateway, engines, False)
    messages = conversation(1, "same start")[0]
    served = Counter(ask(gw, messages=messages)["x-aifabric-backend"] for _ in range(24))
    assert set(served) == {"a", "b"}, served


def test_anthropic_metadata_user_id_is_a_key_on_v1_messages(
    start_gateway: StartGateway, engines: tuple[FakeBackend, FakeBackend]
) -> None:
    import anthropic

    gw = start(start_gateway, engines, True)
    with anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0) as client:
        served = {
            client.messages.with_raw_response.create(
                model="chat-fast",
                max_tokens=4,
                messages=[{"role": "user", "content": f"question {i}"}],
                metadata={"user_id": "agent-9"},
            ).headers["x-aifabric-backend"]
            for i in range(6)
        }
    assert len(served) == 1


def test_a_pin_without_load_signals_yields_at_max_concurrency_and_comes_back(
    start_gateway: StartGateway,
) -> None:
    with FakeBackend(kind="ollama", models=("qwen",)) as a, FakeBackend(kind="ollama", models=("qwen",)) as b:
        gw = start(start_gateway, (a, b), True, CAPPED)
        messages = conversation(1, "a long story")[0]
        home = ask(gw, messages=messages)["x-aifabric-backend"]
        engine = {"a": a, "b": b}[home]
        target = gw.target("chat-fast", home)
        engine.set(hang=True)
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(ask, gw, messages=messages)  # takes the home engine's one place
            wait_until(lambda: gw.call(lambda: target.health.in_flight) == 1, "a turn held at home")
            # The next turn goes to the other engine at once, not after a wait in the gateway's queue for
            # home (which would end in a timed-out attempt there, then the other engine).
            headers = ask(gw, messages=messages)
            assert headers["x-aifabric-backend"] != home
            assert headers["x-aifabric-attempts"] == "1"
            engine.set(hang=False)
            assert held.result(10)["x-aifabric-backend"] == home
        wait_until(lambda: gw.call(lambda: target.health.in_flight) == 0, "the held turn to settle")
        assert ask(gw, messages=messages)["x-aifabric-backend"] == home  # its place is free: back home
