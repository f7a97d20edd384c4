"""OpenAI's Responses API served natively by the fake backend (as vLLM, llama-server, Ollama and OpenAI
itself do), and structured output (a JSON schema asked for) on every route.

The model, deterministic so that a test can predict it:
    tools offered (tool_choice not "none") and the last turn is the user's
        -> it calls the forced tool, else the first one: `get_weather({"query": "<last user text>"})`
           (as the chat route does, `_fake_dialects`)
    the last turn is a tool's output  -> the reply echoes it: "[<served id>] tool said: <tool output>"
    a JSON schema asked for (`response_format` / `text.format`) -> a JSON object with every required
           property filled (strings with the user's text, numbers 1, booleans true, ...)
    otherwise the usual echo "[<served id>] <last user text>"

Native `/v1/responses` answers in OpenAI's shape, streamed with OpenAI's event sequence; for kind
`llamacpp` the text deltas lack `content_index`, as llama-server's do (the official SDK's
`responses.stream()` fails on them, which is why the gateway translates those streams),
`text.format` is ignored, and an answer cut by `max_output_tokens` says `status: completed` (ending
with `response.completed`), as llama-server's do there (the gateway translates such requests).
Shares no code with the gateway's own translation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aifabric.testing._fake_shapes import last_user_text, reply_tokens, sse, word_count

__all__ = [
    "Turn",
    "chat_schema",
    "decide",
    "input_tokens_body",
    "messages_of_responses_input",
    "responses_body",
    "responses_events",
    "structured",
]


@dataclass(frozen=True, slots=True)
class Turn:
    """What the model answers: text, or one tool call."""

    text: str | None
    call_name: str | None = None
    call_arguments: str = ""


def _schema_value(schema: Any, text: str) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {name: _schema_value(props.get(name), text) for name in required}
    if kind == "array":
        return [_schema_value(schema.get("items"), text)]
    return {"integer": 1, "number": 1, "boolean": True, "null": None}.get(str(kind), text)


def structured(schema: Any, text: str) -> str:
    """The fake model's answer to a JSON schema: every required property filled."""
    return json.dumps(_schema_value(schema, text))


def _last_tool_output(messages: list[Any]) -> str | None:
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "tool":
        content = last.get("content")
        return content if isinstance(content, str) else json.dumps(content)
    return None


def decide(
    served: str, messages: list[Any], tools: Any, tool_choice: Any, schema: Any, reply: str | None
) -> Turn:
    """The fake model's turn over chat-completions `messages` (tools in chat's nested shape)."""
    user = last_user_text(messages)
    tool_output = _last_tool_output(messages)
    if tool_output is not None:
        return Turn(reply if reply is not None else f"[{served}] tool said: {tool_output}")
    functions = [
        t["function"] for t in tools or () if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    if functions and tool_choice != "none":
        chosen = functions[0]
        if isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
            forced = tool_choice["function"].get("name")
            chosen = next((f for f in functions if f.get("name") == forced), chosen)
        return Turn(None, str(chosen.get("name")), json.dumps({"query": user}))
    if isinstance(schema, dict):
        return Turn(structured(schema, user))
    return Turn(reply if reply is not None else f"[{served}] {user}")


def chat_schema(body: dict[str, Any]) -> Any:
    fmt = body.get("response_format")
    # Whatever a client sends, well formed or not (the fuzz tests send both): the fake backend answers,
    # it does not crash on a `json_schema` that is not an object.
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    return spec.get("schema") if isinstance(spec, dict) else None


# ------------------------------------------------------------------------------ native /v1/responses


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def messages_of_responses_input(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The fake's own reading of a Responses request, as chat-like turns; None when malformed."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        return None
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    for item in items:
        if not isinstance(item, dict):
            return None
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": _text_of(item.get("content"))})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": _text_of(item.get("output"))})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": ""})
    return messages


def _responses_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {k: v for k, v in t.items() if k != "type"}}
        for t in body.get("tools") or ()
        if isinstance(t, dict) and t.get("type") == "function"
    ]


def _responses_choice(body: dict[str, Any]) -> Any:
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _responses_schema(body: dict[str, Any]) -> Any:
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    return fmt.get("schema") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None


