"""The Responses API through the gateway with the official `openai` SDK, natively and translated."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai_schema import assert_valid
from pydantic import BaseModel, ValidationError
from responses_support import Estate

from aifabric.testing.gateway import RunningGateway

ROLES = ["native", "translated"]


def sent_path(estate: Estate, role: str) -> str:
    backend = {"native": estate.nat, "translated": estate.tr, "llama": estate.llama}[role]
    return backend.requests[-1].path


@pytest.mark.parametrize("role", ROLES)
def test_create_answers_with_text_and_usage(estate: Estate, client: openai.OpenAI, role: str) -> None:
    response = client.responses.create(model=role, input="hello there", instructions="be brief")
    assert response.output_text == "[m] hello there"
    assert response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.usage is not None
    assert response.usage.input_tokens > 0 and response.usage.output_tokens == 3
    assert response.usage.total_tokens == response.usage.input_tokens + 3
    expected = "/v1/responses" if role == "native" else "/v1/chat/completions"
    assert sent_path(estate, role) == expected
    if role == "translated":
        sent = estate.tr.requests[-1].json
        assert sent["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ]


@pytest.mark.parametrize("role", ROLES)
def test_stream_with_the_sdk(estate: Estate, client: openai.OpenAI, role: str) -> None:
    deltas = []
    with client.responses.stream(model=role, input="stream me please") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == "[m] stream me please"
    assert len(deltas) == 4  # event by event: one per token of the backend
    assert final.output_text == "[m] stream me please"
    assert final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens == 4


def test_llama_server_streams_are_translated_its_plain_answers_native(
    estate: Estate, client: openai.OpenAI
) -> None:
    with client.responses.stream(model="llama", input="hi llama") as stream:
        final = stream.get_final_response()
    assert final.output_text == "[m] hi llama"
    assert estate.llama.requests[-1].path == "/v1/chat/completions"
    assert client.responses.create(model="llama", input="hi again").output_text == "[m] hi again"
    assert estate.llama.requests[-1].path == "/v1/responses"


def test_the_fake_llama_server_native_stream_breaks_the_sdk_as_the_real_one_does(estate: Estate) -> None:
    """Why llama-server's streams are translated: its native stream, read by the SDK directly."""
    direct = openai.OpenAI(base_url=estate.llama.url, api_key="x", max_retries=0)
    with (
        pytest.raises((TypeError, KeyError, ValueError, AttributeError)),
        direct.responses.stream(model="m", input="hi") as stream,
    ):
        stream.get_final_response()
    direct.close()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("stream", [False, True])
def test_function_call_round_trip(estate: Estate, client: openai.OpenAI, role: str, stream: bool) -> None:
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
            "strict": True,
        }
    ]
    if stream:
        with client.responses.stream(model=role, input="Paris", tools=tools) as s:
            first = s.get_final_response()
    else:
        first = client.responses.create(model=role, input="Paris", tools=tools)  # type: ignore[arg-type]
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"query": "Paris"}
    if role == "translated":
        sent = estate.tr.requests[-1].json
        assert sent["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parameters": tools[0]["parameters"],
                    "strict": True,
                },
            }
        ]
    # The client runs the function and sends its output back with the whole conversation.
    second = client.responses.create(
        model=role,
        input=[
            {"role": "user", "content": "Paris"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
        ],
        tools=tools,  # type: ignore[arg-type]
    )
    assert second.output_text == "[m] tool said: sunny, 21C"
    if role == "translated":
        messages = estate.tr.requests[-1].json["messages"]
        assert messages[1]["tool_calls"][0]["id"] == call.call_id
        assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21C"}


@pytest.mark.parametrize("role", ROLES)
def test_function_call_output_continues_a_stored_response(
    estate: Estate, client: openai.OpenAI, role: str
) -> None:
    parameters = {"type": "object", "properties": {"query": {}}}
    tools = [{"type": "function", "name": "lookup", "parameters": parameters}]
    first = client.responses.create(model=role, input="find it", tools=tools)  # type: ignore[arg-type]
    call = next(item for item in first.output if item.type == "function_call")
    second = client.responses.create(
        model=role,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "found: 42"}],
    )
    assert second.output_text == "[m] tool said: found: 42"
    assert second.previous_response_id == first.id


class City(BaseModel):
    name: str
    population: int


@pytest.mark.parametrize("role", ROLES)
def test_structured_output(estate: Estate, client: openai.OpenAI, role: str) -> None:
    parsed = client.responses.parse(model=role, input="Lyon", text_format=City)
    assert parsed.output_parsed == City(name="Lyon", population=1)
    if role == "translated":
        fmt = estate.tr.requests[-1].json["response_format"]
        assert fmt["type"] == "json_schema"
        assert fmt["json_schema"]["name"] == "City"
        assert fmt["json_schema"]["schema"]["required"] == ["name", "population"]


