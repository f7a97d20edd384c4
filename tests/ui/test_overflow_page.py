"""The status page while a role overflows: real Chromium, a real gateway, a fake vLLM whose queue is full."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ui_support import dump_dom, screenshot

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway


def test_a_saturated_role_says_it_overflows_and_how_often(tmp_path: Path) -> None:
    with (
        FakeBackend(kind="vllm", models=("qwen",), num_requests_waiting=5) as gpu,
        FakeBackend(kind="openai", models=("gpt-4o",)) as cloud,
    ):
        text = f"""
backends:
  gpu: {{kind: vllm, url: "{gpu.url}"}}
  cloud: {{kind: openai, url: "{cloud.url}"}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: gpu, model: qwen}}]
    fallbacks: [openai/strong]
    overflow: {{queue_depth: 3, estimated_wait: 20s}}
  openai/strong:
    kind: chat
    targets: [{{backend: cloud, model: gpt-4o}}]
"""
        gw = RunningGateway(load_config_text(text, "fabric.yaml", environ={})).start()
        try:
            assert gw.gateway is not None
            for name in ("gpu", "cloud"):
                asyncio.run_coroutine_threadsafe(gw.gateway.checker.probe_one(name), gw.loop).result(10)
            gw.openai().chat.completions.create(
                model="chat-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            page = dump_dom(gw.url + "/ui")
            screenshot(gw.url + "/ui", tmp_path / "overflow.png")
        finally:
            gw.stop()
    fast = page.one("article", data_role="chat-fast")
    assert "overflows at 3 queued or a 20 s wait (1 request so far)" in fast.text
    banner = fast.one("p", data_overflowing="")
    assert "new requests overflow to its fallbacks until a queue drains" in banner.text
    row = fast.one("tr", data_target="chat-fast/gpu/qwen")
    assert [td.text for td in row.find_all("td")][5] == "5"  # the engine's own queue
    assert (tmp_path / "overflow.png").stat().st_size > 0
