"""Limits on a real gateway, seen the way an application sees them: the OpenAI SDK's RateLimitError,
Retry-After and the x-ratelimit-* headers; on /v1/messages, Anthropic's SDK and anthropic-ratelimit-*."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import anthropic
import openai
import pytest
from tenancy_support import MASTER, fabric_text, keys_cli

from aifabric.config.load import load_config
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway
from aifabric.testing.wait import wait_until

HI = [{"role": "user", "content": "hi"}]


def accepted(client: openai.OpenAI) -> bool:
    try:
        client.models.list()
    except openai.AuthenticationError:
        return False
    return True


def start(tmp_path: Path, fb: FakeBackend, extra: str = "") -> tuple[RunningGateway, Path]:
    fabric_file = tmp_path / "fabric.yaml"
    fabric_file.write_text(fabric_text(fb.url, f"sqlite://{tmp_path}/keys.db", extra=extra))
    return RunningGateway(load_config(fabric_file, environ={})).start(), fabric_file


def test_over_the_key_rpm_the_sdk_gets_a_429_with_openais_headers(tmp_path: Path, fb: FakeBackend) -> None:
    gw, fabric_file = start(tmp_path, fb)
    try:
        key = keys_cli(fabric_file, "create", "--name", "app", "--rpm", "2").stdout.strip()
        client = gw.openai(key)
        wait_until(lambda: accepted(client), "the key is accepted", 5)
        first = client.chat.completions.with_raw_response.create(model="chat-fast", messages=HI)  # type: ignore[arg-type]
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        client.chat.completions.create(model="chat-fast", messages=HI)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="chat-fast", messages=HI)  # type: ignore[arg-type]
        error = refused.value
        assert error.status_code == 429 and error.code == "rate_limit_exceeded"
        headers = error.response.headers
        assert int(headers["retry-after"]) >= 1
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        assert key not in error.message
        assert fb.count("/v1/chat/completions") == 2, "the refused request never reached the backend"
        # Another key, and the master key, are not held back by this one's limit.
        assert gw.openai(MASTER).chat.completions.create(model="chat-fast", messages=HI)  # type: ignore[arg-type]
    finally:
        gw.stop()


def test_on_anthropics_route_a_limited_key_reads_anthropics_rate_limit_headers(
    tmp_path: Path, fb: FakeBackend
) -> None:
    gw, fabric_file = start(tmp_path, fb)
    try:
        key = keys_cli(fabric_file, "create", "--name", "agent", "--rpm", "2").stdout.strip()
        wait_until(lambda: accepted(gw.openai(key)), "the key is accepted", 5)
        with anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0) as client:
            first = client.messages.with_raw_response.create(model="chat-fast", max_tokens=5, messages=HI)  # type: ignore[arg-type]
            assert first.parse().content
            assert first.headers["anthropic-ratelimit-requests-limit"] == "2"
            assert first.headers["anthropic-ratelimit-requests-remaining"] == "1"
            # An RFC 3339 time, within the two minutes a per-minute window can hold a request.
            reset = datetime.fromisoformat(first.headers["anthropic-ratelimit-requests-reset"]).timestamp()
            assert time.time() - 1 <= reset <= time.time() + 121
            client.messages.create(model="chat-fast", max_tokens=5, messages=HI)  # type: ignore[arg-type]
            with pytest.raises(anthropic.RateLimitError) as refused:
                client.messages.create(model="chat-fast", max_tokens=5, messages=HI)  # type: ignore[arg-type]
        error = refused.value
        assert error.status_code == 429
        assert error.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        headers = error.response.headers
        assert int(headers["retry-after"]) >= 1
        assert headers["anthropic-ratelimit-requests-limit"] == "2"
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"]).timestamp() > time.time()
        assert headers["x-ratelimit-remaining-requests"] == "0"  # OpenAI's names stay beside them
        served = fb.count("/v1/messages") + fb.count("/v1/chat/completions")  # native or translated
        assert served == 2, "the refused request never reached the backend"
    finally:
        gw.stop()


def test_a_role_limit_holds_for_every_key_and_a_tpm_limit_for_tokens(tmp_path: Path, fb: FakeBackend) -> None:
    gw, fabric_file = start(tmp_path, fb)
    gw.stop()
    text = fabric_file.read_text().replace(
        "chat-deep: {kind: chat,", "chat-deep: {limits: {rpm: 1}, kind: chat,"
    )
    fabric_file.write_text(text)
    gw = RunningGateway(load_config(fabric_file, environ={})).start()
    try:
        master = gw.openai(MASTER)
        master.chat.completions.create(model="chat-deep", messages=HI)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError, match="role 'chat-deep'"):
            master.chat.completions.create(model="chat-deep", messages=HI)  # type: ignore[arg-type]
        master.chat.completions.create(model="chat-fast", messages=HI)  # type: ignore[arg-type]

        key = keys_cli(fabric_file, "create", "--name", "tok", "--tpm", "50").stdout.strip()
        client = gw.openai(key)
        wait_until(lambda: accepted(client), "the key is accepted", 5)
        ok = client.chat.completions.with_raw_response.create(
            model="chat-fast",
            messages=HI,  # type: ignore[arg-type]
            max_tokens=30,
        )
        assert ok.headers["x-ratelimit-limit-tokens"] == "50"
        assert ok.headers["x-ratelimit-remaining-tokens"] == str(50 - 31)  # estimated: 1 + max_tokens
        usage = ok.parse().usage
        assert usage is not None and usage.total_tokens < 31
        # The backend's own count replaced the estimate: what is left is 50 minus that.
        left = 50 - usage.total_tokens
        with pytest.raises(openai.RateLimitError) as tokens:
            client.chat.completions.create(model="chat-fast", messages=HI, max_tokens=left)  # type: ignore[arg-type]
        assert tokens.value.response.headers["x-ratelimit-remaining-tokens"] == str(left)
        assert "tokens per minute" in tokens.value.message
    finally:
        gw.stop()


def test_a_key_s_concurrency_is_given_back_when_its_stream_ends(tmp_path: Path, fb: FakeBackend) -> None:
    gw, fabric_file = start(tmp_path, fb)
    try:
        key = keys_cli(fabric_file, "create", "--name", "one", "--concurrency", "1").stdout.strip()
        client = gw.openai(key)
        wait_until(lambda: accepted(client), "the key is accepted", 5)
        for _ in range(3):  # one at a time is always allowed, streamed or not
            with client.chat.completions.create(model="chat-fast", messages=HI, stream=True) as stream:  # type: ignore[arg-type]
                assert list(stream)
            client.chat.completions.create(model="chat-fast", messages=HI)  # type: ignore[arg-type]
        fb.set(token_delay_ms=200, tokens=5)  # a stream that lasts about a second
        with client.chat.completions.create(model="chat-fast", messages=HI, stream=True) as held:  # type: ignore[arg-type]
            with pytest.raises(openai.RateLimitError) as busy:
                client.chat.completions.create(model="chat-fast", messages=HI)  # type: ignore[arg-type]
            assert busy.value.code == "concurrency_limit_exceeded"
            assert list(held)
        wait_until(
            lambda: gw.call(lambda: gw.gateway.api.admission.in_flight) == {},  # type: ignore[union-attr]
            "the stream's slot is given back",
        )
    finally:
        gw.stop()


def tpm_key(fabric_file: Path, name: str) -> str:
    """A key of 300 tokens a minute (with a concurrency limit, so its tickets can be watched)."""
    return keys_cli(
        fabric_file, "create", "--name", name, "--tpm", "300", "--concurrency", "9"
    ).stdout.strip()


def statuses(send: Callable[[], object], gw: RunningGateway, times: int = 5) -> list[int]:
    """The status of each of `times` requests sent one after the other, each waited for to its end
    (its admission ticket given back, so what it cost is counted before the next one is sent)."""
    got: list[int] = []
    for _ in range(times):
        try:
            send()
            got.append(200)
        except (openai.RateLimitError, anthropic.RateLimitError):
            got.append(429)
        wait_until(
            lambda: gw.call(lambda: gw.gateway.api.admission.in_flight) == {},  # type: ignore[union-attr]
            "the request's ticket is given back",
        )
    return got


@pytest.mark.parametrize("ledger", ["on", "off"])
def test_a_streamed_answer_counts_against_the_tpm_what_it_generated(
    tmp_path: Path, fb: FakeBackend, ledger: str
) -> None:
    # Admitted on an estimate (the prompt: no max_tokens), each answer is 200 tokens: a key of 300
    # tokens a minute gets two, streamed or not, and with or without the usage ledger.
    gw, fabric_file = start(tmp_path, fb, extra="usage: 'off'" if ledger == "off" else "")
    try:
        fb.set(tokens=200)
        key = tpm_key(fabric_file, "s")
        client = gw.openai(key)
        wait_until(lambda: accepted(client), "the key is accepted", 5)

        def stream() -> None:
            with client.chat.completions.create(model="chat-fast", messages=HI, stream=True) as chunks:  # type: ignore[arg-type]
                assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 200

        assert statuses(stream, gw) == [200, 200, 429, 429, 429]
        key2 = tpm_key(fabric_file, "n")
        other = gw.openai(key2)
        wait_until(lambda: accepted(other), "the key is accepted", 5)
        assert statuses(lambda: other.chat.completions.create(model="chat-fast", messages=HI), gw) == [  # type: ignore[arg-type]
            200,
            200,
            429,
            429,
            429,
        ]
    finally:
        gw.stop()


def test_an_anthropic_answer_settles_the_tpm_with_input_plus_output(tmp_path: Path, fb: FakeBackend) -> None:
    # max_tokens 140 is counted at admission (141 with the prompt); the answers are 10 tokens, and
    # Anthropic's usage (input_tokens + output_tokens, no total) replaces the estimate: a key of 300
    # tokens a minute sends five, streamed or not (on the estimate alone it would get two).
    gw, fabric_file = start(tmp_path, fb)
    try:
        fb.set(tokens=10)
        key = tpm_key(fabric_file, "a")
        wait_until(lambda: accepted(gw.openai(key)), "the key is accepted", 5)
        with anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0) as client:

            def create() -> None:
                assert client.messages.create(model="chat-fast", max_tokens=140, messages=HI).content  # type: ignore[arg-type]

            assert statuses(create, gw) == [200] * 5

            def stream() -> None:
                with client.messages.stream(model="chat-fast", max_tokens=140, messages=HI) as events:  # type: ignore[arg-type]
                    assert events.get_final_message().usage.output_tokens == 10

            assert statuses(stream, gw) == [200] * 5
    finally:
        gw.stop()
