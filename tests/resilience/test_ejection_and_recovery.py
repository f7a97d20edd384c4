"""Time to eject and to recover, measured through the gateway (printed, never asserted), and what
must hold whatever the timing: ejection after exactly `consecutive_failures` failed requests, no
request to an ejected target until its ejection time is up, one trial after it, recovery."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable

from resilience_support import chat, post_chat, report

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until

StartGateway = Callable[..., RunningGateway]
MakeBackend = Callable[..., FakeBackend]


def fabric(a: FakeBackend, b: FakeBackend, *, weight_b: float = 0.001, base_ejection: str = "2s") -> str:
    checks = (
        f"health: {{interval: 200ms, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 1,"
        f" consecutive_failures: 3, base_ejection: {base_ejection}, max_ejection: 30s}}"
    )
    return f"""
backends:
  a: {{kind: vllm, url: "{a.url}", {checks}}}
  b: {{kind: vllm, url: "{b.url}", {checks}}}
roles:
  chat-fast:
    kind: chat
    targets: [{{backend: a, model: m1}}, {{backend: b, model: m1, weight: {weight_b}}}]
retry: {{deadline: 20s, try_timeout: 2s}}
"""


def inference_count(fb: FakeBackend) -> int:
    return fb.count("/v1/chat/completions")


def test_failing_target_is_ejected_after_n_failures_and_recovers_after_the_ejection_time(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    # Probes off: this is the passive signal alone (a 500 on requests, while /health says fine).
    a, b = backend(status_override=500), backend()
    gw = start_gateway(fabric(a, b))
    started = time.monotonic()
    for _ in range(3):
        resp = post_chat(gw.url)
        assert resp.status_code == 200  # each failure was absorbed by failing over to b
        assert resp.headers["x-aifabric-attempts"] == "2"
    ejected_at = time.monotonic()
    report("500s: ejected after 3 failed requests, in", ejected_at - started)
    assert inference_count(a) == 3
    # Ejected: requests go straight to b, a is not even tried (until its 2 s are up).
    for _ in range(5):
        resp = post_chat(gw.url)
        assert (resp.headers["x-aifabric-backend"], resp.headers["x-aifabric-attempts"]) == ("b", "1")
    assert inference_count(a) == 3
    a.set(status_override=None)  # the backend is fixed

    def served_by_a() -> bool:
        return post_chat(gw.url).headers["x-aifabric-backend"] == "a"

    wait_until(served_by_a, "a to serve again", limit=15)
    report("ejected target serving again after its ejection, in", time.monotonic() - ejected_at)
    assert gw.call(lambda: gw.target("chat-fast", "a").detector.ejections) == 1


def test_a_failed_half_open_trial_ejects_again_for_longer(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    a, b = backend(status_override=500), backend()
    gw = start_gateway(fabric(a, b, base_ejection="500ms"))
    for _ in range(3):
        post_chat(gw.url)
    assert inference_count(a) == 3
    target = gw.target("chat-fast", "a")
    first_until = gw.call(target.detector.ejected_until)
    assert first_until is not None

    # After the ejection time, exactly one trial request reaches a; it fails and a is out again.
    def trial_sent() -> bool:
        assert post_chat(gw.url).status_code == 200  # the failed trial is absorbed by failing over
        return inference_count(a) == 4

    wait_until(trial_sent, "the half-open trial", 10)
    for _ in range(5):
        assert post_chat(gw.url).headers["x-aifabric-backend"] == "b"
    assert inference_count(a) == 4
    assert gw.call(lambda: target.detector.ejections) == 2
    second_until = gw.call(target.detector.ejected_until)
    assert second_until is not None and second_until > first_until


def test_killed_target_detected_by_probes_and_back_after_restart(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    a, b = backend(), backend()
    gw = start_gateway(fabric(a, b), probe=True)
    wait_until(lambda: gw.state("a") == "up", "a to be probed up")
    a.stop()
    killed = time.monotonic()
    wait_until(lambda: gw.state("a") == "down", "the probes to mark a down")
    report(
        "killed backend marked down by probes (interval 200 ms, 2 failed probes) after",
        time.monotonic() - killed,
    )
    assert "a" not in httpx_ready(gw)
    a.start()
    restarted = time.monotonic()
    wait_until(lambda: gw.state("a") == "up", "the probes to mark a up again")
    report("restarted backend marked up by probes after", time.monotonic() - restarted)
    wait_until(lambda: post_chat(gw.url).headers["x-aifabric-backend"] == "a", "a to serve again")


def httpx_ready(gw: RunningGateway) -> list[str]:
    import httpx

    return httpx.get(gw.url + "/health/ready", timeout=5).json()["routable_backends"]  # type: ignore[no-any-return]


def test_zero_client_failures_while_a_target_is_killed_and_restarted_repeatedly(
    start_gateway: StartGateway, backend: MakeBackend
) -> None:
    a, b = backend(latency_ms=5), backend(latency_ms=5)
    gw = start_gateway(fabric(a, b, weight_b=1.0, base_ejection="300ms"), probe=True)
    client = gw.openai(timeout=30.0)
    stop = threading.Event()
    kills = 0

    def chaos() -> None:
        nonlocal kills
        while not stop.is_set():
            time.sleep(0.15)
            a.stop()  # killed: the port closes, every connection drops (in-flight requests too)
            kills += 1
            time.sleep(0.15)
            a.start()  # restarted on the same port

    chaos_thread = threading.Thread(target=chaos, daemon=True)
    chaos_thread.start()
    served: dict[str, int] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            raw = chat(client, text=f"request {i}")
            assert raw.parse().choices[0].message.content == f"[m1] request {i}"
            name = raw.headers["x-aifabric-backend"]
            served[name] = served.get(name, 0) + 1
        except BaseException as exc:  # every failure is collected and shown, not only the first
            errors.append(exc)

    started = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(200)))
    finally:
        stop.set()
        chaos_thread.join(5)
    report(f"200 requests with a killed {kills} times", time.monotonic() - started)
    print(f"[resilience] served by: {served}")
    assert errors == []
    assert sum(served.values()) == 200
    assert kills >= 2  # the chaos really happened during the run
