"""/status of `aifabric serve --workers 2`: its request counters, overflows and the targets' successes and
failures are every worker's summed (from the files `/metrics` sums: observability.merged), so every
refresh shows all the traffic, whichever worker answers it."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import openai
import pytest
from workers_support import ADMIN, MASTER, fabric_text, serve_workers

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.config.load import load_config_text
from aifabric.gateway.app import Gateway
from aifabric.gateway.ui import status_view
from aifabric.observability.merged import SummedCounters, counter_samples, merge_expositions
from aifabric.observability.metrics import render_metrics
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import wait_until


def test_counter_samples_read_back_what_the_exposition_wrote() -> None:
    text = (
        "# TYPE aifabric_requests_total counter\n"
        'aifabric_requests_total{role="a \\"b\\" \\\\ c",status="200"} 3\n'
        'aifabric_requests_total{role="",status="404"} 2\n'
        'aifabric_requests_total_other{role="x",status="200"} 9\n'
    )
    assert counter_samples(text, "aifabric_requests_total") == {
        ('a "b" \\ c', "200"): 3,
        ("", "404"): 2,
    }


def test_the_view_shows_the_sums_and_how_many_workers_are_in_them() -> None:
    fabric = fabric_text("http://127.0.0.1:9/v1")
    one, two = (Gateway(load_config_text(fabric, "fabric.yaml", environ={}), probe=False) for _ in "12")
    for gw, answered in ((one, 3), (two, 4)):
        target = gw.table.routes["chat-fast"].targets[0]
        for _ in range(answered):
            gw.metrics.requests[("chat-fast", "200")] += 1
            target.successes += 1
        gw.metrics.requests[("", "404")] += 1
        target.failures += 1
    texts = [render_metrics(gw.metrics, gw.table, 100.0).decode() for gw in (one, two)]
    summed = SummedCounters.from_exposition(merge_expositions(texts[0], texts[1:]), workers=2)
    view = status_view(one.table, one.metrics, 100.0, summed)
    assert view["requests"] == {
        "total": 9,
        "errors": 2,
        "by_role": {"(no role)": {"total": 2, "errors": 2}, "chat-fast": {"total": 7, "errors": 0}},
        "by_status": {"200": 7, "404": 2},
        "workers": 2,
    }
    for target in (view["targets"]["chat-fast/b/m1"], view["roles"]["chat-fast"]["targets"][0]):
        assert (target["successes"], target["failures"]) == (7, 2)
    alone = status_view(one.table, one.metrics, 100.0)  # a single worker: its own, as before
    assert (alone["requests"]["total"], alone["requests"]["workers"]) == (4, 1)
    assert alone["targets"]["chat-fast/b/m1"]["successes"] == 3


def status(url: str) -> dict[str, object]:
    """One /status on a connection of its own (so the kernel picks the worker)."""
    with httpx.Client(timeout=10) as http:
        answer = http.get(url + "/status", headers={"Authorization": f"Bearer {ADMIN}"})
        answer.raise_for_status()
        body: dict[str, object] = answer.json()
        return body


def test_every_status_refresh_counts_every_worker_s_requests(tmp_path: Path, fb: FakeBackend) -> None:
    fabric_file = tmp_path / "fabric.yaml"
    fabric_file.write_text(fabric_text(fb.url))
    serve = serve_workers(fabric_file, tmp_path, 2)
    try:
        serve.wait_ready()
        answered, refused = 36, 4
        for i in range(answered + refused):  # a client (so a connection) each: both workers answer
            with openai.OpenAI(base_url=serve.url + "/v1", api_key=MASTER, max_retries=0) as c:
                if i % 10 == 9:  # a model no role serves: 404, counted as an error with no role
                    with pytest.raises(openai.NotFoundError):
                        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
                else:
                    c.chat.completions.create(model="chat-fast", messages=[{"role": "user", "content": "hi"}])
        seen: list[dict[str, object]] = []

        def settled() -> bool:
            seen.append(status(serve.url))
            return seen[-1]["requests"] == {  # type: ignore[comparison-overlap]
                "total": 40,
                "errors": refused,
                "by_role": {
                    "(no role)": {"total": refused, "errors": refused},
                    "chat-fast": {"total": answered, "errors": 0},
                },
                "by_status": {"200": answered, "404": refused},
                "workers": 2,
            }

        wait_until(settled, "a /status refresh counts every request, whichever worker answers")
        settled_at = len(seen)
        pids: set[object] = set()

        def both_answered() -> bool:
            seen.append(status(serve.url))
            pids.add(seen[-1]["gateway"]["pid"])  # type: ignore[index]
            return len(pids) == 2 and len(seen) - settled_at >= 10

        wait_until(both_answered, "both workers answered /status")
        for view in seen[settled_at:]:
            requests = view["requests"]
            assert requests["total"] == 40 and requests["workers"] == 2, requests  # type: ignore[index]
            target = view["targets"]["chat-fast/b/m1"]  # type: ignore[index]
            assert (target["successes"], target["failures"]) == (answered, 0), target
            assert view["gateway"]["workers"] == 2  # type: ignore[index]
        for _ in range(4):  # `aifabric status`, a connection each: the same line whichever answers
            out, err = io.StringIO(), io.StringIO()
            main(["status", "--url", serve.url, "--api-key", ADMIN], console=Console(out, err))
            assert "requests: 40 answered, 4 errors (all 2 workers)" in out.getvalue(), out.getvalue()
    finally:
        serve.stop()