def native_turn(
    body: dict[str, Any],
    served: str,
    reply: str | None,
    messages: list[dict[str, Any]],
    *,
    text_format: bool = True,
) -> Turn:
    """The model's turn on the native route; `text_format=False` ignores `text.format` (llama-server)."""
    schema = _responses_schema(body) if text_format else None
    return decide(served, messages, _responses_tools(body), _responses_choice(body), schema, reply)


def _output(rid: str, turn: Turn, parts: list[str], finish: str) -> list[dict[str, Any]]:
    if turn.text is None:
        return [
            {
                "id": f"fc_{rid}",
                "type": "function_call",
                "call_id": f"call_{rid}",
                "name": turn.call_name,
                "arguments": turn.call_arguments,
                "status": "completed",
            }
        ]
    text = {"type": "output_text", "text": "".join(parts), "annotations": [], "logprobs": []}
    status = "incomplete" if finish == "length" else "completed"
    return [{"id": f"msg_{rid}", "type": "message", "role": "assistant", "status": status, "content": [text]}]


def _response(body: dict[str, Any], rid: str, created: int, model: str, status: str) -> dict[str, Any]:
    return {
        "id": f"resp_{rid}",
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "metadata": body.get("metadata") or {},
    }


def _finished(
    body: dict[str, Any],
    rid: str,
    created: int,
    model: str,
    turn: Turn,
    parts: list[str],
    finish: str,
    prompt: int,
) -> dict[str, Any]:
    response = _response(body, rid, created, model, "incomplete" if finish == "length" else "completed")
    if finish == "length":
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    response["output"] = _output(rid, turn, parts, finish)
    out = len(parts) if turn.text is not None else word_count(turn.call_arguments)
    response["usage"] = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + out,
    }
    return response


def turn_parts(turn: Turn, tokens: int | None, max_tokens: Any) -> tuple[list[str], str]:
    if turn.text is None:
        return [], "tool_calls"
    return reply_tokens(turn.text, tokens, max_tokens)


def responses_body(
    body: dict[str, Any],
    rid: str,
    created: int,
    model: str,
    turn: Turn,
    parts: list[str],
    finish: str,
    prompt: int,
) -> bytes:
    return json.dumps(_finished(body, rid, created, model, turn, parts, finish, prompt)).encode()


def responses_events(
    body: dict[str, Any],
    rid: str,
    created: int,
    model: str,
    turn: Turn,
    parts: list[str],
    finish: str,
    prompt: int,
    *,
    content_index: bool = True,
) -> list[bytes]:
    """OpenAI's event sequence for one output item; `content_index=False` imitates llama-server."""
    seq = iter(range(1_000_000))
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        payload = {"type": kind, **fields, "sequence_number": next(seq)}
        events.append(f"event: {kind}\n".encode() + sse(payload))

    emit("response.created", response=_response(body, rid, created, model, "in_progress"))
    emit("response.in_progress", response=_response(body, rid, created, model, "in_progress"))
    final = _finished(body, rid, created, model, turn, parts, finish, prompt)
    item = final["output"][0]
    if turn.text is None:
        emit(
            "response.output_item.added",
            output_index=0,
            item={**item, "arguments": "", "status": "in_progress"},
        )
        emit(
            "response.function_call_arguments.delta",
            item_id=item["id"],
            output_index=0,
            delta=item["arguments"],
        )
        emit(
            "response.function_call_arguments.done",
            item_id=item["id"],
            name=item["name"],
            output_index=0,
            arguments=item["arguments"],
        )
    else:
        where: dict[str, Any] = {"item_id": item["id"], "output_index": 0}
        if content_index:
            where["content_index"] = 0
        emit(
            "response.output_item.added",
            output_index=0,
            item={**item, "content": [], "status": "in_progress"},
        )
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        emit("response.content_part.added", item_id=item["id"], output_index=0, content_index=0, part=empty)
        for part in parts:
            emit("response.output_text.delta", **where, delta=part, logprobs=[])
        emit("response.output_text.done", **where, text="".join(parts), logprobs=[])
        emit(
            "response.content_part.done",
            item_id=item["id"],
            output_index=0,
            content_index=0,
            part=item["content"][0],
        )
    emit("response.output_item.done", output_index=0, item=item)
    emit("response.completed" if finish != "length" else "response.incomplete", response=final)
    return events


def input_tokens_body(messages: list[dict[str, Any]]) -> bytes:
    count = sum(word_count(_text_of(m.get("content"))) for m in messages)
    return json.dumps({"object": "response.input_tokens", "input_tokens": count}).encode()