def test_llama_server_structured_output_is_translated_its_plain_answers_native(
    estate: Estate, client: openai.OpenAI
) -> None:
    """llama-server's native /v1/responses ignores `text.format`; its chat route enforces a schema."""
    parsed = client.responses.parse(model="llama", input="Lyon", text_format=City)
    assert parsed.output_parsed == City(name="Lyon", population=1)
    sent = estate.llama.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["response_format"]["json_schema"]["name"] == "City"
    json_object = client.responses.create(model="llama", input="x", text={"format": {"type": "json_object"}})
    assert json_object.status == "completed"
    sent = estate.llama.requests[-1]
    assert (sent.path, sent.json["response_format"]) == ("/v1/chat/completions", {"type": "json_object"})
    # Plain text asks nothing of the format: native, as without `text`.
    plain = client.responses.create(model="llama", input="hi", text={"format": {"type": "text"}})
    assert plain.output_text == "[m] hi"
    assert estate.llama.requests[-1].path == "/v1/responses"


def test_the_fake_llama_server_ignores_text_format_as_the_real_one_does(estate: Estate) -> None:
    """Why structured output is translated for llama-server: its native answer, read by the SDK directly."""
    with (
        openai.OpenAI(base_url=estate.llama.url, api_key="x", max_retries=0) as direct,
        pytest.raises(ValidationError),
    ):
        direct.responses.parse(model="m", input="Lyon", text_format=City)


def test_llama_server_answers_with_max_output_tokens_are_translated_and_say_when_cut(
    estate: Estate, client: openai.OpenAI
) -> None:
    """llama-server's native /v1/responses says `completed` of an answer `max_output_tokens` cut; its
    chat route says `finish_reason: length`, which the translation turns into `incomplete`."""
    raw = client.responses.with_raw_response.create(
        model="llama", input="one two three four five", max_output_tokens=2
    )
    assert_valid("Response", raw.http_response.json())
    cut = raw.parse()
    assert (cut.status, cut.output_text) == ("incomplete", "[m] one")
    assert cut.incomplete_details is not None and cut.incomplete_details.reason == "max_output_tokens"
    sent = estate.llama.requests[-1]
    assert (sent.path, sent.json["max_tokens"]) == ("/v1/chat/completions", 2)
    whole = client.responses.create(model="llama", input="one two", max_output_tokens=64)
    assert (whole.status, whole.incomplete_details, whole.output_text) == ("completed", None, "[m] one two")
    assert estate.llama.requests[-1].path == "/v1/chat/completions"
    # No limit set, nothing to report: native, as before.
    plain = client.responses.create(model="llama", input="one two three four five")
    assert (plain.status, plain.output_text) == ("completed", "[m] one two three four five")
    assert estate.llama.requests[-1].path == "/v1/responses"


def test_a_llama_server_stream_cut_by_max_output_tokens_ends_incomplete(
    estate: Estate, client: openai.OpenAI
) -> None:
    with client.responses.create(
        model="llama", input="one two three four five", max_output_tokens=2, stream=True
    ) as stream:
        events = list(stream)
    assert events[-1].type == "response.incomplete"
    final = events[-1].response
    assert (final.status, final.output_text) == ("incomplete", "[m] one")
    assert final.incomplete_details is not None and final.incomplete_details.reason == "max_output_tokens"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "[m] one"
    sent = estate.llama.requests[-1]
    assert (sent.path, sent.json["max_tokens"], sent.json["stream"]) == ("/v1/chat/completions", 2, True)


def test_the_fake_llama_server_says_completed_when_cut_as_the_real_one_does(estate: Estate) -> None:
    """Why requests with `max_output_tokens` are translated for llama-server: its native answer, cut,
    read by the SDK directly."""
    with openai.OpenAI(base_url=estate.llama.url, api_key="x", max_retries=0) as direct:
        native = direct.responses.create(model="m", input="one two three four five", max_output_tokens=2)
    assert (native.status, native.incomplete_details, native.output_text) == ("completed", None, "[m] one")


