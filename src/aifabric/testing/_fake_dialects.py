"""What the fake backend says on the routes beyond chat completions: Anthropic's Messages API (as
vLLM, llama-server and Ollama serve it), token counting, rerank in each server's shape, transcription,
and tool calls. Pure builders, deterministic like `_fake_shapes`.

Replies follow the chat echo: `"[<served id>] <last user text>"`; after a tool result, `"[<served id>]
tool said: <result>"`. With `tools` in a request (and tool choice not `none`), a turn that ends with
the user's words answers with one call of the first tool (or the one named) with arguments
`{"query": <last user text>}`, the same on every route, so native and translated answers compare equal.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aifabric.testing._fake_shapes import embed_vector, word_count

__all__ = [
    "anthropic_text",
    "chat_tool_body",
    "chat_tool_call",
    "chat_tool_chunks",
    "message_body",
    "message_events",
    "rerank_body",
    "stream_error_events",
    "tokenize_body",
]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _event(obj: dict[str, Any]) -> bytes:
    return f"event: {obj['type']}\ndata: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


def _get(value: Any, key: str, default: Any = None) -> Any:
    """`value[key]` when `value` is an object that has it, else `default`: the fake backend answers any
    body the fuzz tests send through the gateway (a malformed field is not a crash)."""
    return value.get(key, default) if isinstance(value, dict) else default


def _blocks_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def chat_tool_call(body: dict[str, Any], last_text: str) -> tuple[str, str] | None:
    """(tool name, JSON arguments) when a chat request with tools should answer with a call."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    messages = body.get("messages")
    if not isinstance(tools, list) or not tools or choice == "none" or not isinstance(messages, list):
        return None
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    name = str(_get(_get(tools[0], "function"), "name", ""))
    if isinstance(choice, dict):
        name = str(_get(choice.get("function"), "name", name))
    return name, json.dumps({"query": last_text})


def chat_tool_result(messages: Any) -> str | None:
    """The content of a trailing `tool` message (the model is to answer from it), else None."""
    last = messages[-1] if isinstance(messages, list) and messages else None
    if isinstance(last, dict) and last.get("role") == "tool":
        return _blocks_text(last.get("content"))
    return None


def chat_tool_body(rid: str, created: int, model: str, name: str, arguments: str, prompt: int) -> bytes:
    call = {"id": f"call_{rid}", "type": "function", "function": {"name": name, "arguments": arguments}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
    usage = {"prompt_tokens": prompt, "completion_tokens": 5, "total_tokens": prompt + 5}
    return _dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
    )


