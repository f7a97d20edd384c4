"""Responses requests under failure: the forwarder's retries and fallbacks apply, and failover may cross
from a native target to a translated one; a cut stream ends as the Responses API ends a failed one."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest
from openai_schema import assert_valid
from responses_support import FABRIC, Estate, events_of

from aifabric.config.load import load_config_text
from aifabric.testing.gateway import RunningGateway


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", ["status_override", "crash_before_headers"])
def test_failover_from_native_to_translated(
    estate: Estate, gateway: RunningGateway, stream: bool, fault: str
) -> None:
    switches = {"status_override": 503} if fault == "status_override" else {"crash_before_headers": True}
    estate.flaky.set(**switches)
    reply = httpx.post(
        gateway.url + "/v1/responses",
        json={"model": "failover", "input": "still there?", "stream": stream},
        timeout=10,
    )
    assert reply.status_code == 200
    assert reply.headers["x-aifabric-backend"] == "tr"
    assert estate.flaky.requests and estate.flaky.requests[0].path == "/v1/responses"
    assert [r.path for r in estate.tr.requests] == ["/v1/chat/completions"]
    if stream:
        events = events_of(reply.text)
        assert events[-1]["type"] == "response.completed"
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == "[m] still there?"
    else:
        assert reply.json()["output"][0]["content"][0]["text"] == "[m] still there?"


def test_failover_with_the_sdk_from_a_hung_native_target(estate: Estate, gateway: RunningGateway) -> None:
    estate.flaky.set(hang=True)
    client = gateway.openai()
    with client.responses.stream(model="failover", input="anyone?") as stream:
        final = stream.get_final_response()
    assert final.output_text == "[m] anyone?"


@pytest.mark.parametrize("role", ["native", "translated"])
def test_a_retried_target_answers(estate: Estate, client: openai.OpenAI, role: str) -> None:
    backend = estate.nat if role == "native" else estate.tr
    backend.set(fail_first_n=1, fail_status=503)
    assert client.responses.create(model=role, input="again").output_text == "[m] again"
    assert backend.counters["injected_failures"] == 1


@pytest.mark.parametrize("role", ["native", "translated"])
def test_the_backends_own_400_reaches_the_client_unretried(
    estate: Estate, client: openai.OpenAI, role: str
) -> None:
    backend = estate.nat if role == "native" else estate.tr
    backend.set(fail_first_n=1, fail_status=400)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=role, input="bad")
    assert "injected failure" in caught.value.message
    assert len(backend.requests) == 1


@pytest.mark.parametrize("role", ["native", "translated"])
def test_every_attempt_failing_is_an_openai_shaped_error(
    estate: Estate, gateway: RunningGateway, role: str
) -> None:
    backend = estate.nat if role == "native" else estate.tr
    backend.set(status_override=500)
    reply = httpx.post(gateway.url + "/v1/responses", json={"model": role, "input": "x"}, timeout=10)
    assert reply.status_code >= 500
    assert_valid("ErrorResponse", reply.json())


@pytest.mark.parametrize("role", ["native", "translated"])
def test_a_stream_cut_mid_way_ends_with_error_and_response_failed(
    estate: Estate, gateway: RunningGateway, role: str
) -> None:
    backend = estate.nat if role == "native" else estate.tr
    backend.set(crash_after_chunks=4, tokens=20)
    reply = httpx.post(
        gateway.url + "/v1/responses", json={"model": role, "input": "long one", "stream": True}, timeout=10
    )
    events = events_of(reply.text)
    for event in events:
        assert_valid("ResponseStreamEvent", event)
    kinds = [e["type"] for e in events]
    assert "error" in kinds
    assert "response.completed" not in kinds
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    if role == "translated":
        assert kinds[-2:] == ["error", "response.failed"]
        assert events[-1]["response"]["status"] == "failed"
    # A failed response is not stored: continuing from it is a clear 400, not half a history.
    created = events[0]["response"]["id"]
    again = httpx.post(
        gateway.url + "/v1/responses",
        json={"model": role, "input": "x", "previous_response_id": created},
        timeout=10,
    )
    assert again.status_code == 400


@pytest.mark.parametrize("role", ["native", "translated"])
def test_sdk_sees_a_cut_stream_fail(estate: Estate, client: openai.OpenAI, role: str) -> None:
    backend = estate.nat if role == "native" else estate.tr
    backend.set(crash_after_chunks=5, tokens=20)
    with client.responses.stream(model=role, input="x") as stream:
        kinds = [event.type for event in stream]
        assert "error" in kinds
        assert "response.completed" not in kinds
        with pytest.raises(RuntimeError):  # the SDK's word for "no response.completed came"
            stream.get_final_response()
    if role == "translated":
        assert kinds[-1] == "response.failed"


def test_translated_stream_is_not_buffered(estate: Estate, gateway: RunningGateway) -> None:
    """The first text delta reaches the client while the backend is still generating the rest."""
    estate.tr.set(tokens=6, token_delay_ms=1000)
    first_delta = threading.Event()
    with httpx.stream(
        "POST",
        gateway.url + "/v1/responses",
        json={"model": "translated", "input": "slow", "stream": True},
        timeout=30,
    ) as reply:
        for line in reply.iter_lines():
            if '"response.output_text.delta"' in line:
                first_delta.set()
                break
        served = estate.tr.counters["inflight"]
    assert first_delta.is_set()
    assert served == 1, "the backend was still streaming when the first delta arrived"


@pytest.mark.parametrize("role", ["native", "translated"])
def test_a_loading_backend_holds_the_request_until_it_is_ready(
    estate: Estate, client: openai.OpenAI, role: str
) -> None:
    backend = estate.nat if role == "native" else estate.tr
    backend.set(loading=True, loading_ms=600)  # llama-server style 503 "Loading model" for a while
    assert client.responses.create(model=role, input="ready?").output_text == "[m] ready?"
    assert backend.counters["injected_failures"] >= 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_native_target_is_ejected_and_then_left_alone(
    estate: Estate, gateway: RunningGateway, stream: bool
) -> None:
    estate.flaky.set(status_override=500)
    client = gateway.openai()
    for _ in range(3):  # health.consecutive_failures (3) failed attempts, each served by the fallback
        if stream:
            with client.responses.stream(model="failover", input="hi") as s:
                assert s.get_final_response().output_text == "[m] hi"
        else:
            assert client.responses.create(model="failover", input="hi").output_text == "[m] hi"
    status = httpx.get(gateway.url + "/status", timeout=10).json()
    assert status["roles"]["failover"]["targets"][0]["outlier"] == "ejected"
    tried = estate.flaky.count("/v1/responses")
    for _ in range(3):
        raw = client.responses.with_raw_response.create(model="failover", input="hi")
        assert (raw.headers["x-aifabric-backend"], raw.headers["x-aifabric-attempts"]) == ("tr", "1")
    assert estate.flaky.count("/v1/responses") == tried


@pytest.mark.parametrize("stream", [False, True])
def test_the_deadline_is_a_504_in_openais_shape(estate: Estate, stream: bool) -> None:
    estate.nat.set(hang=True)
    urls = {
        name: fb.base_url for name, fb in zip(("nat", "tr", "llama", "flaky"), estate.backends, strict=True)
    }
    text = FABRIC.replace("deadline: 10s", "deadline: 400ms").format(state="memory", **urls)
    gw = RunningGateway(load_config_text(text, "fabric.yaml", environ={})).start()
    try:
        reply = httpx.post(
            gw.url + "/v1/responses", json={"model": "native", "input": "x", "stream": stream}, timeout=30
        )
    finally:
        estate.nat.set(hang=False)
        gw.stop()
    assert reply.status_code == 504
    assert_valid("ErrorResponse", reply.json())
    assert reply.json()["error"]["code"] == "upstream_timeout"
    assert "did not answer in time" in reply.json()["error"]["message"]
