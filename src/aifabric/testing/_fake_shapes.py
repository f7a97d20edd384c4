"""What the fake backend says: pure builders of response bodies, error bodies and probe answers.

Deterministic on purpose (no randomness, no clock except `created`): a test can predict the reply to
a request. The chat reply is `"[<served-id>] <last user message>"`, split into tokens at word boundaries;
embeddings are unit vectors derived from a hash of the text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
from http import HTTPStatus
from typing import Any

__all__ = [
    "chat_body",
    "chat_chunks",
    "completion_body",
    "completion_chunks",
    "embed_vector",
    "embeddings_body",
    "error_body",
    "last_user_text",
    "metrics_text",
    "models_body",
    "ollama_tags_body",
    "reply_tokens",
    "slots_body",
    "sse",
    "unknown_model_message",
    "word_count",
]

_WORD = re.compile(r"\s*\S+")
_OWNED_BY = {
    "vllm": "vllm",
    "llamacpp": "llamacpp",
    "llama-cpp-python": "me",
    "ollama": "library",
    "tei": "tei",
    "openai": "openai",
}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def sse(obj: Any) -> bytes:
    """One server-sent event carrying a JSON object (or the literal `[DONE]`)."""
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return " ".join(str(p) for p in parts)
    return ""


def last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def prompt_tokens_of_messages(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(word_count(_content_text(m.get("content"))) for m in messages if isinstance(m, dict))


def reply_tokens(text: str, tokens: int | None, max_tokens: Any) -> tuple[list[str], str]:
    """Split `text` into word tokens (each with its leading space, so they concatenate back to the text).
    `tokens` forces the count (padding with " w<i>" words, or cutting); a request's `max_tokens` cuts
    further and makes the finish reason "length"."""
    parts: list[str] = _WORD.findall(text)
    if tokens is not None:
        parts = parts[:tokens] + [f" w{i}" for i in range(len(parts), tokens)]
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and 0 <= max_tokens < len(parts):
        return parts[:max_tokens], "length"
    return parts, "stop"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_body(rid: str, created: int, model: str, parts: list[str], finish: str, prompt: int) -> bytes:
    return _dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(parts)},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": _usage(prompt, len(parts)),
        }
    )


def chat_chunks(
    rid: str, created: int, model: str, parts: list[str], finish: str, prompt: int, include_usage: bool
) -> list[bytes]:
    """The SSE events of a streamed chat completion: one per token (the first also carries the role), one
    with the finish reason, the usage chunk (empty choices) when asked for, then `[DONE]`."""
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
    events: list[bytes] = []
    for i, part in enumerate(parts):
        delta = {"role": "assistant", "content": part} if i == 0 else {"content": part}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        events.append(sse({**base, "choices": [choice]}))
    final = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}
    events.append(sse({**base, "choices": [final]}))
    if include_usage:
        events.append(sse({**base, "choices": [], "usage": _usage(prompt, len(parts))}))
    events.append(sse("[DONE]"))
    return events


def completion_body(
    rid: str, created: int, model: str, texts: list[tuple[list[str], str]], prompt: int
) -> bytes:
    choices = [
        {"index": i, "text": "".join(parts), "logprobs": None, "finish_reason": finish}
        for i, (parts, finish) in enumerate(texts)
    ]
    completion = sum(len(parts) for parts, _ in texts)
    body = {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": choices}
    return _dumps({**body, "usage": _usage(prompt, completion)})


def completion_chunks(
    rid: str, created: int, model: str, texts: list[tuple[list[str], str]], prompt: int, include_usage: bool
) -> list[bytes]:
    base = {"id": rid, "object": "text_completion", "created": created, "model": model}
    events: list[bytes] = []
    for i, (parts, finish) in enumerate(texts):
        for part in parts:
            choice = {"index": i, "text": part, "logprobs": None, "finish_reason": None}
            events.append(sse({**base, "choices": [choice]}))
        events.append(
            sse({**base, "choices": [{"index": i, "text": "", "logprobs": None, "finish_reason": finish}]})
        )
    if include_usage:
        completion = sum(len(parts) for parts, _ in texts)
        events.append(sse({**base, "choices": [], "usage": _usage(prompt, completion)}))
    events.append(sse("[DONE]"))
    return events


def embed_vector(text: str, dim: int) -> list[float]:
    """A unit vector from sha256 of the text, rounded to float32 so the float and base64 forms agree."""
    raw: list[float] = []
    block = 0
    while len(raw) < dim:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        raw.extend((b - 127.5) / 127.5 for b in digest)
        block += 1
    vec = raw[:dim]
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    packed = struct.pack(f"<{dim}f", *(x / norm for x in vec))
    return list(struct.unpack(f"<{dim}f", packed))


def embedding_inputs(value: Any) -> list[str] | None:
    """The texts of an embeddings `input`: a string, a list of strings, or token ids (as their text)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) for v in value):
            return [" ".join(map(str, v)) for v in value]
    return None


