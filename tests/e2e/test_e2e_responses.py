"""OpenAI's Responses API on the embedded default's real model, with the official `openai` SDK.

The default's chat engine is llama-server (native /v1/responses; its streams translated) or
llama-cpp-python (translated to chat completions): the client cannot tell, and these tests hold for
both. Only `input_tokens` differs: llama-server counts, llama-cpp-python cannot (a clear 400).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from e2e_support import Up

pytestmark = pytest.mark.e2e

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def client(fabric: Up) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fabric.base_url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def chat_kind(fabric: Up) -> str:
    status = httpx.get(fabric.base_url + "/status", timeout=10).json()
    backend = status["roles"]["chat-fast"]["targets"][0]["backend"]
    return str(status["backends"][backend]["kind"])


def test_create_and_continue_on_the_real_model(client: openai.OpenAI) -> None:
    first = client.responses.create(model="chat-fast", input=QUESTION, max_output_tokens=24, temperature=0)
    assert "Paris" in first.output_text  # SmolLM2-135M-Instruct knows this one
    assert first.status in ("completed", "incomplete")
    assert first.usage is not None and first.usage.output_tokens > 0
    second = client.responses.create(
        model="local/chat", input="Say it again.", previous_response_id=first.id, max_output_tokens=24
    )
    assert second.output_text.strip()
    assert second.previous_response_id == first.id
    assert client.responses.retrieve(second.id).output_text == second.output_text


def test_stream_on_the_real_model(client: openai.OpenAI) -> None:
    deltas = []
    final = None
    with client.responses.stream(model="chat-fast", input=QUESTION, max_output_tokens=24) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            # A cut by max_output_tokens ends with response.incomplete (the SDK's get_final_response
            # wants response.completed only).
            if event.type in ("response.completed", "response.incomplete"):
                final = event.response
    assert final is not None
    assert len([d for d in deltas if d]) > 1, deltas  # streamed, not delivered whole
    assert "".join(deltas) == final.output_text
    assert final.usage is not None and final.usage.output_tokens > 0


def test_input_tokens_and_errors_on_the_real_default(client: openai.OpenAI, fabric: Up) -> None:
    if chat_kind(fabric) == "llamacpp":
        count = client.responses.input_tokens.count(model="chat-fast", input=QUESTION)
        assert 3 < count.input_tokens < 100
    else:
        with pytest.raises(openai.BadRequestError) as cannot:
            client.responses.input_tokens.count(model="chat-fast", input=QUESTION)
        assert cannot.value.code == "input_tokens_unsupported"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.create(model="chat-fast", input="hi", previous_response_id="resp_unknown")
    assert unknown.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as wrong_kind:
        client.responses.create(model="embeddings-general", input="hi")
    assert wrong_kind.value.param == "model"
