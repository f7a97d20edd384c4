"""/metrics of `aifabric serve --workers 2`: whichever worker answers a scrape, the counters are every
worker's together (observability.merged), never going back, and they add up to the requests sent,
also after a worker was killed and replaced."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import openai
from workers_support import ADMIN, MASTER, Serve, fabric_text, serve_workers

from aifabric.observability.merged import merge_expositions
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import wait_until

OWN = """# HELP aifabric_requests_total API requests answered.
# TYPE aifabric_requests_total counter
aifabric_requests_total{role="chat",status="200"} 3
# HELP aifabric_request_duration_seconds Time to response headers.
# TYPE aifabric_request_duration_seconds histogram
aifabric_request_duration_seconds_bucket{role="chat",le="0.1"} 2
aifabric_request_duration_seconds_bucket{role="chat",le="+Inf"} 3
aifabric_request_duration_seconds_sum{role="chat"} 0.25
aifabric_request_duration_seconds_count{role="chat"} 3
# HELP aifabric_target_outstanding Requests in flight to the target.
# TYPE aifabric_target_outstanding gauge
aifabric_target_outstanding{role="chat"} 1
"""

OTHER = """# HELP aifabric_requests_total API requests answered.
# TYPE aifabric_requests_total counter
aifabric_requests_total{role="chat",status="200"} 4
aifabric_requests_total{role="chat",status="429"} 2
# HELP aifabric_request_duration_seconds Time to response headers.
# TYPE aifabric_request_duration_seconds histogram
aifabric_request_duration_seconds_bucket{role="chat",le="0.1"} 1
aifabric_request_duration_seconds_bucket{role="chat",le="+Inf"} 4
aifabric_request_duration_seconds_sum{role="chat"} 0.5
aifabric_request_duration_seconds_count{role="chat"} 4
# HELP aifabric_target_outstanding Requests in flight to the target.
# TYPE aifabric_target_outstanding gauge
aifabric_target_outstanding{role="chat"} 7
# HELP aifabric_usage_tokens_total Tokens used.
# TYPE aifabric_usage_tokens_total counter
aifabric_usage_tokens_total{key="app",direction="in"} 12
"""


def test_counters_and_histograms_are_summed_gauges_are_the_answering_worker_s() -> None:
    merged = merge_expositions(OWN, [OTHER])
    lines = merged.splitlines()
    assert 'aifabric_requests_total{role="chat",status="200"} 7' in lines
    # A series only the other worker has, in its family's block (after its TYPE line, before the next).
    family = lines.index("# TYPE aifabric_requests_total counter")
    assert lines[family + 2] == 'aifabric_requests_total{role="chat",status="429"} 2', merged
    assert 'aifabric_request_duration_seconds_bucket{role="chat",le="+Inf"} 7' in lines
    assert 'aifabric_request_duration_seconds_sum{role="chat"} 0.75' in lines
    assert 'aifabric_target_outstanding{role="chat"} 1' in lines, "a gauge is this worker's view"
    assert "# TYPE aifabric_usage_tokens_total counter" in lines
    assert 'aifabric_usage_tokens_total{key="app",direction="in"} 12' in lines
    assert merge_expositions(OWN, []) == OWN


def scrape(serve: Serve) -> dict[str, float]:
    """One scrape on a connection of its own (so the kernel picks the worker): series -> value."""
    with httpx.Client(timeout=10) as http:
        answer = http.get(serve.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
        answer.raise_for_status()
        text = answer.text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


ANSWERED = 'aifabric_requests_total{role="chat-fast",status="200"}'
TOKENS_IN = 'aifabric_usage_tokens_total{key="master",direction="in"}'


def test_every_scrape_counts_every_worker_s_requests_and_never_goes_back(
    tmp_path: Path, fb: FakeBackend
) -> None:
    fabric_file = tmp_path / "fabric.yaml"
    fabric_file.write_text(fabric_text(fb.url))
    serve = serve_workers(fabric_file, tmp_path, 2)
    seen: list[dict[str, float]] = []
    try:
        serve.wait_ready()
        sent = 24
        prompt_tokens = 0
        for _ in range(sent):  # a client (so a connection) each: the kernel spreads them over both workers
            with openai.OpenAI(base_url=serve.url + "/v1", api_key=MASTER, max_retries=0) as c:
                answer = c.chat.completions.create(
                    model="chat-fast", messages=[{"role": "user", "content": "hi"}]
                )
                assert answer.usage is not None
                prompt_tokens += answer.usage.prompt_tokens

        def settled() -> bool:
            seen.append(scrape(serve))
            return seen[-1].get(ANSWERED) == sent

        wait_until(settled, "a scrape counts every request, whichever worker answers")
        for _ in range(10):
            seen.append(scrape(serve))
        assert [s.get(ANSWERED) for s in seen[-10:]] == [sent] * 10
        wait_until(lambda: scrape(serve).get(TOKENS_IN) == prompt_tokens, "the usage counters add up too")

        # A worker killed and replaced (same index) counts on from where it was.
        victim = serve.workers()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(serve.workers()) == 2 and victim not in serve.workers(), "a new worker")
        for _ in range(10):
            seen.append(scrape(serve))
        assert [s.get(ANSWERED) for s in seen[-10:]] == [sent] * 10
    finally:
        serve.stop()
    answered = [s.get(ANSWERED, 0.0) for s in seen]
    assert answered == sorted(answered), f"a counter went back between scrapes: {answered}"
