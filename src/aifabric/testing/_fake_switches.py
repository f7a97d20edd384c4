"""The fake backend's switches: one frozen value, replaced whole on every change.

A switch set is validated here, once, so the server, the Python API, the HTTP control endpoint and the CLI
all accept and reject the same things. Defaults that depend on the backend kind (does an unknown model id
404? is `stream_options.include_usage` honoured? which error body shape?) are resolved here too, from the
behaviour of the real servers.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ERROR_STYLES", "FAULT_SCOPES", "HELP", "KINDS", "SWITCH_NAMES", "Switches", "updated"]

KINDS = ("vllm", "llamacpp", "llama-cpp-python", "ollama", "tei", "openai")

# Which requests the fault switches (latency, failures, hang, crashes) touch: only the inference calls
# (POST chat/completions/embeddings), every /v1 call (also GET /v1/models), or everything but /_fake.
FAULT_SCOPES = ("inference", "api", "all")

# Error body shapes, as the real servers write them (see docs/fake-backend.md for each body).
ERROR_STYLES = (
    "vllm",
    "openai",
    "llama-server",
    "llama-cpp-python",
    "ollama",
    "ollama-openai",
    "tei",
    "tei-openai",
)

# vLLM and the OpenAI API reject an unknown model id with 404; llama.cpp (both servers) and TEI serve their
# one loaded model whatever id is asked for; Ollama answers 404 "model not found".
_UNKNOWN_MODEL_404 = {
    "vllm": True,
    "openai": True,
    "ollama": True,
    "llamacpp": False,
    "llama-cpp-python": False,
    "tei": False,
}


@dataclass(frozen=True)
class Switches:
    """Everything that shapes the fake backend's answers. Change with `FakeBackend.set(**changes)`."""

    kind: str = "vllm"
    models: tuple[str, ...] = ("m",)
    api_key: str | None = None
    # Timing
    latency_ms: float = 0.0
    token_delay_ms: float = 0.0
    tokens: int | None = None
    reply: str | None = None
    # Injected failures
    fail_first_n: int = 0
    fail_status: int = 500
    fail_body: str | dict[str, Any] | None = None
    retry_after: float | None = None
    status_override: int | None = None
    fault_scope: str = "inference"
    # Process states
    loading: bool | str = False
    loading_ms: float | None = None
    hang: bool = False
    crash_after_chunks: int | None = None
    # Streamed: after the first event, an error event carrying this message (in the stream's own API),
    # then the stream's end: a server failing mid-generation, in its words
    stream_error: str | None = None
    # Streamed: the body re-cut at these byte offsets (from its first byte), each piece a chunk of its
    # own: an event, or a key inside one, split across two reads (with token_delay_ms between pieces)
    split_at: tuple[int, ...] | None = None
    crash_before_headers: bool = False
    idle_timeout_ms: float | None = None
    # Kind-dependent behaviour (None: what the kind's real server does)
    unknown_model_404: bool | None = None
    supports_include_usage: bool | None = None
    error_style: str | None = None
    # Payload and load signals
    embedding_dim: int = 8
    num_requests_running: int | None = None
    num_requests_waiting: int = 0
    kv_cache_usage: float = 0.0
    slots: int = 1
    slots_busy: int | None = None
    # vLLM's sleep mode (--enable-sleep-mode): POST /sleep sets it, POST /wake_up clears it
    sleeping: bool = False
    # The routes served beyond chat/completions/embeddings (None: the kind's, as its real server); `()`
    # imitates a chat-only server (an older vLLM, most OpenAI-compatible clouds)
    routes: tuple[str, ...] | None = None
    # How a route the server lacks answers: 404 (in the kind's "no such route" body) or 405
    missing_route_status: int = 404

    @property
    def refuse(self) -> bool:
        """The listener is closed: a server killed, or (vLLM, TEI, llama-cpp-python) still loading."""
        return self.loading == "refuse"

    @property
    def loading_503(self) -> bool:
        return self.loading is True

    def resolved_unknown_model_404(self) -> bool:
        if self.unknown_model_404 is not None:
            return self.unknown_model_404
        return _UNKNOWN_MODEL_404[self.kind]

    def serves_route(self, path: str, kinds: tuple[str, ...]) -> bool:
        """Whether a route beyond the OpenAI three is served: `routes` when set, else by kind."""
        return path in self.routes if self.routes is not None else self.kind in kinds

    def resolved_include_usage(self) -> bool:
        if self.supports_include_usage is not None:
            return self.supports_include_usage
        # llama-cpp-python ignores stream_options; the others send the final usage chunk.
        return self.kind != "llama-cpp-python"

    def resolved_error_style(self, path: str) -> str:
        if self.error_style is not None:
            return self.error_style
        on_v1 = path.startswith("/v1/")
        if self.kind == "llamacpp":
            return "llama-server"
        if self.kind == "ollama":
            # Ollama's OpenAI layer wraps errors in OpenAI's shape; its native /api routes answer flat.
            return "ollama-openai" if on_v1 else "ollama"
        if self.kind == "tei":
            return "tei-openai" if on_v1 else "tei"
        return self.kind

    def public(self) -> dict[str, Any]:
        """The switches as JSON-able data, with the api_key redacted (it is shown, never logged)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["models"] = list(self.models)
        if self.routes is not None:
            out["routes"] = list(self.routes)
        if self.split_at is not None:
            out["split_at"] = list(self.split_at)
        if self.api_key is not None:
            out["api_key"] = "***"
        return out


SWITCH_NAMES = tuple(f.name for f in dataclasses.fields(Switches))

# One line per switch, for the CLI's --help (docs/fake-backend.md says more).
HELP = {
    "kind": "which server to imitate: probes, error bodies, kind-dependent defaults",
    "models": "the served model ids",
    "api_key": "require 'Authorization: Bearer KEY' on /v1 (401 in the kind's shape otherwise)",
    "latency_ms": "wait this long before the response headers",
    "token_delay_ms": "wait this long between stream chunks",
    "tokens": "exactly this many tokens (stream chunks) per reply",
    "reply": "reply with this text instead of '[<model>] <last user message>'",
    "fail_first_n": "the next N requests fail with fail_status",
    "fail_status": "the status of injected failures (default 500)",
    "fail_body": "the body of injected failures (default: the kind's error shape)",
    "retry_after": "add 'Retry-After: SECONDS' to injected failures and loading 503s",
    "status_override": "every request fails with this status",
    "fault_scope": "which requests faults touch: inference (POST), api (/v1), all (also probes)",
    "loading": "true: 503 'Loading model' on /health and /v1; refuse: the port is closed",
    "loading_ms": "the loading state ends by itself after this long",
    "hang": "read requests, never answer (until switched off or stopped)",
    "crash_after_chunks": "drop the connection after N stream events (non-streamed: half the body)",
    "stream_error": "streamed: after the first event, an error event with this message, then the end",
    "split_at": "streamed: comma-separated byte offsets where the body is cut into chunks of its own "
    "(pair with token_delay_ms so each is read apart)",
    "crash_before_headers": "close the connection after reading the request, without answering",
    "idle_timeout_ms": "close a keep-alive connection idle for this long (as uvicorn does after 5 s)",
    "unknown_model_404": "404 for a model id not served (default: what the kind does)",
    "supports_include_usage": "honour stream_options.include_usage (default: what the kind does)",
    "error_style": "the error body shape (default: the kind's, by path)",
    "embedding_dim": "embedding vector length (default 8)",
    "num_requests_running": "/metrics running gauge (default: live in-flight count)",
    "num_requests_waiting": "/metrics waiting gauge",
    "kv_cache_usage": "/metrics KV-cache usage gauge, 0..1",
    "slots": "how many /slots entries (llama-server)",
    "slots_busy": "how many slots are processing (default: live in-flight count)",
    "sleeping": "vLLM sleep mode: inference answers 503 until POST /wake_up (POST /sleep sets it)",
    "routes": "comma-separated routes served beyond the OpenAI three, e.g. /v1/rerank ('' = chat only; "
    "default: the kind's)",
    "missing_route_status": "status of a route not served: 404 (the kind's body) or 405",
}


def _check_int(name: str, value: Any, *, minimum: int = 0, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_float(name: str, value: Any, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _check_bool(name: str, value: Any, *, optional: bool = False) -> bool | None:
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...], *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def _check_status(name: str, value: Any, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise ValueError(f"{name} must be an HTTP status 100-599, got {value!r}")
    return value


def _check_routes(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    paths = tuple(p for p in items if p)
    if not all(isinstance(p, str) and p.startswith("/") for p in paths):
        raise ValueError(f"routes must be paths like /v1/rerank, got {value!r}")
    return paths


def _check_offsets(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
    try:
        offsets = tuple(int(p) if isinstance(p, str) else p for p in items)
    except ValueError:
        offsets = ()
    if not offsets or not all(isinstance(o, int) and not isinstance(o, bool) and o > 0 for o in offsets):
        raise ValueError(f"split_at must be byte offsets > 0, like 17,40, got {value!r}")
    return tuple(sorted(set(offsets)))


def _validate(name: str, value: Any) -> Any:
    """Return the value normalized, or raise ValueError naming the switch and what it takes."""
    if name == "kind":
        return _check_choice(name, value, KINDS)
    if name == "models":
        items = (value,) if isinstance(value, str) else tuple(value)
        if not items or not all(isinstance(m, str) and m for m in items):
            raise ValueError(f"models must be a non-empty list of model ids, got {value!r}")
        return items
    if name in ("api_key", "reply", "stream_error"):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string or null, got {value!r}")
        return value
    if name in ("latency_ms", "token_delay_ms", "kv_cache_usage"):
        return _check_float(name, value)
    if name in ("retry_after", "loading_ms", "idle_timeout_ms"):
        return _check_float(name, value, optional=True)
    if name in ("tokens", "crash_after_chunks", "num_requests_running", "slots_busy"):
        return _check_int(name, value, optional=True)
    if name in ("fail_first_n", "num_requests_waiting", "slots"):
        return _check_int(name, value)
    if name == "embedding_dim":
        return _check_int(name, value, minimum=1)
    if name == "fail_status":
        return _check_status(name, value)
    if name == "status_override":
        return _check_status(name, value, optional=True)
    if name == "fail_body":
        if value is not None and not isinstance(value, str | dict):
            raise ValueError(f"fail_body must be a string, a JSON object or null, got {value!r}")
        return value
    if name == "fault_scope":
        return _check_choice(name, value, FAULT_SCOPES)
    if name == "error_style":
        return _check_choice(name, value, ERROR_STYLES, optional=True)
    if name == "loading":
        if value not in (True, False, "refuse"):
            raise ValueError(f"loading must be true, false or 'refuse', got {value!r}")
        return value
    if name == "routes":
        return _check_routes(value)
    if name == "split_at":
        return _check_offsets(value)
    if name == "missing_route_status":
        if value not in (404, 405):
            raise ValueError(f"missing_route_status must be 404 or 405, got {value!r}")
        return value
    if name in ("hang", "crash_before_headers", "sleeping"):
        return _check_bool(name, value)
    if name in ("unknown_model_404", "supports_include_usage"):
        return _check_bool(name, value, optional=True)
    raise AssertionError(name)  # pragma: no cover - every public field has a branch


def updated(current: Switches, changes: Mapping[str, Any]) -> Switches:
    """`current` with `changes` applied. Unknown names raise TypeError (with a suggestion), bad values
    ValueError; nothing is applied unless everything is valid."""
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in SWITCH_NAMES:
            close = difflib.get_close_matches(name, SWITCH_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"unknown fake backend switch {name!r}{hint}")
        clean[name] = _validate(name, value)
    return dataclasses.replace(current, **clean)
