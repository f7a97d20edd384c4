"""The fake backend's other faces: switches over HTTP, the CLI process, and running on the caller's loop."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.wait import wait_until

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CHAT: dict[str, object] = {"model": "a", "messages": MESSAGES}


def listening(url: str) -> bool:
    try:
        httpx.get(url)
    except httpx.ConnectError:
        return False
    return True


@pytest.fixture
def fb() -> Iterator[FakeBackend]:
    with FakeBackend("vllm", ("a",), api_key="sekrit") as backend:
        yield backend


def test_http_config_flips_switches_for_another_process(fb: FakeBackend) -> None:
    answer = httpx.post(fb.base_url + "/_fake/config", json={"fail_first_n": 1, "fail_status": 502})
    assert answer.status_code == 200
    assert answer.json()["fail_first_n"] == 1
    auth = {"authorization": "Bearer sekrit"}
    assert httpx.post(fb.url + "/chat/completions", json=CHAT, headers=auth).status_code == 502
    assert httpx.post(fb.url + "/chat/completions", json=CHAT, headers=auth).status_code == 200
    assert fb.switches.fail_first_n == 0


def test_http_config_shows_switches_with_the_key_redacted(fb: FakeBackend) -> None:
    shown = httpx.get(fb.base_url + "/_fake/config").json()
    assert shown["api_key"] == "***"
    assert shown["models"] == ["a"]
    assert shown["kind"] == "vllm"


def test_http_config_rejects_unknown_and_bad_switches(fb: FakeBackend) -> None:
    unknown = httpx.post(fb.base_url + "/_fake/config", json={"latency": 5})
    assert unknown.status_code == 400
    assert "did you mean 'latency_ms'" in unknown.json()["error"]
    bad = httpx.post(fb.base_url + "/_fake/config", json={"loading": "soon"})
    assert bad.status_code == 400
    assert "loading must be" in bad.json()["error"]
    assert fb.switches.loading is False


def test_http_requests_lists_what_was_received_and_reset_clears_it(fb: FakeBackend) -> None:
    httpx.post(fb.url + "/chat/completions", json=CHAT, headers={"authorization": "Bearer sekrit"})
    httpx.post(fb.base_url + "/_fake/config", json={"status_override": 500})
    listed = httpx.get(fb.base_url + "/_fake/requests").json()
    assert [(r["method"], r["path"]) for r in listed["requests"]] == [("POST", "/v1/chat/completions")]
    assert listed["requests"][0]["json"] == CHAT
    assert listed["counters"]["requests"] == 1
    assert httpx.post(fb.base_url + "/_fake/reset").status_code == 200
    assert fb.switches.status_override is None
    assert httpx.get(fb.base_url + "/_fake/requests").json()["requests"] == []


def test_http_refuse_answers_first_then_closes_then_reopens(fb: FakeBackend) -> None:
    answer = httpx.post(fb.base_url + "/_fake/config", json={"loading": "refuse", "loading_ms": 300})
    assert answer.status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(fb.base_url + "/health")
    wait_until(lambda: listening(fb.base_url + "/health"), "listening again after loading_ms")


# ----------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli() -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        command = [sys.executable, "-m", "aifabric.testing.fake_backend", *args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("ready http://127.0.0.1:"), (line, process.stderr and process.stderr.read())
        return process, line.removeprefix("ready ")

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.parametrize(("sig", "loop"), [(signal.SIGTERM, ()), (signal.SIGINT, ("--uvloop",))])
def test_cli_serves_with_switches_and_exits_cleanly_on_signal(
    cli: Callable[..., tuple[subprocess.Popen[str], str]], sig: signal.Signals, loop: tuple[str, ...]
) -> None:
    process, base = cli("--kind", "llamacpp", "--model", "a", "--model", "b", "--fail-first-n", "1", *loop)
    with openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="a", messages=MESSAGES)
        reply = client.chat.completions.create(model="b", messages=MESSAGES)
        assert reply.choices[0].message.content == "[b] hi"
        assert [m.id for m in client.models.list()] == ["a", "b"]
    assert httpx.get(base + "/health").json() == {"status": "ok"}
    process.send_signal(sig)
    assert process.wait(timeout=30) == 0


def test_cli_on_a_fixed_port_with_loading_and_http_control(
    cli: Callable[..., tuple[subprocess.Popen[str], str]],
) -> None:
    with FakeBackend() as probe:  # borrow a free port, then give it back
        port = probe.port
    process, base = cli("--port", str(port), "--kind", "llamacpp", "--loading", "true", "--no-hang")
    assert base == f"http://127.0.0.1:{port}"
    assert httpx.get(base + "/health").status_code == 503
    httpx.post(base + "/_fake/config", json={"loading": False})
    assert httpx.get(base + "/health").status_code == 200
    process.terminate()
    assert process.wait(timeout=30) == 0


def test_cli_rejects_a_bad_switch_value() -> None:
    command = [sys.executable, "-m", "aifabric.testing.fake_backend", "--fail-status", "42"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "fail_status must be an HTTP status" in done.stderr


# ------------------------------------------------------------------------------------- on your loop


def test_runs_inside_a_running_event_loop() -> None:
    async def scenario() -> None:
        async with FakeBackend("tei", ("bge",)) as fb:
            client = openai.AsyncOpenAI(base_url=fb.url, api_key="x", max_retries=0)
            embedded = await client.embeddings.create(model="bge", input="hello")
            assert len(embedded.data[0].embedding) == 8
            async with httpx.AsyncClient() as http:
                await fb.aset(loading="refuse")
                with pytest.raises(httpx.ConnectError):
                    await http.get(fb.base_url + "/health")
                await fb.aset(loading=False)
                assert (await http.get(fb.base_url + "/health")).status_code == 200
            await client.close()

    asyncio.run(scenario())


def test_public_names_are_pinned() -> None:
    # Other suites import these; changing them is an API change, made on purpose.
    from aifabric.testing import fake_backend

    assert sorted(fake_backend.__all__) == ["FakeBackend", "KINDS", "RecordedRequest", "Switches"]
    assert fake_backend.KINDS == ("vllm", "llamacpp", "llama-cpp-python", "ollama", "tei", "openai")