def chat_tool_chunks(
    rid: str, created: int, model: str, name: str, arguments: str, prompt: int, include_usage: bool
) -> list[bytes]:
    """A streamed tool call as servers send it: id and name first, the arguments in two pieces."""
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
    half = len(arguments) // 2
    first = {"index": 0, "id": f"call_{rid}", "type": "function", "function": {"name": name, "arguments": ""}}
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "tool_calls": [first]},
        {"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]},
    ]
    events = [
        b"data: " + _dumps({**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}) + b"\n\n"
        for d in deltas
    ]
    final = {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    events.append(b"data: " + _dumps({**base, "choices": [final]}) + b"\n\n")
    if include_usage:
        usage = {"prompt_tokens": prompt, "completion_tokens": 5, "total_tokens": prompt + 5}
        events.append(b"data: " + _dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def anthropic_text(body: dict[str, Any]) -> tuple[str, bool]:
    """(the text the reply echoes, whether it answers a tool result) of a Messages request."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return "", False
    content = messages[-1].get("content")
    if isinstance(content, list):
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            return _blocks_text(results[-1].get("content")), True
    return _blocks_text(content), False


def anthropic_tool(body: dict[str, Any], text: str, after_tool: bool) -> tuple[str, dict[str, Any]] | None:
    tools = body.get("tools")
    raw_choice = body.get("tool_choice")
    choice: dict[str, Any] = raw_choice if isinstance(raw_choice, dict) else {}
    if after_tool or not isinstance(tools, list) or not tools or choice.get("type") == "none":
        return None
    name = str(choice.get("name") or _get(tools[0], "name", ""))
    return name, {"query": text}


def anthropic_prompt_tokens(body: dict[str, Any]) -> int:
    raw = body.get("messages")
    messages: list[Any] = raw if isinstance(raw, list) else []
    system = body.get("system")
    count = word_count(_blocks_text(system)) if system else 0
    return count + sum(word_count(_blocks_text(m.get("content"))) for m in messages if isinstance(m, dict))


def message_body(
    rid: str, model: str, parts: list[str], stop: str, prompt: int, tool: tuple[str, dict[str, Any]] | None
) -> bytes:
    content: list[dict[str, Any]]
    if tool is not None:
        content = [{"type": "tool_use", "id": f"toolu_{rid}", "name": tool[0], "input": tool[1]}]
        stop, output = "tool_use", 5
    else:
        content = [{"type": "text", "text": "".join(parts)}]
        output = len(parts)
    return _dumps(
        {
            "id": f"msg_{rid}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": output},
        }
    )


def message_events(
    rid: str, model: str, parts: list[str], stop: str, prompt: int, tool: tuple[str, dict[str, Any]] | None
) -> list[bytes]:
    """Anthropic's stream: message_start, ping, one block's start/deltas/stop, message_delta, message_stop."""
    start: dict[str, Any] = {
        "id": f"msg_{rid}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": 0},
    }
    events = [_event({"type": "message_start", "message": start}), _event({"type": "ping"})]
    if tool is not None:
        block = {"type": "tool_use", "id": f"toolu_{rid}", "name": tool[0], "input": {}}
        arguments = json.dumps(tool[1])
        half = len(arguments) // 2
        events.append(_event({"type": "content_block_start", "index": 0, "content_block": block}))
        for piece in (arguments[:half], arguments[half:]):
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(_event({"type": "content_block_delta", "index": 0, "delta": delta}))
        stop, output = "tool_use", 5
    else:
        block = {"type": "text", "text": ""}
        events.append(_event({"type": "content_block_start", "index": 0, "content_block": block}))
        for part in parts:
            delta = {"type": "text_delta", "text": part}
            events.append(_event({"type": "content_block_delta", "index": 0, "delta": delta}))
        output = len(parts)
    events.append(_event({"type": "content_block_stop", "index": 0}))
    usage = {"output_tokens": output}
    events.append(
        _event(
            {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage}
        )
    )
    events.append(_event({"type": "message_stop"}))
    return events


def tokenize_body(count: int, max_model_len: int = 4096) -> bytes:
    """vLLM's /tokenize answer."""
    return _dumps({"count": count, "max_model_len": max_model_len, "tokens": list(range(count))})


def _score(query: str, document: str) -> float:
    """A deterministic relevance: shared words, broken by a hash-derived tie-breaker below 0.01."""
    shared = len(set(query.lower().split()) & set(document.lower().split()))
    return round(shared + abs(embed_vector(query + "\x00" + document, 2)[0]) / 100, 6)


def rerank_body(style: str, model: str, query: str, documents: list[str], top_n: Any, rid: str) -> bytes:
    """A rerank answer as vLLM / llama-server (`/v1/rerank`) or TEI (`/rerank`) sends it."""
    scores = [_score(query, d) for d in documents]
    order = sorted(range(len(documents)), key=lambda i: -scores[i])
    if isinstance(top_n, int) and not isinstance(top_n, bool) and top_n > 0:
        order = order[:top_n]
    if style == "tei":
        return _dumps([{"index": i, "score": scores[i]} for i in order])
    results = [{"index": i, "document": {"text": documents[i]}, "relevance_score": scores[i]} for i in order]
    if style == "llamacpp":  # llama-server: no document echo, usage as prompt/total tokens
        results = [{"index": i, "relevance_score": scores[i]} for i in order]
    tokens = word_count(query) * len(documents) + sum(word_count(d) for d in documents)
    return _dumps(
        {
            "id": f"rerank-{rid}",
            "model": model,
            "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def multipart_fields(content_type: str, body: bytes) -> tuple[dict[str, str], int]:
    """The text fields of a multipart/form-data body (a file part: its file name), and the file's size."""
    marker = "boundary="
    if marker not in content_type:
        return {}, 0
    boundary = content_type.split(marker, 1)[1].split(";", maxsplit=1)[0].strip().strip('"').encode()
    fields: dict[str, str] = {}
    size = 0
    for part in body.split(b"--" + boundary):
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        data = data.removesuffix(b"\r\n")
        disposition = head.decode("latin-1")
        if 'name="' not in disposition:
            continue
        name = disposition.split('name="', 1)[1].split('"', 1)[0]
        if "filename=" in disposition:
            fields[name] = disposition.split('filename="', 1)[-1].split('"', 1)[0]
            size = len(data)
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, size


def _transcription_usage(text: str, size: int) -> tuple[int, int]:
    """(input, output) tokens of a fake transcription: an audio token per 64 bytes, a token a word."""
    return max(1, size // 64), word_count(text)


def _llama_asr_done(text: str, size: int) -> dict[str, Any]:
    """llama-server's `transcript.text.done` (`to_json_oaicompat_asr`): also its unstreamed answer."""
    prompt, output = _transcription_usage(text, size)
    usage = {
        "type": "tokens",
        "input_tokens": prompt,
        "output_tokens": output,
        "total_tokens": prompt + output,
        "input_tokens_details": {"cached_tokens": 0},
    }
    return {"type": "transcript.text.done", "text": text, "usage": usage}


def _llama_sse(obj: dict[str, Any]) -> bytes:
    # nlohmann::json keeps its keys sorted and dumps them compact: llama-server's events look so.
    return b"data: " + json.dumps(obj, separators=(",", ":"), sort_keys=True).encode() + b"\n\n"


def transcription_body(kind: str, text: str, size: int) -> bytes:
    """An unstreamed JSON transcription: `{"text"}`, or llama-server's `done` event with its usage."""
    if kind == "llamacpp":
        return json.dumps(_llama_asr_done(text, size), separators=(",", ":"), sort_keys=True).encode()
    return json.dumps({"text": text}).encode()


def transcription_events(
    kind: str, text: str, rid: str, *, model: str, size: int, include_usage: bool
) -> list[bytes]:
    """A streamed transcription (`stream=true`), a word an event, in each server's shape:

    openai      `transcript.text.delta` events and one `transcript.text.done`
    llamacpp    the same (sorted keys, usage in `done`), then `[DONE]`
    vllm        `transcription.chunk` objects (`choices[0].delta.content`, `finish_reason` on the
                last), a `usage` chunk with no choices when the form asks `stream_include_usage`,
                then `[DONE]`
    """
    words = [w.group(0) for w in re.finditer(r"\s*\S+", text)]
    if kind == "openai":
        deltas = [{"type": "transcript.text.delta", "delta": w} for w in words]
        done = {"type": "transcript.text.done", "text": text}
        return [f"data: {json.dumps(e)}\n\n".encode() for e in (*deltas, done)]
    if kind == "llamacpp":
        events = [_llama_sse({"type": "transcript.text.delta", "delta": w}) for w in words]
        return [*events, _llama_sse(_llama_asr_done(text, size)), b"data: [DONE]\n\n"]
    head = {"id": rid, "object": "transcription.chunk", "created": int(time.time()), "model": model}
    chunks: list[dict[str, Any]] = [{**head, "choices": [{"delta": {"content": w}}]} for w in words]
    if chunks:
        chunks[-1]["choices"][0].update(finish_reason="stop", stop_reason=None)
    if include_usage:
        prompt, output = _transcription_usage(text, size)
        usage = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}
        chunks.append({**head, "choices": [], "usage": usage})
    return [*(f"data: {json.dumps(c)}\n\n".encode() for c in chunks), b"data: [DONE]\n\n"]


def stream_error_events(first: bytes, message: str) -> list[bytes]:
    """The events a server sends when it fails mid-stream, in the API of the stream that began with
    `first`: Anthropic's `error` event, the Responses API's `error` event, or (chat completions) vLLM's
    `data: {"error": {...}}` followed by `[DONE]`."""
    error: dict[str, Any]
    if b"message_start" in first:
        error = {"type": "error", "error": {"type": "api_error", "message": message}}
        return [b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n"]
    if b"event: response." in first:
        error = {"type": "error", "code": "server_error", "message": message, "param": None}
        return [b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n"]
    error = {"error": {"message": message, "type": "server_error", "param": None, "code": 500}}
    return [b"data: " + json.dumps(error).encode() + b"\n\n", b"data: [DONE]\n\n"]
