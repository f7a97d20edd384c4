"""OpenAI's Responses API on the embedded default's real model, with the official `openai` SDK.

The default's chat engine is llama-server (native /v1/responses; its streams translated) or
llama-cpp-python (translated to chat completions): the client cannot tell, and these tests hold for
both. Only `input_tokens` differs: llama-server counts, llama-cpp-python cannot (a clear 400).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from e2e_support import Up
from openai.types.responses import FunctionToolParam, ResponseFunctionToolCall, ResponseOutputMessage
from pydantic import BaseModel, ConfigDict, Field

pytestmark = pytest.mark.e2e

QUESTION = "What is the capital of France?"

# Small on purpose: a grammar holds the model to the schema, and short strings let a 135M model close
# the object well within max_output_tokens (a cut would leave the JSON unfinished).
CAPITAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "country": {"type": "string", "maxLength": 12},
        "city": {"type": "string", "maxLength": 12},
    },
    "required": ["country", "city"],
    "additionalProperties": False,
}

WEATHER_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


class Capital(BaseModel):
    model_config = ConfigDict(extra="forbid")
    country: str = Field(max_length=12)
    city: str = Field(max_length=12)


@pytest.fixture(scope="module")
def client(fabric: Up) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fabric.base_url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def chat_backend(fabric: Up) -> tuple[str, str]:
    """(name, kind) of the backend behind chat-fast."""
    status = httpx.get(fabric.base_url + "/status", timeout=10).json()
    backend = status["roles"]["chat-fast"]["targets"][0]["backend"]
    return backend, str(status["backends"][backend]["kind"])


def chat_kind(fabric: Up) -> str:
    return chat_backend(fabric)[1]


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


def test_an_answer_cut_by_max_output_tokens_says_incomplete(client: openai.OpenAI, fabric: Up) -> None:
    """What an agent SDK checks for a cut answer. llama-server's own /v1/responses says `completed` of
    it: the day it says `incomplete`, the last assertion fails, and MAX_OUTPUT_TOKENS can leave
    `LlamaServerAdapter.unhonoured`."""
    story = "Write a long story about a dragon who learns to fly."
    cut = client.responses.create(model="chat-fast", input=story, max_output_tokens=8, temperature=0)
    assert cut.status == "incomplete", (cut.status, cut.output_text)
    assert cut.incomplete_details is not None and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text.strip()
    backend, kind = chat_backend(fabric)
    if kind != "llamacpp":  # llama-cpp-python has no /v1/responses: always translated
        return
    port = fabric.backend_ports()[backend]
    with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0) as direct:
        native = direct.responses.create(model="chat-fast", input=story, max_output_tokens=8, temperature=0)
    assert native.usage is not None and native.usage.output_tokens == 8  # cut, as the gateway's was
    assert native.status == "completed"


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


def test_parse_with_a_pydantic_model_on_the_real_model(client: openai.OpenAI, fabric: Up) -> None:
    """`responses.parse(text_format=...)`: the answer is JSON of the model's schema, parsed by the SDK.
    (llama-server's own /v1/responses would ignore the format: the gateway translates it there.)"""
    raw = client.responses.with_raw_response.parse(
        model="chat-fast", input=QUESTION, text_format=Capital, max_output_tokens=120, temperature=0
    )
    parsed = raw.parse()
    translated = chat_kind(fabric) == "llama-cpp-python" or raw.headers.get("x-aifabric-translated") == "chat"
    assert translated, "structured output goes through chat completions, where the engine enforces it"
    assert parsed.status == "completed", parsed.incomplete_details
    assert isinstance(parsed.output_parsed, Capital)  # the SDK validated it against the model
    jsonschema.validate(json.loads(parsed.output_text), Capital.model_json_schema())


def test_json_schema_in_text_format_on_the_real_model(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="chat-fast",
        input=QUESTION,
        text={"format": {"type": "json_schema", "name": "capital", "schema": CAPITAL_SCHEMA, "strict": True}},
        max_output_tokens=120,
        temperature=0,
    )
    assert response.status == "completed", response.incomplete_details
    jsonschema.validate(json.loads(response.output_text), CAPITAL_SCHEMA)
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"


@pytest.mark.parametrize("tool_choice", ["auto", "required"])
def test_a_function_tool_on_the_real_model(
    client: openai.OpenAI, tool_choice: Literal["auto", "required"]
) -> None:
    """What a client can rely on with tools offered: a well-formed Response whose items are the SDK's
    types, and arguments that parse as JSON if the model calls. SmolLM2-135M's ChatML template has no
    tool-call format, so llama-server leaves the tools out of its prompt and even `required` forces no
    call (docs/api.md): whether it calls is not asserted."""
    response = client.responses.create(
        model="chat-fast",
        input="What is the weather in Paris?",
        tools=[WEATHER_TOOL],
        tool_choice=tool_choice,
        max_output_tokens=48,
        temperature=0,
    )
    assert response.status in ("completed", "incomplete")
    assert response.output
    for item in response.output:
        assert isinstance(item, ResponseOutputMessage | ResponseFunctionToolCall), item
        if isinstance(item, ResponseFunctionToolCall):
            assert item.name == "get_weather"
            assert isinstance(json.loads(item.arguments), dict)
    if not any(isinstance(item, ResponseFunctionToolCall) for item in response.output):
        assert response.output_text.strip()


def test_a_function_call_output_round_trip_on_the_real_model(client: openai.OpenAI) -> None:
    """The second half of a tool round trip, as an agent sends it: the call the model made (here
    given, as SmolLM2 cannot be made to call: docs/api.md) and the tool's output, answered in text."""
    response = client.responses.create(
        model="chat-fast",
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 24 C"},
        ],
        tools=[WEATHER_TOOL],
        max_output_tokens=32,
        temperature=0,
    )
    assert response.status in ("completed", "incomplete")
    assert all(isinstance(item, ResponseOutputMessage | ResponseFunctionToolCall) for item in response.output)
    assert response.output_text.strip()
    assert response.usage is not None and response.usage.input_tokens > 10  # the turns reached the prompt


def test_why_structured_output_is_translated_for_llama_server(fabric: Up) -> None:
    """llama-server's own /v1/responses takes `text.format` and ignores it: the answer is free text.
    The day it honours the schema, this fails, and `LlamaServerAdapter.unhonoured` can go."""
    status = httpx.get(fabric.base_url + "/status", timeout=10).json()
    backend = status["roles"]["chat-fast"]["targets"][0]["backend"]
    # The embedded default's chat engine is llama-server (llama-cpp-python has no /v1/responses).
    assert status["backends"][backend]["kind"] == "llamacpp", status["backends"][backend]
    port = fabric.backend_ports()[backend]
    fmt = {"type": "json_schema", "name": "capital", "schema": CAPITAL_SCHEMA, "strict": True}
    with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0) as direct:
        native = direct.responses.create(
            model="chat-fast", input=QUESTION, text={"format": fmt}, max_output_tokens=24, temperature=0
        )
    with pytest.raises(ValueError):  # json.JSONDecodeError: not JSON at all
        json.loads(native.output_text)
