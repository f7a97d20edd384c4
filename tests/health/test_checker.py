"""The health checker against fake backends on 127.0.0.1: states, drift, transitions, its loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from health_support import FAST, estate

from aifabric.core import BackendState, Transition
from aifabric.health.checker import HealthChecker, probe_interval
from aifabric.http.client import UpstreamClient
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import eventually


def run(coro: Callable[[UpstreamClient], Awaitable[None]]) -> None:
    async def go() -> None:
        client = UpstreamClient(connect_timeout=1.0)
        try:
            await coro(client)
        finally:
            await client.aclose()

    asyncio.run(go())


def test_probe_all_states_drift_and_transitions_once(caplog: pytest.LogCaptureFixture) -> None:
    with (
        FakeBackend(kind="vllm", models=("BAAI/bge-base-en-v1.5",)) as embed,
        FakeBackend(kind="vllm", models=("Qwen2.5-7B-Instruct-AWQ",)) as armitage,
        FakeBackend(kind="vllm", models=("Llama-3-8B-Instruct-AWQ",)) as wintermute,
    ):
        wintermute.stop()  # the workstation is powered off
        config = estate(
            {
                "motoko-embed": ("motoko", "vllm", embed.url),
                "armitage-vllm": ("armitage", "vllm", armitage.url),
                "wintermute-vllm": ("wintermute", "vllm", wintermute.url),
            },
            roles={
                "embeddings-general": ("motoko-embed", "bge-base-en-v1.5"),
                "chat-fast": ("armitage-vllm", "Qwen2.5-7B-Instruct-AWQ"),
                "chat-deep": ("wintermute-vllm", "Llama-3-8B-Instruct-AWQ"),
            },
            asleep_hosts=("wintermute", "armitage"),
        )
        seen: list[Transition] = []

        async def scenario(client: UpstreamClient) -> None:
            checker = HealthChecker(config, client, on_transition=seen.append)
            with caplog.at_level(logging.WARNING, logger="aifabric.health"):
                healths = await checker.probe_all()
                await checker.probe_all()
            assert healths["armitage-vllm"].state is BackendState.UP
            assert healths["wintermute-vllm"].state is BackendState.ASLEEP
            assert healths["motoko-embed"].state is BackendState.UP
            assert healths["motoko-embed"].mismatches == [
                "config says bge-base-en-v1.5, motoko-embed serves BAAI/bge-base-en-v1.5: set the target's "
                "model to 'BAAI/bge-base-en-v1.5' in the fabric file, or have motoko-embed serve "
                "'bge-base-en-v1.5'"
            ]
            assert healths["armitage-vllm"].mismatches == []
            drift_logs = [r for r in caplog.records if "model id drift" in r.getMessage()]
            assert len(drift_logs) == 1, "a mismatch is logged once, not on every probe"

        run(scenario)
    assert sorted((t.backend, t.new) for t in seen) == [
        ("armitage-vllm", BackendState.UP),
        ("motoko-embed", BackendState.UP),
        ("wintermute-vllm", BackendState.ASLEEP),
    ]


def test_run_probes_each_backend_on_its_own_and_a_hang_blocks_no_other() -> None:
    with FakeBackend(kind="vllm", models=("m",)) as quick, FakeBackend(kind="vllm", models=("m",)) as stuck:
        stuck.set(hang=True, fault_scope="all")
        config = estate(
            {"quick": ("a", "vllm", quick.url), "stuck": ("b", "vllm", stuck.url)},
            health=replace(FAST, timeout=3.0),
        )

        async def scenario(client: UpstreamClient) -> None:
            checker = HealthChecker(config, client)
            stop = asyncio.Event()
            task = asyncio.create_task(checker.run(stop))
            # The stuck backend's probe waits for its 3 s timeout; meanwhile `quick` is probed again
            # and again at its 50 ms interval.
            await eventually(lambda: quick.count("/health") >= 3, "quick probed repeatedly")
            assert stuck.count("/health") == 1
            await eventually(lambda: checker.healths["stuck"].state is BackendState.DOWN, "stuck is down")
            assert checker.healths["stuck"].failure is not None
            stop.set()
            await asyncio.wait_for(task, 5)

        try:
            run(scenario)
        finally:
            stuck.set(hang=False)


def test_run_follows_a_reload_and_keeps_health_objects() -> None:
    with FakeBackend(kind="vllm", models=("m",)) as one, FakeBackend(kind="tei", models=("e",)) as two:
        first = estate({"one": ("a", "vllm", one.url)})
        second = estate({"one": ("a", "vllm", one.url), "two": ("b", "tei", two.url)})

        async def scenario(client: UpstreamClient) -> None:
            checker = HealthChecker(first, client)
            stop = asyncio.Event()
            task = asyncio.create_task(checker.run(stop))
            await eventually(lambda: checker.healths["one"].state is BackendState.UP, "one is up")
            kept = checker.healths["one"]
            checker.update_config(second)
            await eventually(lambda: checker.healths["two"].state is BackendState.UP, "two is probed")
            assert checker.healths["one"] is kept, "the routing table's references stay valid"
            checker.update_config(estate({"two": ("b", "tei", two.url)}))
            assert "one" not in checker.healths
            before = one.count()
            await eventually(lambda: two.count("/health") >= 3, "two keeps being probed")
            assert one.count() <= before + 1, "a removed backend is no longer probed"
            stop.set()
            await asyncio.wait_for(task, 5)

        run(scenario)


def test_clouds_are_probed_sparingly() -> None:
    config = estate(
        {
            "openai": ("cloud", "openai", "https://api.openai.com/v1"),
            "gpu": ("g", "vllm", "http://127.0.0.1:9/v1"),
        }
    )
    assert probe_interval(config.backends["openai"]) == 300.0
    assert probe_interval(config.backends["gpu"]) == 0.05
