"""Two `aifabric serve` processes on one Redis: keys made by the CLI hold on both within 5 s, a key's
requests per minute are counted across both, and when Redis goes away each enforces its share and
says so, while every request still gets an answer."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from state_support import Serve, serve_workers
from tenancy_support import MASTER, fabric_text, keys_cli

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import wait_until
from cli_process import aifabric
from redis_support import RedisServer

HI = [{"role": "user", "content": "hi"}]


_clients: list[openai.OpenAI] = []


def client(serve: Serve, key: str) -> openai.OpenAI:
    """The official client for `serve`; closed when the test ends (see close_clients)."""
    c = openai.OpenAI(base_url=serve.url + "/v1", api_key=key, max_retries=0)
    _clients.append(c)
    return c


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def answered(c: openai.OpenAI) -> int:
    """The status a chat request gets."""
    try:
        c.chat.completions.create(model="chat-fast", messages=HI)  # type: ignore[arg-type]
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


def accepted(c: openai.OpenAI) -> bool:
    try:
        c.models.list()
    except openai.AuthenticationError:
        return False
    return True


def status(serve: Serve, admin_key: str) -> dict[str, Any]:
    """The gateway's /status: an operator view, read with an admin key (`keys create --scope admin`)."""
    request = urllib.request.Request(serve.url + "/status", headers={"Authorization": f"Bearer {admin_key}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def last_round(redis: Any, serve: Serve) -> float:
    """When `serve` started its latest limit-sync round (epoch seconds; 0 before the first)."""
    for member, score in redis.zrange("aifabric:rl:members", 0, -1, withscores=True):
        if f"/{serve.proc.pid}/" in member.decode():
            return float(score)
    return 0.0


def wait_for_a_whole_round(redis: Any, serve: Serve) -> None:
    """`serve` ran a whole sync round that started after now (a round is seen when it starts: the
    one after it proves it ended)."""
    start = float(redis.time()[0]) + 1
    wait_until(lambda: last_round(redis, serve) > start, "a sync round starts")
    started = last_round(redis, serve)
    wait_until(lambda: last_round(redis, serve) > started, "and the next one")


FILE_ADMIN = "sk-admin-file-7f3a"


def test_replicas_share_keys_and_counters_and_carry_on_without_redis(
    tmp_path: Path, fb: FakeBackend, redis_server: RedisServer
) -> None:
    fabric_file = tmp_path / "fabric.yaml"
    text = fabric_text(fb.url, "", state=redis_server.url).replace('keys: ""\n', "")
    # An operator key of the fabric file: it outlives the test's Redis, which comes back empty (no
    # persistence) and with it the keys of the store.
    fabric_file.write_text(text.replace("api_keys: [", f'admin_keys: ["{FILE_ADMIN}"], api_keys: ['))
    a, b = Serve(fabric_file), Serve(fabric_file)
    redis = redis_server.client()
    try:
        a.wait_ready()
        b.wait_ready()
        shared = keys_cli(fabric_file, "create", "--name", "shared", "--rpm", "4")
        assert shared.returncode == 0 and "redis" in shared.stderr, shared.stderr
        alone = keys_cli(fabric_file, "create", "--name", "alone", "--rpm", "4").stdout.strip()
        ops = keys_cli(fabric_file, "create", "--name", "ops", "--scope", "admin").stdout.strip()
        on_a, on_b = client(a, shared.stdout.strip()), client(b, shared.stdout.strip())
        wait_until(lambda: accepted(on_a) and accepted(on_b), "both replicas accept the new key", 5)
        # The other two keys are used on A once Redis is away: A must have read them before (a model
        # list is no chat request: it counts against no limit).
        wait_until(lambda: accepted(client(a, alone)) and accepted(client(a, ops)), "A has every key", 5)

        # Between two exchanges a replica spends its half of the headroom (tenancy.ratelimit): one
        # round each, A's three requests pass.
        got = []
        for _ in range(3):
            got.append(answered(on_a))
            wait_for_a_whole_round(redis, a)
        assert got == [200, 200, 200]
        pushed = redis.get  # the three requests of A reach the shared counter...
        wait_until(
            lambda: sum(float(pushed(k) or 0) for k in redis.keys("aifabric:rl:key:shared:requests:*")) >= 3,
            "replica A pushed its count",
        )
        wait_for_a_whole_round(redis, b)  # B read the shared counts
        # ...so B admits the one request left of the 4 per minute, not 4 of its own. (The last
        # request's worth goes to one replica a round, in turn, from the end of that round's
        # exchange to the start of the next: B may wait a few rounds for it. Every 330 ms, so that
        # the requests fall at every point of the 250 ms rounds, not always just as one starts.)
        got = []
        for _ in range(30):
            got.append(answered(on_b))
            time.sleep(0.33)
        assert got.count(200) == 1, got

        redis_server.stop()
        wait_until(lambda: not status(a, ops)["tenancy"]["limits"]["reachable"], "A notices Redis is away")
        view = status(a, ops)["tenancy"]
        assert view["limits"]["share"] == 0.5, view
        assert any("not shared" in line for line in a.output), "the log says so"
        shown = aifabric("status", "--url", a.url, "--api-key", ops)
        assert "limits: not shared (redis unreachable), this process enforces 0.5" in shown.stdout, (
            shown.stdout
        )
        # Keys already read keep working; each replica enforces half of the 4 per minute.
        assert [answered(client(a, alone)) for _ in range(3)] == [200, 200, 429]
        assert answered(client(a, MASTER)) == 200, "nothing else fails because Redis is away"
        assert answered(client(b, MASTER)) == 200

        redis_server.start()  # empty: the store's keys (ops too) are gone, the file's admin key is not
        wait_until(lambda: status(a, FILE_ADMIN)["tenancy"]["limits"]["reachable"], "A notices Redis is back")
        assert status(a, FILE_ADMIN)["tenancy"]["limits"]["share"] == 1.0
    finally:
        redis.close()
        a.stop()
        b.stop()


def worker_rounds(state_dir: Path) -> dict[str, float]:
    """When each worker started its latest limit-sync round, by its file."""
    rounds = {}
    for path in state_dir.glob("rl-*.json"):
        with contextlib.suppress(OSError, ValueError):
            rounds[path.name] = float(json.loads(path.read_bytes())["at"])
    return rounds


def wait_for_every_worker(state_dir: Path, workers: int) -> None:
    """Every worker ran a whole sync round that started after now."""
    start = time.time()
    wait_until(
        lambda: len(r := worker_rounds(state_dir)) == workers and min(r.values()) > start,
        "every worker starts a round",
    )
    started = worker_rounds(state_dir)
    wait_until(
        lambda: all(worker_rounds(state_dir).get(k, 0) > v for k, v in started.items()),
        "and the next one",
    )


@pytest.mark.parametrize("workers", [2])
def test_every_worker_honours_a_new_and_a_revoked_key(tmp_path: Path, fb: FakeBackend, workers: int) -> None:
    fabric_file = tmp_path / "fabric.yaml"
    fabric_file.write_text(fabric_text(fb.url, f"sqlite://{tmp_path}/keys.db"))
    serve = serve_workers(fabric_file, tmp_path, workers)
    try:
        serve.wait_ready()
        key = keys_cli(fabric_file, "create", "--name", "app").stdout.strip()
        # Connections are spread over the workers by the kernel: many fresh ones reach each of them.
        clients = [client(serve, key) for _ in range(8)]

        def all_accept() -> bool:
            return all(accepted(c) for c in clients)

        wait_until(all_accept, "every worker accepts the new key", 5)

        # The workers count one key's requests together: 3 per minute in all, not 3 each.
        limited = keys_cli(fabric_file, "create", "--name", "limited", "--rpm", "3").stdout.strip()
        fresh = [client(serve, limited) for _ in range(8)]  # one connection each: spread over workers
        wait_until(lambda: all(accepted(c) for c in fresh), "every worker accepts the limited key", 5)
        state_dir = tmp_path / "aifabric" / str(serve.port)
        statuses = []
        for c in fresh * 2:
            statuses.append(answered(c))
            wait_for_every_worker(state_dir, workers)  # the count reached every worker
        # Near the limit a worker may refuse for a round (the last request's worth of headroom goes
        # to one worker a round, in turn: tenancy.ratelimit); over 16 tries the third gets through.
        assert statuses.count(200) == 3, statuses
        assert statuses[:2] == [200, 200], statuses

        keys_cli(fabric_file, "revoke", "app")

        def all_refuse() -> bool:
            return not any(accepted(c) for c in clients)

        wait_until(all_refuse, "every worker refuses the revoked key", 5)
    finally:
        serve.stop()


def test_a_backend_s_max_concurrency_holds_for_all_workers_together(tmp_path: Path, fb: FakeBackend) -> None:
    # max_concurrency 2 over two workers: one request at the backend per worker, 2 at once in all
    # (not 2 per worker); with no queue, the others are turned away at once.
    fabric_file = tmp_path / "fabric.yaml"
    text = fabric_text(fb.url, f"sqlite://{tmp_path}/keys.db")
    capped = text.replace(
        "health: {interval: 1h}}", "health: {interval: 1h}, max_concurrency: 2, max_queue: 0}"
    )
    assert capped != text
    fabric_file.write_text(capped)
    serve = serve_workers(fabric_file, tmp_path, 2)
    try:
        serve.wait_ready()
        fb.set(latency_ms=4000)  # every admitted request stays at the backend for 4 s
        got: list[int] = []

        def one() -> None:
            # A connection of its own each: the kernel spreads them over both workers.
            with httpx.Client(timeout=30) as http:
                answer = http.post(
                    serve.url + "/v1/chat/completions",
                    json={"model": "chat-fast", "messages": HI},
                    headers={"Authorization": f"Bearer {MASTER}"},
                )
            got.append(answer.status_code)

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        # Every request either was turned away or is at the backend (none can have finished there).
        wait_until(lambda: len(got) + fb.count("/v1/chat/completions") == 12, "every request placed")
        at_once = fb.count("/v1/chat/completions")
        for t in threads:
            t.join()
        assert 1 <= at_once <= 2, f"{at_once} requests at the backend at once"
        assert sorted(got).count(200) == at_once
    finally:
        serve.stop()


def burst(serve: Serve, fb: FakeBackend, key: str, n: int, payload: dict[str, Any]) -> list[int]:
    """`n` requests of `key` at once, each on a connection of its own (the kernel spreads them over
    the workers), while the backend holds each for seconds: the statuses, once every one is answered."""
    fb.set(latency_ms=3000)
    before = fb.count("/v1/chat/completions")
    got: list[int] = []

    def one() -> None:
        with httpx.Client(timeout=30) as http:
            answer = http.post(
                serve.url + "/v1/chat/completions",
                json={"model": "chat-fast", **payload},
                headers={"Authorization": f"Bearer {key}"},
            )
        got.append(answer.status_code)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    # No admitted request can have finished (so given back tokens) before every one was decided.
    wait_until(lambda: len(got) + fb.count("/v1/chat/completions") - before == n, "every request decided")
    for t in threads:
        t.join()
    fb.set(latency_ms=0)
    return got


@pytest.mark.parametrize("limit", ["--rpm", "--tpm"])
def test_a_burst_over_two_workers_stays_within_the_key_s_limit(
    tmp_path: Path, fb: FakeBackend, limit: str
) -> None:
    """40 requests at once, spread by the kernel over both workers: each worker spends only its part
    of the headroom until the next exchange of counts (tenancy.ratelimit), and every worker's round
    reads the others' counts of the same tick (tenancy.limitsync), so together they admit the key's
    limit, not a limit each (10 of 40 before), and at least one."""
    fabric_file = tmp_path / "fabric.yaml"
    fabric_file.write_text(fabric_text(fb.url, f"sqlite://{tmp_path}/keys.db"))
    serve = serve_workers(fabric_file, tmp_path, 2)
    try:
        serve.wait_ready()
        # rpm 5; or tpm 55: each request is estimated at 11 tokens ("hi": 1, max_tokens: 10), 5 fit.
        key = keys_cli(fabric_file, "create", "--name", "burst", limit, "5" if limit == "--rpm" else "55")
        secret = key.stdout.strip()
        fresh = [client(serve, secret) for _ in range(8)]
        wait_until(lambda: all(accepted(c) for c in fresh), "every worker accepts the key", 5)
        wait_for_every_worker(tmp_path / "aifabric" / str(serve.port), 2)  # they know of each other
        statuses = burst(serve, fb, secret, 40, {"messages": HI, "max_tokens": 10})
        assert set(statuses) <= {200, 429}, statuses
        assert 1 <= statuses.count(200) <= 5, f"{statuses.count(200)} of 40 admitted, limit 5"
    finally:
        serve.stop()


def test_a_key_s_concurrency_holds_for_all_workers_together(tmp_path: Path, fb: FakeBackend) -> None:
    """`--concurrency 1` over two workers: one request of the key in flight in the whole gateway
    (before, each worker allowed its share, at least 1: two at once)."""
    fabric_file = tmp_path / "fabric.yaml"
    fabric_file.write_text(fabric_text(fb.url, f"sqlite://{tmp_path}/keys.db"))
    serve = serve_workers(fabric_file, tmp_path, 2)
    try:
        serve.wait_ready()
        secret = keys_cli(fabric_file, "create", "--name", "one", "--concurrency", "1").stdout.strip()
        fresh = [client(serve, secret) for _ in range(8)]
        wait_until(lambda: all(accepted(c) for c in fresh), "every worker accepts the key", 5)
        statuses = burst(serve, fb, secret, 12, {"messages": HI})
        assert sorted(statuses) == [200] + [429] * 11, statuses
        # Given back when it ends: the next request passes, on whichever worker.
        assert [answered(c) for c in fresh[:4]] == [200] * 4
    finally:
        serve.stop()


def test_a_key_s_concurrency_holds_for_replicas_on_redis_together(
    tmp_path: Path, fb: FakeBackend, redis_server: RedisServer
) -> None:
    """`--concurrency 1` over two replicas on one Redis: one request of the key in flight in all (before,
    each replica allowed its share, at least 1: two at once). Redis away: each replica allows its
    share, says so, and every request still gets an answer."""
    fabric_file = tmp_path / "fabric.yaml"
    text = fabric_text(fb.url, "", state=redis_server.url).replace('keys: ""\n', "")
    fabric_file.write_text(text.replace("api_keys: [", f'admin_keys: ["{FILE_ADMIN}"], api_keys: ['))
    a, b = Serve(fabric_file), Serve(fabric_file)
    try:
        a.wait_ready()
        b.wait_ready()
        secret = keys_cli(fabric_file, "create", "--name", "one", "--concurrency", "1").stdout.strip()
        on_a, on_b = client(a, secret), client(b, secret)
        wait_until(lambda: accepted(on_a) and accepted(on_b), "both replicas accept the new key", 5)
        shared = {"shared": "redis", "reachable": True, "error": ""}
        assert status(a, FILE_ADMIN)["tenancy"]["concurrency"] == shared

        # A stream that lasts about 3 s: the two refusals below fit in it even on a loaded machine.
        fb.set(token_delay_ms=200, tokens=15)
        with on_a.chat.completions.create(model="chat-fast", messages=HI, stream=True) as held:  # type: ignore[arg-type]
            for replica in (on_b, on_a):  # the one slot is A's: refused on B, and on A itself
                with pytest.raises(openai.RateLimitError) as busy:
                    replica.chat.completions.create(model="chat-fast", messages=HI)  # type: ignore[arg-type]
                assert busy.value.code == "concurrency_limit_exceeded"
                assert busy.value.response.headers["retry-after"] == "1"
            assert list(held)
        fb.set(token_delay_ms=0)
        # Given back when the stream ended (not awaited by it): B gets the slot once that landed.
        wait_until(lambda: answered(on_b) == 200, "the slot is free again, for the other replica")

        redis_server.stop()
        # Each replica now allows its share (1 of 1, at least 1): answered, never a 5xx.
        assert answered(on_a) == 200
        assert answered(on_b) == 200
        view = status(a, FILE_ADMIN)["tenancy"]["concurrency"]
        assert view["shared"] == "redis" and view["reachable"] is False, view
        assert any("concurrency limits are not shared" in line for line in a.output), "the log says so"
        shown = aifabric("status", "--url", a.url, "--api-key", FILE_ADMIN)
        assert "concurrency: not shared (redis unreachable)" in shown.stdout, shown.stdout

        redis_server.start()
        wait_until(
            lambda: status(a, FILE_ADMIN)["tenancy"]["concurrency"]["reachable"], "A notices Redis is back"
        )
        assert any("concurrency limits are shared again" in line for line in a.output)
    finally:
        a.stop()
        b.stop()
