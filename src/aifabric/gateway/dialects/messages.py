"""Anthropic's Messages API (`POST /v1/messages`) over chat completions: pure request and answer mappings.

    request   system (string or text blocks) -> a system message; text and image blocks -> content
              parts; an assistant's tool_use blocks -> tool_calls; a user's tool_result blocks -> tool
              messages (before the rest of that turn); tools / tool_choice / stop_sequences /
              temperature / top_p / max_tokens / metadata.user_id -> their chat counterparts
    answer    the message's text and tool calls -> text and tool_use blocks; finish_reason ->
              stop_reason (stop -> end_turn, length -> max_tokens, tool_calls -> tool_use); usage ->
              input_tokens / output_tokens
    stream    message_start, then per block content_block_start / *_delta / content_block_stop, then
              message_delta (stop_reason, usage) and message_stop, each emitted as its chat chunk arrives

Not carried when translated (docs/api.md): `top_k`, thinking, documents, citations, cache_control,
server tools; `stop_sequence` is never named (chat completions does not say which stop matched).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import orjson

from aifabric.config.schema import ClientApi
from aifabric.errors import BadRequest
from aifabric.gateway.dialects.base import ChatStreamTranslator, Dialect, StreamTranslator

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "FORWARDED_HEADERS",
    "MessagesDialect",
    "MessagesStream",
    "check_request",
    "from_chat",
    "sse_event",
    "to_chat",
]

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def check_request(payload: dict[str, Any], *, max_tokens_required: bool = True) -> None:
    """What Anthropic's API itself refuses, refused here with the same words before anything is sent."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: Field required (a non-empty list of messages)", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise BadRequest(
                f"messages.{i}: each message is an object with role 'user' or 'assistant'",
                param=f"messages.{i}",
            )
        content = message.get("content")
        if not isinstance(content, str | list):
            raise BadRequest(
                f"messages.{i}.content: a string or a list of content blocks", param=f"messages.{i}.content"
            )
        if isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                    raise BadRequest(
                        f"messages.{i}.content.{j}: a content block is an object with a `type`",
                        param=f"messages.{i}.content.{j}",
                    )
    max_tokens = payload.get("max_tokens")
    if max_tokens_required and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise BadRequest("max_tokens: Field required (a positive integer)", param="max_tokens")
    system = payload.get("system")
    if system is not None and not isinstance(system, str | list):
        raise BadRequest("system: a string or a list of text blocks", param="system")
    tools = payload.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("tools: a list of tools, each with a `name`", param="tools")
    for k, tool in enumerate(tools or ()):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools.{k}: Input should be a valid dictionary (a tool)", param=f"tools.{k}")
        if "name" not in tool:
            raise BadRequest(f"tools.{k}.name: Field required", param=f"tools.{k}.name")
        if not isinstance(tool["name"], str):
            raise BadRequest(f"tools.{k}.name: Input should be a valid string", param=f"tools.{k}.name")


