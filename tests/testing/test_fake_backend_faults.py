"""Each fault switch of the fake backend does what it says, seen from a real client on a real socket.

No timing assertions: slowness is shown by a client timeout that fires with the switch and not without.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import wait_until

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "one two three four five"}]
CHAT: dict[str, object] = {"model": "m", "messages": USER}
STREAM: dict[str, object] = {**CHAT, "stream": True}


@pytest.fixture
def fb() -> Iterator[FakeBackend]:
    with FakeBackend("vllm", ("m",)) as backend:
        yield backend


def chat(fb: FakeBackend, body: dict[str, object] = CHAT, timeout: float = 30) -> httpx.Response:
    return httpx.post(fb.url + "/chat/completions", json=body, timeout=timeout)


def test_fail_first_n_fails_exactly_n_requests_then_serves(fb: FakeBackend) -> None:
    fb.set(fail_first_n=2, fail_status=503, retry_after=3)
    first, second, third = chat(fb), chat(fb), chat(fb)
    assert [r.status_code for r in (first, second, third)] == [503, 503, 200]
    assert first.headers["retry-after"] == "3"
    assert first.json()["error"] == {
        "message": "fake backend: injected failure (HTTP 503)",
        "type": "ServiceUnavailableError",
        "param": None,
        "code": 503,
    }
    assert "retry-after" not in third.headers
    assert fb.switches.fail_first_n == 0
    assert fb.counters["injected_failures"] == 2


def test_fail_first_n_is_exact_under_concurrent_requests(fb: FakeBackend) -> None:
    fb.set(fail_first_n=5, fail_status=500)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: chat(fb).status_code, range(20)))
    assert sorted(statuses) == [200] * 15 + [500] * 5


def test_probes_do_not_consume_failures_unless_the_scope_says_so(fb: FakeBackend) -> None:
    fb.set(fail_first_n=1)
    assert httpx.get(fb.url + "/models").status_code == 200
    assert httpx.get(fb.base_url + "/health").status_code == 200
    assert chat(fb).status_code == 500
    fb.set(fail_first_n=1, fault_scope="api")
    assert httpx.get(fb.url + "/models").status_code == 500
    assert httpx.get(fb.base_url + "/health").status_code == 200
    fb.set(status_override=502, fault_scope="all")
    assert httpx.get(fb.base_url + "/health").status_code == 502


def test_fail_body_is_sent_verbatim(fb: FakeBackend) -> None:
    fb.set(fail_first_n=1, fail_status=429, fail_body={"error": "slow down", "error_type": "Overloaded"})
    response = chat(fb)
    assert response.status_code == 429
    assert response.json() == {"error": "slow down", "error_type": "Overloaded"}


def test_status_override_fails_everything_until_cleared(fb: FakeBackend) -> None:
    fb.set(status_override=500)
    assert {chat(fb).status_code for _ in range(4)} == {500}
    fb.set(status_override=None)
    assert chat(fb).status_code == 200


def test_official_client_sees_the_injected_status_and_retry_after(fb: FakeBackend) -> None:
    fb.set(fail_first_n=1, fail_status=429, retry_after=1)
    with (
        openai.OpenAI(base_url=fb.url, api_key="x", max_retries=0) as client,
        pytest.raises(openai.RateLimitError) as caught,
    ):
        client.chat.completions.create(model="m", messages=USER)
    assert caught.value.response.headers["retry-after"] == "1"


def test_latency_ms_delays_the_answer_past_a_client_timeout(fb: FakeBackend) -> None:
    fb.set(latency_ms=60_000)
    with pytest.raises(httpx.ReadTimeout):
        chat(fb, timeout=0.3)
    assert httpx.get(fb.base_url + "/health", timeout=10).status_code == 200  # probes are not slowed
    fb.set(latency_ms=0)
    assert chat(fb).status_code == 200


def test_token_delay_ms_spaces_the_stream_chunks(fb: FakeBackend) -> None:
    fb.set(token_delay_ms=60_000)
    with httpx.stream("POST", fb.url + "/chat/completions", json=STREAM, timeout=1) as response:
        lines = (line for line in response.iter_lines() if line)
        assert next(lines).startswith("data: ")  # the first chunk is not delayed
        with pytest.raises(httpx.ReadTimeout):
            next(lines)


def read_events(fb: FakeBackend, body: dict[str, object]) -> tuple[list[str], Exception | None]:
    events: list[str] = []
    try:
        with httpx.stream("POST", fb.url + "/chat/completions", json=body) as response:
            assert response.status_code == 200
            events.extend(line for line in response.iter_lines() if line)
    except httpx.HTTPError as exc:
        return events, exc
    return events, None


def test_crash_after_chunks_truncates_the_stream_without_done(fb: FakeBackend) -> None:
    fb.set(crash_after_chunks=2)
    events, error = read_events(fb, STREAM)
    assert isinstance(error, httpx.RemoteProtocolError)  # the chunked body never ended
    assert len(events) == 2
    assert "[DONE]" not in "".join(events)
    assert fb.counters["crashes"] == 1
    fb.set(crash_after_chunks=None)
    events, error = read_events(fb, STREAM)
    assert error is None and events[-1] == "data: [DONE]"


def test_crash_after_zero_chunks_sends_headers_only(fb: FakeBackend) -> None:
    fb.set(crash_after_chunks=0)
    events, error = read_events(fb, STREAM)
    assert events == [] and isinstance(error, httpx.RemoteProtocolError)


def test_crash_on_a_non_streamed_answer_cuts_the_body(fb: FakeBackend) -> None:
    fb.set(crash_after_chunks=1)
    with pytest.raises(httpx.RemoteProtocolError):
        chat(fb)
    with (
        openai.OpenAI(base_url=fb.url, api_key="x", max_retries=0) as client,
        pytest.raises(openai.APIConnectionError),
    ):
        client.chat.completions.create(model="m", messages=USER)


def test_crash_before_headers_closes_without_an_answer(fb: FakeBackend) -> None:
    fb.set(crash_before_headers=True)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        chat(fb)
    assert fb.count("/v1/chat/completions") == 1  # the request was read first


def test_hang_holds_requests_until_switched_off(fb: FakeBackend) -> None:
    fb.set(hang=True)
    with pytest.raises(httpx.ReadTimeout):
        chat(fb, timeout=0.3)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(chat, fb)
        wait_until(lambda: fb.count("/v1/chat/completions") == 2, "the held request arrived")
        assert not held.done()
        fb.set(hang=False)
        assert held.result(timeout=30).status_code == 200


def test_hang_with_scope_all_hangs_the_probes_too(fb: FakeBackend) -> None:
    fb.set(hang=True, fault_scope="all")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(fb.base_url + "/health", timeout=0.3)


def test_stop_refuses_connections_and_start_reopens_the_same_port(fb: FakeBackend) -> None:
    port = fb.port
    with httpx.Client(base_url=fb.url) as http:
        assert http.get("/models").status_code == 200  # leaves a pooled keep-alive connection
        fb.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(fb.base_url + "/health")
        fb.start()
        assert fb.port == port
        assert http.get("/models").status_code == 200  # the pool notices the dead connection


def test_stop_drops_a_request_in_flight(fb: FakeBackend) -> None:
    fb.set(hang=True)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(chat, fb)
        wait_until(lambda: fb.count() == 1, "the held request arrived")
        fb.stop()
        with pytest.raises(httpx.RemoteProtocolError):
            held.result(timeout=30)


def test_loading_503_like_llama_server_then_ready() -> None:
    with FakeBackend("llamacpp", ("m",), loading=True, retry_after=2) as fb:
        health = httpx.get(fb.base_url + "/health")
        assert health.status_code == 503
        assert health.json() == {
            "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
        }
        assert health.headers["retry-after"] == "2"
        assert chat(fb).status_code == 503
        assert httpx.get(fb.url + "/models").status_code == 503
        fb.set(loading=False)
        assert httpx.get(fb.base_url + "/health").json() == {"status": "ok"}


def test_loading_ms_ends_the_loading_state_by_itself() -> None:
    with FakeBackend("llamacpp", ("m",), loading=True, loading_ms=200) as fb:
        assert httpx.get(fb.base_url + "/health").status_code == 503
        wait_until(lambda: httpx.get(fb.base_url + "/health").status_code == 200, "loaded")
        assert fb.switches.loading is False


def test_loading_refuse_closes_the_port_until_loaded(fb: FakeBackend) -> None:
    fb.set(loading="refuse")
    with pytest.raises(httpx.ConnectError):
        chat(fb)
    fb.set(loading=False)
    assert chat(fb).status_code == 200


def test_loading_refuse_with_loading_ms_reopens_by_itself() -> None:
    with FakeBackend("vllm", ("m",), loading="refuse", loading_ms=200) as fb:
        with pytest.raises(httpx.ConnectError):
            httpx.get(fb.base_url + "/health")

        def up() -> bool:
            try:
                return httpx.get(fb.base_url + "/health").status_code == 200
            except httpx.ConnectError:
                return False

        wait_until(up, "listening again")


def test_reset_restores_the_construction_switches() -> None:
    with FakeBackend("vllm", ("m",), latency_ms=0, fail_status=502) as fb:
        fb.set(status_override=500, models=["other"])
        chat(fb)
        fb.reset()
        assert fb.switches.status_override is None
        assert fb.switches.fail_status == 502
        assert fb.switches.models == ("m",)
        assert fb.requests == [] and fb.counters["requests"] == 0


def test_bad_switches_are_rejected_with_the_reason(fb: FakeBackend) -> None:
    with pytest.raises(TypeError, match="did you mean 'fail_first_n'"):
        fb.set(fail_first=1)
    with pytest.raises(ValueError, match="fail_status must be an HTTP status"):
        fb.set(fail_status=42)
    with pytest.raises(ValueError, match="kind must be one of"):
        FakeBackend("tgi")
    assert fb.switches.fail_status == 500  # nothing applied


def test_idle_timeout_closes_idle_keep_alive_connections(fb: FakeBackend) -> None:
    fb.set(idle_timeout_ms=100)
    with socket.create_connection(("127.0.0.1", fb.port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):  # returns b"" only when the server closes the idle connection
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" not in received  # it was kept alive, then closed for idling


def test_wait_for_requests_returns_once_they_arrived(fb: FakeBackend) -> None:
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: [chat(fb) for _ in range(3)])
        arrived = fb.wait_for_requests(3, "/v1/chat/completions")
    assert len(arrived) == 3
    with pytest.raises(TimeoutError, match="3 of 4 requests to /v1/chat/completions"):
        fb.wait_for_requests(4, "/v1/chat/completions", timeout=0.05)


def test_split_at_cuts_the_streamed_body_without_changing_it(fb: FakeBackend) -> None:
    from aifabric.testing._fake_cli import build_parser

    body = {"model": "m", "messages": [{"role": "user", "content": "one two"}], "stream": True}
    whole = httpx.post(fb.url + "/chat/completions", json=body).content
    fb.set(split_at=[3, 40, 41], token_delay_ms=20)
    cut = httpx.post(fb.url + "/chat/completions", json=body).content
    same = re.compile(rb'"created":\d+')  # another second, maybe
    assert same.sub(b"", cut.replace(b"fake-2", b"fake-1")) == same.sub(b"", whole)
    assert fb.switches.split_at == (3, 40, 41)
    assert vars(build_parser().parse_args(["--split-at", "40,3"]))["split_at"] == "40,3"
    assert FakeBackend(split_at="40, 3").switches.split_at == (3, 40)
    with pytest.raises(ValueError, match="split_at must be byte offsets"):
        fb.set(split_at=[0])
    with pytest.raises(ValueError, match="split_at must be byte offsets"):
        fb.set(split_at="x")
