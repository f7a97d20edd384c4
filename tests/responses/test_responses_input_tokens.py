"""`POST /v1/responses/input_tokens`: counted by the backend (natively or by its tokenizer), never guessed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from openai_schema import assert_valid

from aifabric.config.load import load_config_text
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.gateway import RunningGateway

FABRIC = """
gateway: {{host: 127.0.0.1, port: 0}}
retry: {{max_attempts: 2, try_timeout: 5s, deadline: 10s, backoff_base: 10ms, backoff_max: 50ms}}
backends:
  cloud: {{kind: openai, url: "{cloud}/v1", api_key: sk-test, apis: [responses, input_tokens]}}
  vllm: {{kind: vllm, url: "{vllm}/v1"}}
  lcp: {{kind: llama-cpp-python, url: "{lcp}/v1"}}
  llama: {{kind: llamacpp, url: "{llama}/v1"}}
  llama-older: {{kind: llamacpp, url: "{llama}/v1", apis: [responses, messages, count_tokens]}}
roles:
  llama-older: {{kind: chat, targets: [{{backend: llama-older, model: m}}]}}
  llama: {{kind: chat, targets: [{{backend: llama, model: m}}]}}
  cloud: {{kind: chat, targets: [{{backend: cloud, model: m}}]}}
  vllm: {{kind: chat, targets: [{{backend: vllm, model: m}}]}}
  uncountable: {{kind: chat, targets: [{{backend: lcp, model: m}}]}}
  mixed: {{kind: chat, targets: [{{backend: lcp, model: m}}, {{backend: vllm, model: m}}]}}
"""


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeBackend]]:
    backends = {
        "cloud": FakeBackend(kind="openai", models=("m",), api_key="sk-test").start(),
        "vllm": FakeBackend(kind="vllm", models=("m",)).start(),
        "lcp": FakeBackend(kind="llama-cpp-python", models=("m",)).start(),
        "llama": FakeBackend(kind="llamacpp", models=("m",)).start(),
    }
    yield backends
    for fb in backends.values():
        fb.stop()


@pytest.fixture
def gw(fakes: dict[str, FakeBackend]) -> Iterator[RunningGateway]:
    urls = {name: fb.base_url for name, fb in fakes.items()}
    gateway = RunningGateway(load_config_text(FABRIC.format(**urls), "fabric.yaml", environ={})).start()
    yield gateway
    gateway.stop()


def test_native_count(fakes: dict[str, FakeBackend], gw: RunningGateway) -> None:
    count = gw.openai().responses.input_tokens.count(model="cloud", input="one two three", instructions="x y")
    assert count.input_tokens == 5
    assert fakes["cloud"].requests[-1].path == "/v1/responses/input_tokens"


def test_vllm_counts_with_its_tokenizer(fakes: dict[str, FakeBackend], gw: RunningGateway) -> None:
    count = gw.openai().responses.input_tokens.count(model="vllm", input="one two three four")
    assert count.input_tokens == 4 + 4  # the fake vLLM counts 4 template tokens a message
    sent = fakes["vllm"].requests[-1]
    assert sent.path == "/tokenize"  # at vLLM's origin, beside /v1
    assert sent.json["messages"] == [{"role": "user", "content": "one two three four"}]
    reply = httpx.post(gw.url + "/v1/responses/input_tokens", json={"model": "vllm", "input": "a b"})
    assert reply.json() == {"object": "response.input_tokens", "input_tokens": 2 + 4}
    assert_valid("TokenCountsResource", reply.json())


def test_counts_continue_a_stored_conversation(fakes: dict[str, FakeBackend], gw: RunningGateway) -> None:
    client = gw.openai()
    first = client.responses.create(model="vllm", input="one two")
    count = client.responses.input_tokens.count(model="vllm", input="three", previous_response_id=first.id)
    assert count.input_tokens == 2 + 3 + 1 + 3 * 4  # "one two", "[m] one two", "three"
    assert [m["role"] for m in fakes["vllm"].requests[-1].json["messages"]] == ["user", "assistant", "user"]


def test_llama_server_counts_natively(fakes: dict[str, FakeBackend], gw: RunningGateway) -> None:
    client = gw.openai()
    count = client.responses.input_tokens.count(model="llama", input="one two three", instructions="be nice")
    assert count.input_tokens == 5
    assert fakes["llama"].requests[-1].path == "/v1/responses/input_tokens"


def test_llama_server_without_input_tokens_counts_through_count_tokens(
    fakes: dict[str, FakeBackend], gw: RunningGateway
) -> None:
    count = gw.openai().responses.input_tokens.count(
        model="llama-older", input="one two three", instructions="be nice"
    )
    assert count.input_tokens == 5
    sent = fakes["llama"].requests[-1]
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.json["system"] == "be nice"
    assert sent.json["messages"] == [{"role": "user", "content": "one two three"}]


def test_a_role_that_cannot_count_is_told_so(fakes: dict[str, FakeBackend], gw: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai().responses.input_tokens.count(model="uncountable", input="hi")
    assert caught.value.code == "input_tokens_unsupported"
    assert "llama-cpp-python" in caught.value.message
    assert fakes["lcp"].requests == []


def test_only_targets_that_count_are_asked(fakes: dict[str, FakeBackend], gw: RunningGateway) -> None:
    for _ in range(4):
        assert gw.openai().responses.input_tokens.count(model="mixed", input="a b c").input_tokens == 3 + 4
    assert fakes["lcp"].requests == []


def test_what_cannot_be_translated_is_counted_natively_or_refused(
    fakes: dict[str, FakeBackend], gw: RunningGateway
) -> None:
    client = gw.openai()
    tools = [{"type": "web_search"}]
    assert client.responses.input_tokens.count(model="cloud", input="a b", tools=tools).input_tokens == 2
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.input_tokens.count(model="vllm", input="a b", tools=tools)
    assert caught.value.param == "tools[0]"
    assert fakes["vllm"].requests == []