def test_a_backend_that_ignores_the_format_is_skipped_when_translation_cannot_carry_the_rest(
    estate: Estate, client: openai.OpenAI
) -> None:
    """A built-in tool cannot be translated, and llama-server's native route would drop the schema:
    no target of the role can do both, so the client hears why, and nothing is sent."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.parse(model="llama", input="x", text_format=City, tools=[{"type": "web_search"}])
    assert caught.value.code == "unsupported_tool"
    # Likewise a token limit, whose cut llama-server's native route would call complete.
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="llama", input="x", max_output_tokens=16, tools=[{"type": "web_search"}]
        )
    assert caught.value.code == "unsupported_tool"
    assert estate.llama.requests == []


@pytest.mark.parametrize("role", ROLES)
def test_previous_response_id_carries_the_conversation(
    estate: Estate, client: openai.OpenAI, role: str
) -> None:
    first = client.responses.create(model=role, input="my name is Ann", instructions="old rules")
    second = client.responses.create(
        model=role, input="what is my name?", previous_response_id=first.id, instructions="new rules"
    )
    assert second.output_text == "[m] what is my name?"
    backend = estate.nat if role == "native" else estate.tr
    sent = backend.requests[-1].json
    if role == "translated":
        assert sent["messages"] == [
            {"role": "system", "content": "new rules"},  # instructions are not carried over
            {"role": "user", "content": "my name is Ann"},
            {"role": "assistant", "content": "[m] my name is Ann"},
            {"role": "user", "content": "what is my name?"},
        ]
    else:
        assert "previous_response_id" not in sent  # the backend gets the turns, not our id
        assert [item.get("role") for item in sent["input"]] == ["user", "assistant", "user"]
    third = client.responses.create(model=role, input="and now?", previous_response_id=second.id)
    assert third.output_text == "[m] and now?"
    assert len(backend.requests[-1].json.get("messages") or backend.requests[-1].json["input"]) >= 5
    assert client.responses.retrieve(second.id).output_text == "[m] what is my name?"


def test_unknown_previous_response_id_is_a_400(estate: Estate, gateway: RunningGateway) -> None:
    client = gateway.openai()
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="translated", input="hi", previous_response_id="resp_nope")
    assert caught.value.param == "previous_response_id"
    assert caught.value.code == "previous_response_not_found"
    assert "resp_nope" in caught.value.message
    assert estate.tr.requests == []  # nothing was sent with a silently empty history
    raw = httpx.post(
        gateway.url + "/v1/responses",
        json={"model": "translated", "input": "hi", "previous_response_id": "resp_nope"},
    )
    assert raw.status_code == 400
    assert_valid("ErrorResponse", raw.json())


@pytest.mark.parametrize("stream", [False, True])
def test_store_false_is_not_kept(client: openai.OpenAI, stream: bool) -> None:
    if stream:
        with client.responses.stream(model="translated", input="secret", store=False) as s:
            first = s.get_final_response()
    else:
        first = client.responses.create(model="translated", input="secret", store=False)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="translated", input="again", previous_response_id=first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_a_streamed_response_is_stored_before_its_last_event(client: openai.OpenAI) -> None:
    with client.responses.stream(model="native", input="one") as s:
        first = s.get_final_response()
    second = client.responses.create(model="native", input="two", previous_response_id=first.id)
    assert second.output_text == "[m] two"
    with client.responses.stream(model="translated", input="three") as s:
        third = s.get_final_response()
    assert client.responses.retrieve(third.id).output_text == "[m] three"


def test_what_cannot_be_translated_is_a_400_before_anything_is_sent(
    estate: Estate, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="translated", input="x", tools=[{"type": "web_search"}])
    assert caught.value.param == "tools[0]"
    assert caught.value.code == "unsupported_tool"
    with pytest.raises(openai.BadRequestError) as wrong_kind:
        client.responses.create(model="vectors", input="x")
    assert wrong_kind.value.param == "model"
    assert estate.tr.requests == []


def test_what_only_a_native_backend_can_do_goes_to_it(estate: Estate, client: openai.OpenAI) -> None:
    """A built-in tool has no chat-completions form, but a backend serving the Responses API itself
    decides for itself: the request goes there untouched, and never to a translated fallback."""
    reply = client.responses.create(model="native", input="news?", tools=[{"type": "web_search"}])
    assert reply.output_text == "[m] news?"
    assert estate.nat.requests[-1].json["tools"] == [{"type": "web_search"}]
    estate.flaky.set(status_override=503)
    with pytest.raises(openai.APIStatusError):
        client.responses.create(model="failover", input="news?", tools=[{"type": "web_search"}])
    assert estate.tr.requests == []  # its fallback only translates: not tried


@pytest.mark.parametrize("role", ROLES)
def test_a_translated_answer_says_so(client: openai.OpenAI, role: str) -> None:
    raw = client.responses.with_raw_response.create(model=role, input="hi")
    assert raw.headers.get("x-aifabric-translated") == ("chat" if role == "translated" else None)
    assert raw.headers["x-aifabric-role"] == role
    assert raw.parse().output_text == "[m] hi"


def test_the_fake_backend_serves_responses_where_its_kind_does(estate: Estate) -> None:
    for backend in (estate.nat, estate.llama):
        with openai.OpenAI(base_url=backend.url, api_key="x", max_retries=0) as direct:
            assert direct.responses.create(model="m", input="hi").output_text == "[m] hi"
    with (
        openai.OpenAI(base_url=estate.tr.url, api_key="x", max_retries=0) as direct,
        pytest.raises(openai.NotFoundError),
    ):
        direct.responses.create(model="m", input="hi")  # llama-cpp-python has no /v1/responses


def test_a_conversation_crosses_between_native_and_translated(estate: Estate, client: openai.OpenAI) -> None:
    """llama-server: plain answers native, streams translated; one conversation goes through both."""
    first = client.responses.create(model="llama", input="one")  # native
    with client.responses.stream(model="llama", input="two", previous_response_id=first.id) as s:
        second = s.get_final_response()  # translated: the stored native turns become chat messages
    assert second.output_text == "[m] two"
    assert estate.llama.requests[-1].json["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "[m] one"},
        {"role": "user", "content": "two"},
    ]
    third = client.responses.create(model="llama", input="three", previous_response_id=second.id)
    assert third.output_text == "[m] three"
    sent = estate.llama.requests[-1]
    assert sent.path == "/v1/responses"
    assert [item.get("role") for item in sent.json["input"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