def _obj(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one: answers are read defensively."""
    return value if isinstance(value, dict) else {}


def _text_of(content: Any) -> str:
    """The text of a string or of a list of blocks (text blocks only)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _image_part(block: dict[str, Any]) -> dict[str, Any] | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _user_turn(content: Any) -> list[dict[str, Any]]:
    """One user message as chat messages: its tool results first (each a `tool` message), then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type")
        if kind == "tool_result":
            text = _text_of(block.get("content"))
            if block.get("is_error"):
                text = f"Error: {text}"
            out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text})
        elif kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            image = _image_part(block)
            if image is not None:
                parts.append(image)
    if parts:
        if all(p["type"] == "text" for p in parts):
            # A plain string where possible: some servers (older llama-cpp-python) take nothing else.
            out.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _assistant_turn(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name", "")),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_choice(choice: Any) -> tuple[Any, bool | None]:
    """(chat tool_choice, parallel_tool_calls) from Anthropic's tool_choice."""
    if not isinstance(choice, dict):
        return None, None
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice.get("type")
    if kind == "any":
        return "required", parallel
    if kind == "tool":
        return {"type": "function", "function": {"name": str(choice.get("name", ""))}}, parallel
    if kind == "none":
        return "none", parallel
    return "auto", parallel


def to_chat(payload: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions request for an Anthropic Messages request (checked by `check_request`)."""
    messages: list[dict[str, Any]] = []
    system = payload.get("system")
    if system:
        messages.append({"role": "system", "content": _text_of(system)})
    for message in payload["messages"]:
        content = message.get("content")
        if message.get("role") == "assistant":
            messages.append(_assistant_turn(content))
        else:
            messages.extend(_user_turn(content))
    chat: dict[str, Any] = {"messages": messages, "max_tokens": payload["max_tokens"]}
    for key in ("temperature", "top_p"):
        if payload.get(key) is not None:
            chat[key] = payload[key]
    if payload.get("stop_sequences"):
        chat["stop"] = payload["stop_sequences"]
    # Client tools only: a server tool (`{"type": "web_search_20250305", ...}`) runs at Anthropic's end,
    # and no chat backend can run it.
    tools = [t for t in payload.get("tools") or () if t.get("type") in (None, "custom")]
    if tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t["name"],
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
                },
            }
            for t in tools
        ]
        choice, parallel = _tool_choice(payload.get("tool_choice"))
        if choice is not None:
            chat["tool_choice"] = choice
        if parallel is not None:
            chat["parallel_tool_calls"] = parallel
    metadata = payload.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    return chat


def _tool_input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        parsed = None
    # A model that wrote arguments that are not a JSON object: kept, in words, rather than dropped.
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


def _message_id(chat_id: Any) -> str:
    return f"msg_{chat_id}" if isinstance(chat_id, str) and chat_id else f"msg_{os.urandom(12).hex()}"


def _usage(usage: Any) -> dict[str, int]:
    usage = _obj(usage)
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
    }


def from_chat(chat: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """The Anthropic message for a chat-completions answer."""
    choices = chat.get("choices")
    choice = _obj(choices[0]) if isinstance(choices, list) and choices else {}
    message = _obj(choice.get("message"))
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": str(message["content"])})
    for call in message.get("tool_calls") or ():
        function = _obj(_obj(call).get("function"))
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{os.urandom(12).hex()}"),
                "name": str(function.get("name", "")),
                "input": _tool_input(function.get("arguments")),
            }
        )
    return {
        "id": _message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": str(chat.get("model") or payload.get("model") or ""),
        "content": content,
        "stop_reason": _STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": _usage(chat.get("usage")),
    }


def sse_event(obj: dict[str, Any]) -> bytes:
    """One event of Anthropic's stream: `event: <type>` and its JSON data."""
    return b"event: " + str(obj["type"]).encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def error_object(status: int, message: str, type_: str | None = None) -> dict[str, Any]:
    """Anthropic's error body {"type": "error", "error": {"type", "message"}} for an HTTP status."""
    return {"type": "error", "error": {"type": type_ or anthropic_error_type(status), "message": message}}


# Anthropic's error types by HTTP status (its API reference, "Errors"); 5xx without one is `api_error`.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    return ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


class MessagesStream(ChatStreamTranslator):
    """A chat-completions stream as Anthropic's event sequence, event by event."""

    def __init__(self, payload: dict[str, Any], upstream_usage: bool) -> None:
        super().__init__()
        self._model = str(payload.get("model") or "")
        self._started = False
        self._block: str | None = None  # "text" or "tool_use": the open content block
        self._index = -1
        self._tools: dict[int, int] = {}  # chat tool_call index -> content block index
        self._stop_reason = "end_turn"
        self._usage: dict[str, int] | None = None
        self._counted = 0  # content chunks seen, the output count when upstream gives no usage
        self._failed = False

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": _message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": str(chunk.get("model") or self._model),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse_event({"type": "message_start", "message": message}) + sse_event({"type": "ping"})

    def _close_block(self) -> bytes:
        if self._block is None:
            return b""
        self._block = None
        return sse_event({"type": "content_block_stop", "index": self._index})

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._index += 1
        self._block = str(block["type"])
        return out + sse_event({"type": "content_block_start", "index": self._index, "content_block": block})

    def on_chunk(self, chunk: dict[str, Any]) -> bytes:
        if self._failed:
            return b""
        out = b"" if self._started else self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self._usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = _obj(choice.get("delta"))
            text = delta.get("content")
            if text:
                if self._block != "text":
                    out += self._open({"type": "text", "text": ""})
                out += sse_event(
                    {
                        "type": "content_block_delta",
                        "index": self._index,
                        "delta": {"type": "text_delta", "text": text},
                    }
                )
                self._counted += 1
            for call in delta.get("tool_calls") or ():
                out += self._tool_delta(call)
            finish = choice.get("finish_reason")
            if finish:
                self._stop_reason = _STOP_REASONS.get(str(finish), "end_turn")
        return out

    def _tool_delta(self, call: Any) -> bytes:
        if not isinstance(call, dict):
            return b""
        out = b""
        position = call.get("index", 0)
        function = _obj(call.get("function"))
        if position not in self._tools or self._block != "tool_use":
            block = {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{os.urandom(12).hex()}"),
                "name": str(function.get("name", "")),
                "input": {},
            }
            out += self._open(block)
            self._tools[position] = self._index
        arguments = function.get("arguments")
        if arguments:
            json_delta = {"type": "input_json_delta", "partial_json": str(arguments)}
            out += sse_event(
                {"type": "content_block_delta", "index": self._tools[position], "delta": json_delta}
            )
            self._counted += 1
        return out

    def on_error(self, error: dict[str, Any]) -> bytes:
        self._failed = True
        self.done = True  # nothing follows an error event
        message = str(error.get("message") or "the backend failed mid-stream")
        return sse_event(error_object(502, message, "api_error"))

    def on_end(self) -> bytes:
        if self._failed:
            return b""
        out = b"" if self._started else self._start({})
        out += self._close_block()
        usage = self._usage or {"input_tokens": 0, "output_tokens": self._counted}
        delta = {"stop_reason": self._stop_reason, "stop_sequence": None}
        out += sse_event({"type": "message_delta", "delta": delta, "usage": usage})
        return out + sse_event({"type": "message_stop"})


# The client's headers a native Messages route may read; never its key (the backend has its own).
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


class MessagesDialect(Dialect):
    api: ClassVar[ClientApi] = ClientApi.MESSAGES
    native_path: ClassVar[str] = "/messages"
    translatable: ClassVar[bool] = True

    def __init__(self, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self._headers = list(headers)

    def native_headers(self) -> list[tuple[str, str]]:
        return self._headers

    def to_chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        return to_chat(payload)

    def from_chat(self, chat: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        return from_chat(chat, payload)

    def stream_translator(self, payload: dict[str, Any], upstream_usage: bool) -> StreamTranslator:
        return MessagesStream(payload, upstream_usage)

    def stream_error(self, message: str) -> bytes:
        return b"\n\n" + sse_event(error_object(502, message, "api_error"))
