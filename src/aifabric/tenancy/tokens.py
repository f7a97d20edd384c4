"""Token counts for the usage ledger: the backend's own figures where it gave them, else counted.

`parse_usage` reads the `usage` object a backend wrote (OpenAI's `prompt_tokens`/`completion_tokens`,
or `input_tokens`/`output_tokens`). Where there is none (a stream without a usage chunk or cut before
it, an attempt that timed out or whose client left, a backend that does not report it), the prompt is
counted with the model's own tokenizer when the model is local (see `LocalTokenizers`: a local
llama-server is asked, with its own chat template and tokenizer; a llama-cpp-python model's GGUF
vocabulary and template are loaded beside the gateway), else estimated at ~4 characters a token; such
rows are marked estimated.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson

__all__ = [
    "LocalTokenizers",
    "ServerCounter",
    "estimate_completion",
    "estimate_prompt",
    "parse_usage",
    "prompt_text",
    "reported_usage",
    "stream_tokens",
    "total_tokens",
]

log = logging.getLogger("aifabric.usage")

_CHARS_PER_TOKEN = 4

Counter = Callable[[dict[str, Any]], int]


def parse_usage(tail: bytes) -> tuple[int, int] | None:
    """(tokens in, tokens out) from the `"usage": {...}` objects in `tail` (OpenAI's `prompt_tokens` /
    `completion_tokens`, Anthropic's `input_tokens` / `output_tokens`); of several (an Anthropic stream
    counts input in `message_start`, output in `message_delta`), the largest of each. None when no
    object holds a prompt count."""
    at = tail.find(b'"usage"')
    if at < 0:
        return None
    start = tail.find(b"{", at, at + 17)
    end = tail.find(b"}", start) if start > 0 else -1
    if end > 0 and tail.find(b"{", start + 1, end) < 0 and tail.find(b'"usage"', end) < 0:
        # One flat object, the usual case (a non-streamed answer, an OpenAI stream's last chunk).
        return _counts(_loads(tail[start : end + 1]))
    tokens_in = tokens_out = -1
    while at >= 0:
        usage = _object_after(tail, at)
        if isinstance(usage, dict):
            got_in = usage.get("prompt_tokens", usage.get("input_tokens"))
            got_out = usage.get("completion_tokens", usage.get("output_tokens"))
            if isinstance(got_in, int) and not isinstance(got_in, bool):
                tokens_in = max(tokens_in, got_in)
            if isinstance(got_out, int) and not isinstance(got_out, bool):
                tokens_out = max(tokens_out, got_out)
        at = tail.find(b'"usage"', at + 7)
    if tokens_in < 0:
        return None
    return tokens_in, max(0, tokens_out)


def reported_usage(body: bytes, at: int) -> tuple[int, int, int] | None:
    """(tokens in, tokens out, total) of a non-streamed answer whose last `"usage"` is at offset `at`,
    read once on the request path for both the ledger's row and a tokens-per-minute limit; None when
    it is not one flat object of OpenAI's or Anthropic's counts (nested details, a Responses usage:
    then the ledger parses the tail, `parse_usage`, and the limit reads `total_tokens`). The total is
    `total_tokens` where the backend gave one, else input plus output."""
    end = body.find(b"}", at)
    if end < 0:
        return None
    # `"usage": {...}` braced is an object of one key; a nested `{` ends it early: not JSON, None.
    wrapped = _loads(b"{" + body[at : end + 1] + b"}")
    usage = wrapped.get("usage") if type(wrapped) is dict else None
    counts = _counts(usage)
    if counts is None:
        return None
    assert type(usage) is dict  # _counts said so
    total = usage.get("total_tokens")
    if type(total) is not int or total < 0:
        total = counts[0] + counts[1]
    return counts[0], counts[1], total


def _counts(usage: object) -> tuple[int, int] | None:
    # `type(x) is` rather than isinstance: a bool is not a count, and this runs once per ledger row.
    if type(usage) is not dict:
        return None
    got_in = usage.get("prompt_tokens")
    if got_in is None:
        got_in = usage.get("input_tokens")
    if type(got_in) is not int or got_in < 0:
        return None
    got_out = usage.get("completion_tokens")
    if got_out is None:
        got_out = usage.get("output_tokens")
    return got_in, got_out if type(got_out) is int and got_out > 0 else 0


def _loads(data: bytes) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _object_after(data: bytes, at: int) -> object:
    """The JSON object that starts at the first `{` after offset `at` (nested objects included:
    Anthropic's usage holds `cache_creation: {...}`), or None."""
    start = data.find(b"{", at)
    if start < 0 or start - at > 16:
        return None
    end = data.find(b"}", start)
    if end > 0 and data.find(b"{", start + 1, end) < 0:  # flat, the usual case: one C call
        try:
            return orjson.loads(data[start : end + 1])
        except orjson.JSONDecodeError:
            return None
    # Nested: from each `}` to the next, count the `{` in between (C calls, not a loop over bytes).
    depth, pos, limit = 1, start + 1, min(len(data), start + 2048)
    while True:
        end = data.find(b"}", pos, limit)
        if end < 0:
            return None
        depth += data.count(b"{", pos, end) - 1
        if depth == 0:
            try:
                return orjson.loads(data[start : end + 1])
            except orjson.JSONDecodeError:
                return None
        pos = end + 1


def total_tokens(body: bytes) -> int:
    """The tokens a non-streamed answer reports, or -1 when it reports none: `usage.total_tokens`
    (chat completions, Responses), else input plus output (Anthropic's `input_tokens` +
    `output_tokens`, which has no total). Read from the answer's last `"usage"` on, not by parsing
    the whole answer (it ends the body of every API that has it)."""
    at = body.rfind(b'"usage"')
    usage = _object_after(body, at) if at >= 0 else None
    if type(usage) is not dict:
        return -1
    if "total_tokens" in usage:
        total = usage["total_tokens"]
        return total if type(total) is int and total >= 0 else -1
    counts = _counts(usage)
    return -1 if counts is None else counts[0] + counts[1]


def stream_tokens(usage: bytes | None, payload: dict[str, Any], counted_out: int) -> int:
    """The tokens a streamed answer cost: from the usage objects it carried (`usage`, as the stream's
    UsageTap kept them), else the prompt estimated and the content events counted (`counted_out`)."""
    counts = parse_usage(usage) if usage is not None else None
    if counts is None:
        return estimate_prompt(payload) + counted_out
    return counts[0] + counts[1]


def prompt_text(payload: dict[str, Any]) -> str:
    """The text of a request's prompt: chat messages' content, a completion prompt, embeddings input."""
    parts: list[str] = []
    for message in payload.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    for key in ("prompt", "input"):
        value = payload.get(key)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(v for v in value if isinstance(v, str))
    return "\n".join(parts)


def estimate_prompt(payload: dict[str, Any]) -> int:
    """~4 characters a token, plus a few for each chat message's role markers."""
    messages = payload.get("messages")
    markers = 4 * len(messages) if isinstance(messages, list) else 0
    return max(1, (len(prompt_text(payload)) + markers) // _CHARS_PER_TOKEN)


def estimate_completion(output: bytes) -> int:
    """Completion tokens of a non-streamed answer that reported none: its text, ~4 characters a token."""
    try:
        body = orjson.loads(output)
    except orjson.JSONDecodeError:
        return len(output) // _CHARS_PER_TOKEN
    text = 0
    for choice in body.get("choices") or () if isinstance(body, dict) else ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else choice.get("text")
        if isinstance(content, str):
            text += len(content)
    return text // _CHARS_PER_TOKEN


class LocalTokenizers:
    """Prompt counters for local llama.cpp models, by backend name: a local llama-server's own count
    (`servers`: backend -> its origin, asked over HTTP: for the ledger's writer thread only), or a
    llama-cpp-python model's GGUF vocabulary and chat template (`gguf_paths`), loaded lazily
    (vocabulary only, no weights) in the thread that asks first."""

    def __init__(
        self, gguf_paths: dict[str, str], servers: dict[str, tuple[str, str | None]] | None = None
    ) -> None:
        self._paths = gguf_paths
        # backend -> (its origin, its api_key: a llama-server started with --api-key wants it on
        # /tokenize and /apply-template too)
        self._servers = {
            name: ServerCounter(origin, api_key=key) for name, (origin, key) in (servers or {}).items()
        }
        self._counters: dict[str, Counter | None] = {}
        self._lock = threading.Lock()

    def loaded(self, backend: str) -> Counter | None:
        """The counter if it is loaded already (never loads: for the event loop)."""
        return self._counters.get(backend)

    def warm(self) -> None:
        """Load every counter now (from a thread): a GGUF's vocabulary takes a fraction of a second."""
        for backend in self._paths:
            self.counter(backend)

    def counter(self, backend: str) -> Counter | None:
        """The backend's counter (may block: loads a GGUF's vocabulary, or asks a server)."""
        server = self._servers.get(backend)
        if server is not None:
            return server
        if backend not in self._paths:
            return None
        with self._lock:
            if backend not in self._counters:
                self._counters[backend] = _load_gguf_counter(self._paths[backend])
            return self._counters[backend]


# Straight to the server, whatever HTTP(S)_PROXY says: it is a local process (often on loopback),
# which a proxy would not reach, or would see the prompts and the key.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerCounter:
    """A local llama-server's own count of a prompt: its chat template (`POST /apply-template`), then
    its tokenizer (`POST /tokenize`, special tokens added as for a request): the figure it reports as
    `prompt_tokens` for the same messages. Blocking HTTP, bounded by `timeout`: for the ledger's
    writer thread, never the event loop. A server that cannot be reached is not asked again for
    `pause` seconds (the rows meanwhile are estimated), so a stopped model does not slow the ledger."""

    def __init__(
        self,
        origin: str,
        *,
        api_key: str | None = None,
        timeout: float = 2.0,
        pause: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.origin = origin.rstrip("/")
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._timeout = timeout
        self._pause = pause
        self._clock = clock
        self._away_until = 0.0

    def __call__(self, payload: dict[str, Any]) -> int:
        if self._away_until and self._clock() < self._away_until:
            return estimate_prompt(payload)
        try:
            messages = payload.get("messages")
            text: object = prompt_text(payload)
            if isinstance(messages, list):
                text = self._post("/apply-template", {"messages": messages}).get("prompt")
                if not isinstance(text, str):
                    raise ValueError("/apply-template answered no prompt")
            tokens = self._post("/tokenize", {"content": text, "add_special": True}).get("tokens")
            if not isinstance(tokens, list):
                raise ValueError("/tokenize answered no tokens")
        except urllib.error.HTTPError as exc:
            if exc.code in (400, 422):  # it refused this prompt (a shape its template rejects)
                log.info("llama-server %s refused to count a prompt (HTTP %s)", self.origin, exc.code)
            else:  # no such route (not a llama-server), or failing: estimate for a while
                self._away(f"HTTP {exc.code}")
            return estimate_prompt(payload)
        except (OSError, ValueError) as exc:  # away, or no llama-server answering: estimate for a while
            self._away(str(exc))
            return estimate_prompt(payload)
        self._away_until = 0.0
        return len(tokens)

    def _away(self, why: str) -> None:
        if not self._away_until:  # once per outage
            log.warning(
                "cannot count prompt tokens with the llama-server at %s (%s): estimated for %g s",
                self.origin,
                why,
                self._pause,
            )
        self._away_until = self._clock() + self._pause

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.origin + path, orjson.dumps(body), self._headers)
        with _DIRECT.open(request, timeout=self._timeout) as answer:
            data = orjson.loads(answer.read())
        if not isinstance(data, dict):
            raise ValueError("an answer that is not a JSON object")
        return data


def _load_gguf_counter(path: str) -> Counter | None:
    try:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    except ImportError:  # the local extra is not installed: estimates it is
        return None
    try:
        llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    except Exception as exc:  # a file that is no GGUF: say so once, estimate
        log.warning("cannot read the tokenizer of %s (%s): prompt tokens will be estimated", path, exc)
        return None
    meta = llm.metadata
    template = meta.get("tokenizer.chat_template")

    def piece(key: str) -> str:
        token = meta.get(key)
        return llm.detokenize([int(token)]).decode("utf-8", "replace") if token is not None else ""

    formatter = (
        Jinja2ChatFormatter(
            template,
            eos_token=piece("tokenizer.ggml.eos_token_id"),
            bos_token=piece("tokenizer.ggml.bos_token_id"),
        )
        if template
        else None
    )

    def count(payload: dict[str, Any]) -> int:
        messages = payload.get("messages")
        add_bos = True
        if formatter is not None and isinstance(messages, list):
            try:
                # As llama-cpp-python's server does: the template's text, BOS only if it added none.
                formatted = formatter(messages=messages)
                text, add_bos = formatted.prompt, not formatted.added_special
            except Exception:  # a message the template refuses: count its text alone
                text = prompt_text(payload)
        else:
            text = prompt_text(payload)
        return len(llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    return count