def embeddings_body(model: str, texts: list[str], dim: int, encoding_format: Any) -> bytes:
    data = []
    for i, text in enumerate(texts):
        vec = embed_vector(text, dim)
        emb: Any = vec
        if encoding_format == "base64":
            emb = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(word_count(t) for t in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _dumps({"object": "list", "data": data, "model": model, "usage": usage})


def models_body(kind: str, models: tuple[str, ...]) -> bytes:
    data: list[dict[str, Any]] = []
    for model in models:
        entry: dict[str, Any] = {"id": model, "object": "model", "created": 0, "owned_by": _OWNED_BY[kind]}
        if kind == "vllm":
            entry.update(root=model, parent=None, max_model_len=4096, permission=[])
        data.append(entry)
    return _dumps({"object": "list", "data": data})


def ollama_tags_body(models: tuple[str, ...]) -> bytes:
    entries = [
        {
            "name": m,
            "model": m,
            "modified_at": "2025-01-01T00:00:00Z",
            "size": 0,
            "digest": hashlib.sha256(m.encode()).hexdigest(),
            "details": {
                "format": "gguf",
                "family": "fake",
                "parameter_size": "0B",
                "quantization_level": "Q4_0",
            },
        }
        for m in models
    ]
    return _dumps({"models": entries})


def metrics_text(kind: str, model: str, running: int, waiting: int, kv_usage: float) -> bytes | None:
    """Prometheus text with the load gauges a balancer reads; None for kinds without /metrics."""
    if kind == "vllm":
        label = f'{{model_name="{model}"}}'
        gauges = [
            ("vllm:num_requests_running", "Number of requests in model execution batches.", running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv_usage),
            # The name vLLM used before 0.10: balancers that read either keep working.
            ("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", kv_usage),
        ]
    elif kind == "llamacpp":
        label = ""
        gauges = [
            ("llamacpp:requests_processing", "Number of requests processing.", running),
            ("llamacpp:requests_deferred", "Number of requests deferred.", waiting),
            ("llamacpp:kv_cache_usage_ratio", "KV-cache usage. 1 means 100 percent usage.", kv_usage),
        ]
    else:
        return None
    lines: list[str] = []
    for name, help_text, value in gauges:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{label} {float(value)}"]
    return ("\n".join(lines) + "\n").encode()


def slots_body(n_slots: int, busy: int) -> bytes:
    slots = [
        {
            "id": i,
            "id_task": i if i < busy else -1,
            "n_ctx": 4096,
            "speculative": False,
            "is_processing": i < busy,
            "state": 1 if i < busy else 0,  # older llama-server builds report state instead
        }
        for i in range(n_slots)
    ]
    return _dumps(slots)


def unknown_model_message(style: str, model: str) -> str:
    if style in ("ollama", "ollama-openai"):
        return f'model "{model}" not found, try pulling it first'
    return f"The model `{model}` does not exist."


def _vllm_type(status: int) -> str:
    known = {
        400: "BadRequestError",
        404: "NotFoundError",
        500: "InternalServerError",
        501: "NotImplementedError",
    }
    if status in known:
        return known[status]
    return _phrase(status).replace(" ", "").replace("-", "") + "Error"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _openai_type_code(status: int) -> tuple[str, str | None]:
    table: dict[int, tuple[str, str | None]] = {
        401: ("invalid_request_error", "invalid_api_key"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }
    if status in table:
        return table[status]
    return ("server_error", None) if status >= 500 else ("invalid_request_error", None)


def _llama_server_type(status: int) -> str:
    table = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
    table |= {501: "not_supported_error", 503: "unavailable_error"}
    if status in table:
        return table[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def _tei_type(status: int) -> str:
    if status == 429:
        return "Overloaded"
    if status == 503:
        return "Unhealthy"
    return "Backend" if status >= 500 else "Validation"


def error_body(style: str, status: int, message: str) -> bytes:
    """The body a real server of `style` sends with `status` (see docs/fake-backend.md)."""
    if style == "vllm":
        if status == 401:  # vLLM's --api-key middleware answers flat
            return _dumps({"error": "Unauthorized"})
        return _dumps(
            {"error": {"message": message, "type": _vllm_type(status), "param": None, "code": status}}
        )
    if style == "openai":
        etype, code = _openai_type_code(status)
        return _dumps({"error": {"message": message, "type": etype, "param": None, "code": code}})
    if style == "llama-server":
        return _dumps({"error": {"code": status, "message": message, "type": _llama_server_type(status)}})
    if style == "llama-cpp-python":
        if status in (401, 503):  # FastAPI HTTPException raised outside its OpenAI error wrapper
            return _dumps({"detail": "Invalid API key" if status == 401 else message})
        etype = "internal_server_error" if status >= 500 else "invalid_request_error"
        code = "model_not_found" if status == 404 else None
        return _dumps({"error": {"message": message, "type": etype, "param": None, "code": code}})
    if style == "ollama":
        return _dumps({"error": message})
    if style == "ollama-openai":
        etype = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        return _dumps({"error": {"message": message, "type": etype, "param": None, "code": None}})
    if style == "tei":
        if status == 401:
            return b""
        return _dumps({"error": message, "error_type": _tei_type(status)})
    if style == "tei-openai":
        if status == 401:
            return b""
        return _dumps({"message": message, "code": status, "type": _tei_type(status)})
    raise ValueError(f"unknown error style {style!r}")
