"""Prompt tokens of a local llama-server's rows that carry no usage (an answer its client gave up on, a
stream cut mid-way) are counted by that server itself, with its chat template and tokenizer, off the
request path: the ledger holds the figure the server reports for the same prompt, not an estimate."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from ledger_support import Start, ledger_rows

from aifabric.config.load import load_config_text
from aifabric.local.launch import find_llama_server, process_spec
from aifabric.tenancy.tokens import ServerCounter, estimate_prompt
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.net import free_port
from aifabric.testing.wait import wait_until

HI = [{"role": "user", "content": "hi"}]
LONGER = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "count the words of this prompt please"},
]


def fabric(port: int, extra: str = "") -> str:
    # The embedded default's chat engine and model, small: one slot, one thread, a short context.
    return f"""
backends:
  local-chat:
    kind: llamacpp
    local: {{engine: llama-server, model: smollm2-135m-instruct, port: {port}, context: 1024, threads: 1}}
roles:
  chat: {{kind: chat, targets: [{{backend: local-chat, model: smollm2-135m-instruct}}]}}
{extra}"""


def ready(origin: str) -> bool:
    try:
        with urllib.request.urlopen(origin + "/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def llama_server() -> Iterator[int]:
    """A real llama-server (`make install-dev` builds it) with the bundled SmolLM2: its port."""
    assert find_llama_server() is not None, "llama-server is missing: `make install-dev` builds it"
    port = free_port()
    spec = process_spec(load_config_text(fabric(port), "fabric.yaml", environ={}).backends["local-chat"])
    proc = subprocess.Popen(list(spec.argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(
            lambda: ready(f"http://127.0.0.1:{port}") or proc.poll() is not None, "llama-server up", 60
        )
        assert proc.poll() is None, "llama-server exited while loading"
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def server_count(port: int, messages: list[dict[str, str]]) -> int:
    """The prompt tokens the server itself reports for `messages`."""
    with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0) as direct:
        answer = direct.chat.completions.create(model="m", messages=messages, max_tokens=1)  # type: ignore[arg-type]
    assert answer.usage is not None
    return answer.usage.prompt_tokens


def test_the_server_counts_a_prompt_as_it_reports_it(llama_server: int) -> None:
    counter = ServerCounter(f"http://127.0.0.1:{llama_server}")
    for messages in (HI, LONGER):
        counted = counter({"messages": messages})
        assert counted == server_count(llama_server, messages)
        assert counted != estimate_prompt({"messages": messages}), "not the ~4 characters a token estimate"


def test_a_server_that_cannot_count_is_not_asked_again_for_a_while(
    backend: Callable[..., FakeBackend],
) -> None:
    fake = backend(kind="vllm", models=("m1",))  # has /tokenize, but no /apply-template: 404
    now = [0.0]
    counter = ServerCounter(fake.url.removesuffix("/v1"), pause=30.0, clock=lambda: now[0])
    payload = {"messages": LONGER}
    assert counter(payload) == estimate_prompt(payload)
    asked = fake.count("/apply-template")
    assert asked == 1
    now[0] = 29.0
    assert counter(payload) == estimate_prompt(payload) and fake.count("/apply-template") == asked
    now[0] = 31.0
    counter(payload)
    assert fake.count("/apply-template") == asked + 1, "asked again once the pause is over"


def test_a_row_without_usage_is_counted_by_the_local_server(
    llama_server: int, start: Start, ledger_path: Path
) -> None:
    gw = start(fabric(llama_server, f"usage: {ledger_path}"))
    # The client gives up while the model generates (ignore_eos: it would write its 400 tokens): the
    # server never reported usage for it, yet its prompt was spent.
    with pytest.raises(openai.APITimeoutError):
        gw.openai(timeout=0.5).chat.completions.create(
            model="chat",
            messages=LONGER,  # type: ignore[arg-type]
            max_tokens=400,
            extra_body={"ignore_eos": True},
        )
    [row] = ledger_rows(ledger_path, 1)
    assert (row.backend, row.status, row.estimated) == ("local-chat", 499, True)
    assert row.tokens_in == server_count(llama_server, LONGER), "the server's own count of the prompt"


def test_a_server_started_with_an_api_key_counts_with_the_backends_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A llama-server run with --api-key wants the key on /apply-template and /tokenize too: the
    counter sends `backends.NAME.api_key`, straight to the server whatever HTTP(S)_PROXY says."""
    from aifabric.gateway.app import _tokenizers

    key = "llama-key-5e7a9c1b3d"
    port = free_port()
    text = fabric(port).replace(
        "threads: 1}", f'threads: 1, extra_args: ["--api-key", "{key}"]}}\n    api_key: "{key}"'
    )
    config = load_config_text(text, "fabric.yaml", environ={})
    spec = process_spec(config.backends["local-chat"])
    assert "--api-key" in spec.argv
    proc = subprocess.Popen(list(spec.argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        up = f"http://127.0.0.1:{port}"
        wait_until(lambda: ready(up) or proc.poll() is not None, "llama-server up", 60)
        assert proc.poll() is None, "llama-server exited while loading"
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0) as direct:
            answer = direct.chat.completions.create(model="m", messages=LONGER, max_tokens=1)  # type: ignore[arg-type]
        assert answer.usage is not None
        for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens: a proxied call fails
        keyless = ServerCounter(f"http://127.0.0.1:{port}")
        assert keyless({"messages": LONGER}) == estimate_prompt({"messages": LONGER}), "401 without it"
        counter = _tokenizers(config).counter("local-chat")
        assert counter is not None
        assert counter({"messages": LONGER}) == answer.usage.prompt_tokens
    finally:
        proc.terminate()
        proc.wait(10)
