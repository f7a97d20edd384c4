"""Anthropic's Messages API on the embedded default's real model, with the official `anthropic` SDK.

The default's chat engine is llama-server (native /v1/messages) or llama-cpp-python (translated to
chat completions): the client cannot tell, and these tests hold for both.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
from anthropic.types import TextBlock, ToolChoiceParam, ToolParam, ToolUseBlock
from e2e_support import Up

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def client(fabric: Up) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fabric.base_url, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def test_messages_create_answers_on_the_real_model(client: anthropic.Anthropic) -> None:
    # temperature 0: Anthropic's default is 1, and a 135M model sampled at 1 does not always say Paris.
    # (This SDK's create() no longer takes `temperature`; the API still does.)
    message = client.messages.create(
        model="chat-fast", max_tokens=24, messages=QUESTION, extra_body={"temperature": 0}
    )
    assert message.type == "message"
    assert message.content and message.content[0].type == "text"
    assert "Paris" in message.content[0].text  # SmolLM2-135M-Instruct knows this one
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens > 0


def test_messages_stream_on_the_real_model(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="local/chat", max_tokens=24, messages=QUESTION) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len([p for p in pieces if p]) > 1, pieces  # streamed, not delivered whole
    assert "".join(pieces) == final.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0


def test_count_tokens_and_errors_on_the_real_default(client: anthropic.Anthropic) -> None:
    count = client.messages.count_tokens(model="chat-fast", messages=QUESTION)
    assert 3 < count.input_tokens < 100
    with pytest.raises(anthropic.BadRequestError) as wrong_kind:
        client.messages.create(model="embeddings-general", max_tokens=5, messages=QUESTION)
    assert wrong_kind.value.body["type"] == "error"  # type: ignore[index]


@pytest.mark.parametrize("tool_choice", [{"type": "auto"}, {"type": "any"}])
def test_a_tool_on_the_real_model(client: anthropic.Anthropic, tool_choice: ToolChoiceParam) -> None:
    """What a client can rely on with tools offered: a well-formed message of the SDK's block types,
    and a tool_use's input a JSON object if the model calls. SmolLM2-135M's ChatML template has no
    tool-call format, so llama-server leaves the tools out of its prompt and even `any` forces no call
    (docs/api.md): whether it calls is not asserted."""
    message = client.messages.create(
        model="chat-fast",
        max_tokens=48,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice=tool_choice,
        extra_body={"temperature": 0},
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert message.content
    for block in message.content:
        assert isinstance(block, TextBlock | ToolUseBlock), block
        if isinstance(block, ToolUseBlock):
            assert block.name == "get_weather"
            assert isinstance(block.input, dict)
    calls = [b for b in message.content if isinstance(b, ToolUseBlock)]
    assert (message.stop_reason == "tool_use") == bool(calls)
    if not calls:
        assert "".join(b.text for b in message.content if isinstance(b, TextBlock)).strip()


def test_a_tool_result_round_trip_on_the_real_model(client: anthropic.Anthropic) -> None:
    """The second half of a tool round trip, as Claude Code sends it: the assistant's `tool_use` (here
    given, as SmolLM2 cannot be made to call: docs/api.md) and the user's `tool_result`, answered."""
    message = client.messages.create(
        model="chat-fast",
        max_tokens=32,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 24 C"}],
            },
        ],
        tools=[WEATHER_TOOL],
        extra_body={"temperature": 0},
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert all(isinstance(block, TextBlock | ToolUseBlock) for block in message.content)
    assert message.content


def test_models_list_in_anthropics_shape(client: anthropic.Anthropic) -> None:
    """Claude Code and the SDK list models with `anthropic-version`: the chat roles and their aliases."""
    ids = [m.id for m in client.models.list()]
    assert "chat-fast" in ids and "local/chat" in ids
    assert "embeddings-general" not in ids  # not a model of the Messages API
    assert client.models.retrieve("local/chat").display_name == "local/chat (alias of chat-fast)"
