"""Load signals and session affinity on the real llama-server of the embedded default.

`aifabric up` on a fabric file made of the default's `local-chat-fast` (llama-server, SmolLM2-135M,
8 slots of 2k) and a twin of it, probed every 0.5 s so that the engines' load reaches `/status` while a
test's requests run:

    chat-fast   local-chat-fast                          (the default's role: slots filled, then drained)
    chat-pair   local-chat-fast, local-chat-fast-twin    (two targets of one role: session affinity)
    chat-spill  local-chat-fast, overflow {queue_depth: 1}, fallbacks [chat-twin]  (overflow on purpose)
    chat-twin   local-chat-fast-twin

Everything is asserted through what an operator or a client sees: `GET /status`, the response headers,
and the engine's own `usage.prompt_tokens_details.cached_tokens` (prompt tokens served from its KV cache).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from e2e_support import Up

from aifabric.config.defaults import DEFAULT_CONFIG_PATH
from aifabric.testing.net import free_port_block
from aifabric.testing.wait import wait_until

pytestmark = pytest.mark.e2e

FAST, TWIN = "local-chat-fast", "local-chat-fast-twin"
MODEL = "smollm2-135m-instruct"
SLOTS = 8  # the default's chat-fast: parallel 8


def fabric_file(path: Path) -> Path:
    """The default's chat-fast backend, as it ships, twice; a short probe interval for the test."""
    spec = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())["backends"][FAST]
    assert spec["local"]["engine"] == "llama-server" and spec["local"]["parallel"] == SLOTS, spec
    twin = {**spec, "local": {**spec["local"], "port": spec["local"]["port"] + 1}}
    probe = {"health": {"interval": "0.5s"}}
    target = {"backend": FAST, "model": MODEL}
    doc = {
        "backends": {FAST: {**spec, **probe}, TWIN: {**twin, **probe}},
        "roles": {
            "chat-fast": {"kind": "chat", "targets": [target]},
            "chat-pair": {"kind": "chat", "targets": [target, {"backend": TWIN, "model": MODEL}]},
            "chat-spill": {
                "kind": "chat",
                "targets": [target],
                "overflow": {"queue_depth": 1},
                "fallbacks": ["chat-twin"],
            },
            "chat-twin": {"kind": "chat", "targets": [{"backend": TWIN, "model": MODEL}]},
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("twins")
    up = Up(tmp, "--config", str(fabric_file(tmp / "fabric.yaml")), local_base=free_port_block(2))
    try:
        up.wait_for("Ctrl-C stops everything.")
        yield up
    finally:
        up.stop()
        print(f"--- aifabric up output ---\n{up.output}")


def status(up: Up) -> dict[str, Any]:
    view: dict[str, Any] = httpx.get(up.base_url + "/status", timeout=10).json()
    return view


def engine_load(view: dict[str, Any], backend: str = FAST) -> dict[str, float]:
    """What the backend's probe read from the engine (/slots and /metrics)."""
    return dict(view["backends"][backend]["load"])


def fast_target(view: dict[str, Any]) -> dict[str, Any]:
    """chat-fast's one target as /status shows it: outstanding requests and the load estimate."""
    (target,) = view["roles"]["chat-fast"]["targets"]
    return dict(target)


def idle(view: dict[str, Any]) -> bool:
    load, target = engine_load(view), fast_target(view)
    return (
        load.get("slots_total") == SLOTS
        and load.get("slots_busy") == 0
        and load.get("requests_waiting") == 0
        and target["outstanding"] == 0
        and target["load"]["running"] == 0
        and target["load"]["waiting"] == 0
    )


def fill_slots(up: Up, extra: int, meanwhile: Callable[[], None] | None = None) -> dict[str, Any]:
    """Fill chat-fast's engine (every slot decoding, `extra` more in its queue), run `meanwhile` once
    /status shows it full, then let the clients go; the /status view that showed it full."""
    seen: list[dict[str, Any]] = []

    def full(view: dict[str, Any]) -> bool:
        load = engine_load(view)
        if load.get("slots_busy") == SLOTS and load.get("requests_waiting", 0) >= 1:
            seen.append(view)
            return True
        return False

    async def scenario() -> None:
        async with openai.AsyncOpenAI(
            base_url=up.base_url + "/v1", api_key="unused", max_retries=0, timeout=300
        ) as client:

            async def chat(i: int) -> None:
                # Long answers (ignore_eos) keep the slots busy while /status is read; they are cut off
                # below as soon as it has been, so the test costs seconds of decoding, not the answers.
                # Nearly a slot's whole 2k context: minutes of decoding on a loaded 2-core machine, far
                # beyond the few probe intervals /status needs to show the slots full.
                stream = await client.chat.completions.create(
                    model="chat-fast",
                    messages=[{"role": "user", "content": f"Count from {i} to one thousand."}],
                    max_tokens=1900,
                    stream=True,
                    extra_body={"ignore_eos": True},
                )
                async for _ in stream:
                    pass

            clients = [asyncio.create_task(chat(i)) for i in range(SLOTS + extra)]
            try:
                async with httpx.AsyncClient(timeout=10) as http:

                    async def poll() -> None:
                        while not full((await http.get(up.base_url + "/status")).json()):
                            await asyncio.sleep(0.1)

                    await asyncio.wait_for(poll(), timeout=120)
                if meanwhile is not None:
                    await asyncio.to_thread(meanwhile)
            finally:
                for task in clients:  # the clients go away: the gateway closes the upstream streams
                    task.cancel()
                await asyncio.gather(*clients, return_exceptions=True)
            assert all(task.cancelled() for task in clients), "an answer finished before /status showed it"

    asyncio.run(scenario())
    return seen[-1]


def test_filled_slots_show_as_the_engines_own_load_and_drain_when_the_clients_leave(twins: Up) -> None:
    wait_until(lambda: idle(status(twins)), "chat-fast's engine probed, idle", limit=60)
    extra = 4  # beyond the slots: these wait in llama-server's own queue
    view = fill_slots(twins, extra)
    load, target = engine_load(view), fast_target(view)
    # The engine's own signals: every slot busy (/slots), requests queued behind them (/metrics'
    # llamacpp:requests_deferred), as the probe read them...
    assert load["slots_total"] == SLOTS and load["slots_busy"] == SLOTS, load
    assert 1 <= load["requests_waiting"] <= extra, load
    assert load["requests_running"] == SLOTS, load
    # ...are what the gateway estimates the target's load from.
    assert target["load"]["source"] == "engine", target
    assert target["load"]["capacity"] == SLOTS and target["load"]["running"] == SLOTS, target
    assert target["load"]["utilization"] == 1.0, target
    assert target["load"]["waiting"] >= 1, target
    assert view["backends"][FAST]["state"] == "degraded", view["backends"][FAST]  # saturated
    assert "slots busy" in view["backends"][FAST]["reason"]

    # Cancelled by their clients, the requests leave the engine: slots free, queue empty, and the
    # backend serving plainly again, all seen by the probes alone.
    wait_until(lambda: idle(status(twins)), "chat-fast's engine idle again", limit=60)
    after = status(twins)
    assert fast_target(after)["load"]["source"] == "engine"
    assert after["backends"][FAST]["state"] == "up", after["backends"][FAST]


SESSIONS = ("ada", "grace", "linus", "barbara")


def test_follow_up_turns_of_a_session_go_to_the_engine_that_holds_its_context(twins: Up) -> None:
    wait_until(
        lambda: all(status(twins)["backends"][b]["state"] == "up" for b in (FAST, TWIN)),
        "both engines up",
        limit=60,
    )
    placement: dict[str, list[str]] = {s: [] for s in SESSIONS}
    previous: dict[str, int] = {}  # each session's prompt tokens in its latest turn
    histories = {
        s: [{"role": "system", "content": f"You are {s}'s assistant. Notes: {notes(s)}"}] for s in SESSIONS
    }
    with openai.OpenAI(base_url=twins.base_url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        for turn in range(3):
            for session, history in histories.items():
                history.append({"role": "user", "content": f"Turn {turn}: name one word from the notes."})
                raw = c.chat.completions.with_raw_response.create(
                    model="chat-pair",
                    messages=history,  # type: ignore[arg-type]
                    max_tokens=6,
                    temperature=0,
                    extra_headers={"x-session-id": session},
                )
                reply = raw.parse()
                placement[session].append(raw.headers["x-aifabric-backend"])
                history.append({"role": "assistant", "content": reply.choices[0].message.content or "ok"})
                assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
                cached = reply.usage.prompt_tokens_details.cached_tokens or 0
                if turn == 0:
                    assert cached < reply.usage.prompt_tokens // 2, (session, reply.usage)  # a cold engine
                else:
                    # The engine served this turn's history from its KV cache: the whole previous prompt
                    # at least, which only the engine that answered the previous turn has.
                    assert cached >= previous[session], (session, turn, reply.usage, placement)
                previous[session] = reply.usage.prompt_tokens
    for session, where in placement.items():
        assert len(set(where)) == 1, f"session {session} moved between engines: {where}"
    # The sessions are spread over both engines (a consistent hash of the x-session-id), not all on one.
    assert {where[0] for where in placement.values()} == {FAST, TWIN}, placement


def notes(session: str) -> str:
    words = ("river", "stone", "lantern", "orbit", "copper", "meadow", "signal", "harbor", "velvet", "quartz")
    return " ".join(words[(i * 7 + len(session) * 3 + ord(session[0])) % len(words)] for i in range(24))


def spill(up: Up) -> dict[str, str]:
    """One short request for chat-spill; the gateway's response headers."""
    with openai.OpenAI(base_url=up.base_url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="chat-spill", messages=[{"role": "user", "content": "Say ok."}], max_tokens=2
        )
        raw.parse()
        return {k.lower(): v for k, v in raw.headers.items()}


def overflow_total(up: Up, role: str) -> float:
    for line in httpx.get(up.base_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(f'aifabric_overflow_total{{role="{role}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no aifabric_overflow_total for {role} in /metrics")


def test_a_saturated_engine_overflows_to_the_fallback_and_traffic_returns_when_its_queue_drains(
    twins: Up,
) -> None:
    wait_until(
        lambda: idle(status(twins)) and status(twins)["backends"][TWIN]["state"] == "up",
        "both engines probed, chat-fast's idle",
        limit=60,
    )
    # Not saturated: chat-spill's own engine serves, nothing overflows.
    before = status(twins)["roles"]["chat-spill"]
    assert before["overflow"] == {"queue_depth": 1, "estimated_wait": None}, before
    assert not before["saturated"]
    home = spill(twins)
    assert home["x-aifabric-backend"] == FAST and "x-aifabric-overflow" not in home, home
    counted = overflow_total(twins, "chat-spill")
    spilled: list[dict[str, str]] = []
    during: list[dict[str, Any]] = []

    def meanwhile() -> None:
        # Every slot busy and requests queued at the engine (>= queue_depth 1): new requests for
        # chat-spill go to its fallback's engine at once rather than queue behind them.
        during.append(status(twins)["roles"]["chat-spill"])
        spilled.extend(spill(twins) for _ in range(3))

    fill_slots(twins, extra=2, meanwhile=meanwhile)
    assert during[0]["saturated"] is True, during
    for headers in spilled:
        assert headers["x-aifabric-backend"] == TWIN, headers
        assert headers["x-aifabric-overflow"] == "saturated", headers
        assert headers["x-aifabric-role"] == "chat-twin", headers
    view = status(twins)["roles"]["chat-spill"]
    assert view["overflowed"] >= 3, view
    assert overflow_total(twins, "chat-spill") == counted + 3

    # The clients left: the queue drains, and chat-spill is served by its own engine again.
    wait_until(lambda: idle(status(twins)), "chat-fast's engine idle again", limit=60)
    back = spill(twins)
    assert back["x-aifabric-backend"] == FAST and "x-aifabric-overflow" not in back, back
    assert overflow_total(twins, "chat-spill") == counted + 3
    assert status(twins)["roles"]["chat-spill"]["saturated"] is False
