"""OpenAI's Responses API over chat completions: the request out, the answer back, the stream event by event.

    POST /v1/responses {input, instructions, tools, text.format, ...}
        -> request_to_chat(payload, history) -> POST /v1/chat/completions {messages, tools, response_format}
        <- chat_to_response(completion, skeleton)          (non-streamed)
        <- responses_stream.ResponsesStream, chunk by chunk (streamed)

Pure functions over dicts: no I/O, no clock (the caller gives the id and the creation time), so they are
tested against the official OpenAPI description without sockets. What has no chat-completions
equivalent is refused with a 400 naming the parameter (built-in tools, `background`, `conversation`,
file inputs), never dropped silently; what only tunes OpenAI's own service (`truncation`,
`service_tier`, `include`, `prompt_cache_key`, ...) is ignored, as docs/api.md lists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from aifabric.errors import BadRequest

__all__ = [
    "as_dict",
    "call_item",
    "chat_to_response",
    "conversation_items",
    "input_items",
    "new_id",
    "request_to_chat",
    "response_skeleton",
    "set_status",
    "text_item",
    "usage_of",
]

# Parameters of the Responses API with no chat-completions equivalent: refused, not dropped.
_REFUSED = {
    "background": "background responses are not supported by this gateway; send `background: false`",
    "conversation": "the Conversations API is not supported; use `previous_response_id` or send the items",
    "prompt": "stored prompt templates are not supported; send the prompt as `input`",
}
# Sampling parameters carried over to chat completions under the same name.
_SAME_NAME = ("temperature", "top_p", "stop", "user", "seed", "frequency_penalty", "presence_penalty")


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def new_id(prefix: str) -> str:
    """`resp_...`, `msg_...`, `fc_...`: OpenAI's id shapes, 24 random bytes in hex."""
    return f"{prefix}_{os.urandom(24).hex()}"


# ------------------------------------------------------------------------------------------- request


def request_to_chat(payload: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The chat-completions request for a Responses request; `history` holds the items of the
    conversation `previous_response_id` names (its input and output, oldest first). `stream` and
    `stream_options` are the forwarder's to set, per target."""
    for key, why in _REFUSED.items():
        if payload.get(key) not in (None, False):
            raise BadRequest(f"`{key}`: {why}.", param=key, code="unsupported_parameter")
    messages: list[dict[str, Any]] = []
    instructions = payload.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            messages.append({"role": "system", "content": instructions})
    elif isinstance(instructions, list):
        _append_items(messages, instructions, "instructions")
    elif instructions is not None:
        raise BadRequest("`instructions` must be a string.", param="instructions")
    if history:
        _append_items(messages, history, "previous_response_id")
    _append_items(messages, input_items(payload.get("input")), "input")
    if not messages:
        raise BadRequest("`input` is empty: send a string or at least one item.", param="input")
    chat: dict[str, Any] = {"model": payload.get("model"), "messages": messages}
    for key in _SAME_NAME:
        if payload.get(key) is not None:
            chat[key] = payload[key]
    if payload.get("max_output_tokens") is not None:
        chat["max_tokens"] = payload["max_output_tokens"]
    tools = _tools(payload.get("tools"))
    if tools:
        chat["tools"] = tools
        if payload.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = payload["parallel_tool_calls"]
    if payload.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(payload["tool_choice"])
    response_format = _response_format(payload.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    return chat


def input_items(value: Any) -> list[dict[str, Any]]:
    """`input` as a list of items: a string is one user message."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return value
    raise BadRequest("`input` must be a string or a list of items (objects).", param="input")


def _append_items(messages: list[dict[str, Any]], items: Iterable[dict[str, Any]], where: str) -> None:
    for index, item in enumerate(items):
        kind = item.get("type", "message")
        param = f"{where}[{index}]"
        if kind == "message":
            messages.append(_message(item, param))
        elif kind == "function_call":
            call = {
                "id": _string(item, "call_id", param),
                "type": "function",
                "function": {"name": _string(item, "name", param), "arguments": item.get("arguments") or ""},
            }
            last = messages[-1] if messages else None
            # Consecutive calls (parallel tool calls) are one assistant turn in chat completions.
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last is not None and last["role"] == "assistant" and last.get("content") is not None:
                last["tool_calls"] = [call]
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = _text_of(output, param)
            if not isinstance(output, str):
                raise BadRequest(f"`{param}.output` must be a string.", param=f"{param}.output")
            messages.append(
                {"role": "tool", "tool_call_id": _string(item, "call_id", param), "content": output}
            )
        elif kind == "reasoning":
            continue  # a model's own reasoning summary: chat completions has no place for it
        else:
            raise BadRequest(
                f"`{param}`: items of type '{kind}' are not supported by this gateway "
                "(supported: message, function_call, function_call_output, reasoning).",
                param=param,
                code="unsupported_item",
            )


def _string(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"`{param}.{key}` must be a non-empty string.", param=f"{param}.{key}")
    return value


_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise BadRequest(
            f"`{param}.role` must be one of user, assistant, system, developer.", param=f"{param}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise BadRequest(f"`{param}.content` must be a string or a list of parts.", param=f"{param}.content")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        part_param = f"{param}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": _string(part, "text", part_param)})
        elif kind == "refusal":
            parts.append({"type": "text", "text": _string(part, "refusal", part_param)})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise BadRequest(
                f"`{part_param}`: content of type '{kind}' is not supported by this gateway "
                "(supported: input_text, output_text, refusal, input_image with an image_url).",
                param=part_param,
                code="unsupported_content",
            )
    if all(p["type"] == "text" for p in parts):
        # Plain text as one string: the chat templates of local models expect it that way.
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _text_of(parts: list[Any], param: str) -> str:
    texts = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
            raise BadRequest(f"`{param}.output[{i}]` must be a text part.", param=f"{param}.output")
        texts.append(_string(part, "text", f"{param}.output[{i}]"))
    return "".join(texts)


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest("`tools` must be a list.", param="tools")
    tools = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise BadRequest(
                f"`tools[{i}]`: only function tools are supported by this gateway, not '{kind}'.",
                param=f"tools[{i}]",
                code="unsupported_tool",
            )
        function: dict[str, Any] = {"name": _string(tool, "name", f"tools[{i}]")}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(value: Any) -> Any:
    if value in ("none", "auto", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return {"type": "function", "function": {"name": value["name"]}}
    raise BadRequest(
        "`tool_choice` must be 'none', 'auto', 'required' or {'type': 'function', 'name': ...}.",
        param="tool_choice",
    )


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt, dict):
        if not isinstance(fmt.get("schema"), dict):
            raise BadRequest("`text.format.schema` must be a JSON schema object.", param="text.format.schema")
        schema = {k: fmt[k] for k in ("name", "description", "schema", "strict") if fmt.get(k) is not None}
        schema.setdefault("name", "response")
        return {"type": "json_schema", "json_schema": schema}
    raise BadRequest(
        "`text.format.type` must be 'text', 'json_object' or 'json_schema'.", param="text.format"
    )


# ------------------------------------------------------------------------------------------ response


def response_skeleton(
    payload: dict[str, Any], response_id: str, created_at: int, model: str
) -> dict[str, Any]:
    """The Response object before any output: the request's settings echoed, status in_progress."""
    text = payload.get("text")
    skeleton: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": payload.get("instructions"),
        "max_output_tokens": payload.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "previous_response_id": payload.get("previous_response_id"),
        "reasoning": None,
        "store": payload.get("store", True),
        "temperature": payload.get("temperature", 1.0),
        "text": text if isinstance(text, dict) and "format" in text else {"format": {"type": "text"}},
        "tool_choice": payload.get("tool_choice", "auto"),
        "tools": [_echo_tool(t) for t in payload.get("tools") or ()],
        "top_p": payload.get("top_p", 1.0),
        "truncation": "disabled",
        "metadata": payload.get("metadata") or {},
    }
    if isinstance(payload.get("user"), str):
        skeleton["user"] = payload["user"]
    return skeleton


def _echo_tool(tool: Any) -> Any:
    """A function tool as the Response object lists it: every field present (null when not given)."""
    if not isinstance(tool, dict):
        return tool
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict"),
    }


def usage_of(chat_usage: Any) -> dict[str, Any] | None:
    if not isinstance(chat_usage, dict):
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    cached = chat_usage.get("prompt_tokens_details")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": int(as_dict(cached).get("cached_tokens") or 0),
            "cache_write_tokens": 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": int(chat_usage.get("total_tokens") or prompt + completion),
    }


def set_status(response: dict[str, Any], finish_reason: Any, completed_at: int) -> None:
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"
        response["completed_at"] = completed_at


def text_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def chat_to_response(chat: dict[str, Any], skeleton: dict[str, Any], completed_at: int) -> dict[str, Any]:
    """A chat completion as the Response object; `skeleton` comes from `response_skeleton`."""
    response = dict(skeleton)
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = as_dict(choice.get("message"))
    finish = choice.get("finish_reason")
    item_status = "incomplete" if finish == "length" else "completed"
    output: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        output.append(text_item(new_id("msg"), content, item_status))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(
            call_item(
                new_id("fc"),
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
                "completed",
            )
        )
    response["output"] = output
    usage = usage_of(chat.get("usage"))
    if usage is not None:
        response["usage"] = usage
    set_status(response, finish, completed_at)
    return response


def conversation_items(
    payload: dict[str, Any], history: list[dict[str, Any]], output: list[Any]
) -> list[Any]:
    """What a later `previous_response_id` continues from: the earlier turns, this input, this output.
    (The instructions are not carried over, as the API defines.)"""
    return [*history, *input_items(payload.get("input")), *output]
