"""How the fake backend answers a request: fault switches first, then the OpenAI API and the probes.

The order follows the real servers: a hung or crashed process never gets to look at the request; a
loading llama-server answers 503 before checking the key; the key is checked before the request is served.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aifabric.testing import _fake_dialects as dialects
from aifabric.testing import _fake_responses as responses
from aifabric.testing import _fake_shapes as shapes
from aifabric.testing._fake_http import ChunkedResponse, HttpRequest, response_head, write_response
from aifabric.testing._fake_state import FakeState
from aifabric.testing._fake_switches import Switches

__all__ = ["Crashed", "Responder"]

# Which kinds serve the routes beyond the OpenAI three (as the real servers do; others answer 404).
_DIALECT_ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/messages": ("vllm", "llamacpp", "ollama"),
    "/v1/messages/count_tokens": ("llamacpp",),
    "/tokenize": ("vllm", "llamacpp"),
    "/v1/rerank": ("vllm", "llamacpp"),
    "/rerank": ("tei",),
    "/v1/audio/transcriptions": ("vllm", "llamacpp", "openai"),
    "/v1/responses": ("vllm", "llamacpp", "ollama", "openai"),
    "/v1/responses/input_tokens": ("openai", "llamacpp"),
}
_INFERENCE_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/embed", *_DIALECT_ROUTES}
)
_FASTAPI_KINDS = ("vllm", "llama-cpp-python")  # their unknown routes answer {"detail": "Not Found"}


class Crashed(Exception):
    """A switch dropped the connection on purpose; there is nothing more to write on it."""


class _Refused(Exception):
    """The request is answered with an error before any work: `status` and `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _read_request(raw: bytes, sw: Switches, style: str) -> tuple[dict[str, Any], str]:
    """The request's JSON object and the model that answers it: the asked one when served; an unknown
    one is a 404 where the kind's servers refuse it, else the loaded model answers (llama.cpp-style)."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _Refused(400, "The request body must be a JSON object.")
    model = body.get("model")
    if model in sw.models:
        return body, str(model)
    if model is not None and sw.resolved_unknown_model_404():
        raise _Refused(404, shapes.unknown_model_message(style, str(model)))
    return body, sw.models[0]


def _retry_after(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class Responder:
    def __init__(self, state: FakeState, wait_until: Callable[[Callable[[], bool]], Awaitable[None]]) -> None:
        self._state = state
        self._wait_until = wait_until

    def _crash(self, writer: asyncio.StreamWriter, *, abort: bool) -> None:
        self._state.bump("crashes")
        if abort:
            # Dropped at once, with whatever the transport still buffers: like a killed process, the
            # kernel ends the connection and the client sees a body cut short (no terminating chunk).
            writer.transport.abort()
        else:
            writer.close()
        raise Crashed

    async def handle(self, request: HttpRequest, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False closes the connection. Raises Crashed when a switch dropped it."""
        path = request.path
        self._state.record(request)
        sw = self._state.switches
        on_v1 = path.startswith("/v1/")
        inference = request.method == "POST" and path in _INFERENCE_PATHS
        in_scope = {"inference": inference, "api": on_v1 or inference, "all": True}[sw.fault_scope]
        if in_scope:
            if sw.hang:
                await self._wait_until(lambda: not self._state.switches.hang)
                sw = self._state.switches
            if sw.crash_before_headers:
                self._crash(writer, abort=False)
            if sw.latency_ms:
                await asyncio.sleep(sw.latency_ms / 1000)
        keep = request.keep_alive
        style = sw.resolved_error_style(path)
        retry = [("Retry-After", _retry_after(sw.retry_after))] if sw.retry_after is not None else []

        def fail(status: int, message: str, headers: list[tuple[str, str]]) -> bool:
            write_response(
                writer, status, shapes.error_body(style, status, message), headers=headers, keep_alive=keep
            )
            return keep

        if sw.loading_503 and (path == "/health" or on_v1):
            self._state.bump("injected_failures")
            return fail(503, "Loading model", retry)
        if (
            sw.api_key is not None
            and on_v1
            and request.headers.get("authorization") != f"Bearer {sw.api_key}"
        ):
            return fail(401, "Invalid API key", [])
        if in_scope and (status := self._state.take_failure()) is not None:
            if sw.fail_body is None:
                return fail(status, f"fake backend: injected failure (HTTP {status})", retry)
            body = sw.fail_body if isinstance(sw.fail_body, str) else json.dumps(sw.fail_body)
            write_response(writer, status, body.encode(), headers=retry, keep_alive=keep)
            return keep
        if sw.kind == "vllm" and request.method == "POST" and path in ("/sleep", "/wake_up"):
            self._state.update({"sleeping": path == "/sleep"})  # vLLM's sleep mode endpoints
            write_response(writer, 200, b"", keep_alive=keep)
            return keep
        if sw.sleeping and inference:
            return fail(503, "the engine is sleeping: POST /wake_up first", [])
        if inference and path in _DIALECT_ROUTES:
            if not sw.serves_route(path, _DIALECT_ROUTES[path]):
                return self._no_route(request, writer, sw)
            with self._state.serving():
                return await self._dialect(request, writer, sw, style, in_scope)
        if inference:
            with self._state.serving():
                return await self._inference(request, writer, sw, style, in_scope)
        return self._probe(request, writer, sw, style)

    def _no_route(self, request: HttpRequest, writer: asyncio.StreamWriter, sw: Switches) -> bool:
        """A route this server lacks, answered as the real one answers any unknown route."""
        status = sw.missing_route_status
        content_type, headers = "application/json", [("Allow", "GET")] if status == 405 else []
        if status == 405:
            body = b'{"detail":"Method Not Allowed"}'
        elif sw.kind in _FASTAPI_KINDS:
            body = b'{"detail":"Not Found"}'
        elif sw.kind == "openai":
            # OpenAI's answer to an unknown URL: no code, unlike its unknown model's "model_not_found"
            message = f"Invalid URL ({request.method} {request.path})"
            error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
            body = json.dumps({"error": error}).encode()
        elif sw.kind == "llamacpp":
            body = shapes.error_body("llama-server", 404, "File Not Found")
        elif sw.kind == "ollama":  # Go's net/http
            body, content_type = b"404 page not found", "text/plain"
        else:  # TEI (axum): an empty 404
            body = b""
        write_response(
            writer, status, body, content_type=content_type, headers=headers, keep_alive=request.keep_alive
        )
        return request.keep_alive

    def _probe(self, request: HttpRequest, writer: asyncio.StreamWriter, sw: Switches, style: str) -> bool:
        keep, kind, path = request.keep_alive, sw.kind, request.path
        answer: tuple[int, bytes, str] | None = None
        if request.method in ("GET", "HEAD"):
            answer = self._probe_answer(kind, path, sw)
        if answer is None:
            body = (
                b'{"detail":"Not Found"}'
                if kind in _FASTAPI_KINDS
                else shapes.error_body(style, 404, "Not Found")
            )
            answer = (404, body, "application/json")
        status, body, content_type = answer
        head_only = request.method == "HEAD"
        write_response(writer, status, body, content_type=content_type, keep_alive=keep, head_only=head_only)
        return keep

    def _probe_answer(self, kind: str, path: str, sw: Switches) -> tuple[int, bytes, str] | None:
        json_type, text_type = "application/json", "text/plain; charset=utf-8"
        inflight = self._state.inflight
        if path == "/v1/models":
            return 200, shapes.models_body(kind, sw.models), json_type
        if path == "/health" and kind in ("vllm", "tei"):
            return 200, b"", json_type
        if path == "/health" and kind == "llamacpp":
            return 200, b'{"status":"ok"}', json_type
        if path == "/metrics":
            running = sw.num_requests_running if sw.num_requests_running is not None else inflight
            text = shapes.metrics_text(
                kind, sw.models[0], running, sw.num_requests_waiting, sw.kv_cache_usage
            )
            return None if text is None else (200, text, "text/plain; version=0.0.4; charset=utf-8")
        if path == "/is_sleeping" and kind == "vllm":
            return 200, json.dumps({"is_sleeping": sw.sleeping}).encode(), json_type
        if path == "/slots" and kind == "llamacpp":
            busy = sw.slots_busy if sw.slots_busy is not None else inflight
            return 200, shapes.slots_body(sw.slots, min(busy, sw.slots)), json_type
        if kind == "ollama":
            if path == "/":
                return 200, b"Ollama is running", text_type
            if path == "/api/tags":
                return 200, shapes.ollama_tags_body(sw.models), json_type
            if path == "/api/version":
                return 200, b'{"version":"0.0.0-fake"}', json_type
        if kind == "tei" and path == "/info":
            info = {
                "model_id": sw.models[0],
                "model_dtype": "float32",
                "max_input_length": 512,
                "version": "fake",
            }
            return 200, json.dumps(info).encode(), json_type
        return None

    async def _inference(
        self, request: HttpRequest, writer: asyncio.StreamWriter, sw: Switches, style: str, in_scope: bool
    ) -> bool:
        keep = request.keep_alive

        def fail(status: int, message: str) -> bool:
            write_response(writer, status, shapes.error_body(style, status, message), keep_alive=keep)
            return keep

        try:
            body, served = _read_request(request.body, sw, style)
        except _Refused as exc:
            return fail(exc.status, exc.message)
        crash = sw.crash_after_chunks if in_scope else None
        rid, created = f"fake-{self._state.next_id()}", int(time.time())
        path = request.path
        if path in ("/v1/embeddings", "/embed"):
            texts = shapes.embedding_inputs(body.get("input", body.get("inputs")))
            if texts is None:
                return fail(400, "input must be a string, a list of strings or token ids")
            if path == "/embed":
                vectors = [shapes.embed_vector(t, sw.embedding_dim) for t in texts]
                return await self._send(writer, json.dumps(vectors).encode(), keep, crash)
            payload = shapes.embeddings_body(served, texts, sw.embedding_dim, body.get("encoding_format"))
            return await self._send(writer, payload, keep, crash)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        options = body.get("stream_options")
        include_usage = (
            isinstance(options, dict) and options.get("include_usage") is True and sw.resolved_include_usage()
        )
        stream = body.get("stream") is True
        if path == "/v1/chat/completions":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return fail(400, "messages must be a non-empty list")
            last = shapes.last_user_text(messages)
            prompt = shapes.prompt_tokens_of_messages(messages)
            call = dialects.chat_tool_call(body, last)
            if call is not None:
                if stream:
                    events = dialects.chat_tool_chunks(rid, created, served, *call, prompt, include_usage)
                    return await self._stream(writer, events, keep, crash, sw.token_delay_ms)
                return await self._send(
                    writer, dialects.chat_tool_body(rid, created, served, *call, prompt), keep, crash
                )
            result = dialects.chat_tool_result(messages)
            said = last if result is None else f"tool said: {result}"
            text = sw.reply if sw.reply is not None else f"[{served}] {said}"
            schema = responses.chat_schema(body)
            if schema is not None and result is None:
                text = responses.structured(schema, last)
            parts, finish = shapes.reply_tokens(text, sw.tokens, max_tokens)
            if stream:
                events = shapes.chat_chunks(rid, created, served, parts, finish, prompt, include_usage)
                return await self._stream(writer, events, keep, crash, sw.token_delay_ms)
            return await self._send(
                writer, shapes.chat_body(rid, created, served, parts, finish, prompt), keep, crash
            )
        prompts = body.get("prompt")
        prompt_list = [prompts] if isinstance(prompts, str) else prompts
        if (
            not isinstance(prompt_list, list)
            or not prompt_list
            or not all(isinstance(p, str) for p in prompt_list)
        ):
            return fail(400, "prompt must be a string or a non-empty list of strings")
        texts = [sw.reply if sw.reply is not None else f"[{served}] {p}" for p in prompt_list]
        choices = [shapes.reply_tokens(t, sw.tokens, max_tokens) for t in texts]
        prompt = sum(shapes.word_count(p) for p in prompt_list)
        if stream:
            events = shapes.completion_chunks(rid, created, served, choices, prompt, include_usage)
            return await self._stream(writer, events, keep, crash, sw.token_delay_ms)
        return await self._send(
            writer, shapes.completion_body(rid, created, served, choices, prompt), keep, crash
        )

    async def _dialect(
        self, request: HttpRequest, writer: asyncio.StreamWriter, sw: Switches, style: str, in_scope: bool
    ) -> bool:
        """Messages, count_tokens, /tokenize, rerank and transcription, each as its servers answer."""
        keep, path = request.keep_alive, request.path
        crash = sw.crash_after_chunks if in_scope else None
        rid = f"fake-{self._state.next_id()}"

        def fail(status: int, message: str) -> bool:
            write_response(writer, status, shapes.error_body(style, status, message), keep_alive=keep)
            return keep

        if path == "/v1/audio/transcriptions":
            fields, size = dialects.multipart_fields(request.headers.get("content-type", ""), request.body)
            if "file" not in fields:
                return fail(400, "a `file` part is required")
            model = fields.get("model", sw.models[0])
            text = sw.reply if sw.reply is not None else f"[{model}] {size} bytes of audio"
            response_format = fields.get("response_format", "json")
            if sw.kind == "llamacpp" and response_format != "json":
                return fail(400, "Only 'json' response_format is supported for transcription")
            if fields.get("stream", "").strip().lower() == "true":
                usage = fields.get("stream_include_usage", "").strip().lower() == "true"
                events = dialects.transcription_events(
                    sw.kind, text, rid, model=model, size=size, include_usage=usage
                )
                return await self._stream(writer, events, keep, crash, sw.token_delay_ms)
            if response_format == "text":
                write_response(
                    writer, 200, (text + "\n").encode(), content_type="text/plain", keep_alive=keep
                )
                return keep
            return await self._send(writer, dialects.transcription_body(sw.kind, text, size), keep, crash)
        try:
            body, served = _read_request(request.body, sw, style)
        except _Refused as exc:
            return fail(exc.status, exc.message)
        if path.startswith("/v1/responses"):
            return await self._responses(request, writer, sw, body, served, rid, crash)
        if path in ("/v1/rerank", "/rerank"):
            query = body.get("query")
            documents = body.get("documents", body.get("texts"))
            if not isinstance(query, str) or not isinstance(documents, list) or not documents:
                return fail(400, "query (a string) and documents (a non-empty list) are required")
            texts = [
                d if isinstance(d, str) else str(d.get("text", "")) if isinstance(d, dict) else ""
                for d in documents
            ]
            answer = dialects.rerank_body(sw.kind, served, query, texts, body.get("top_n"), rid)
            return await self._send(writer, answer, keep, crash)
        if path == "/tokenize":
            messages = body.get("messages")
            count = (
                shapes.prompt_tokens_of_messages(messages) + 4 * len(messages or ())
                if isinstance(messages, list)
                else shapes.word_count(str(body.get("prompt", "")))
            )
            return await self._send(writer, dialects.tokenize_body(count), keep, crash)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return fail(400, "messages: Field required")
        prompt = dialects.anthropic_prompt_tokens(body)
        if path == "/v1/messages/count_tokens":
            return await self._send(writer, json.dumps({"input_tokens": prompt}).encode(), keep, crash)
        text, after_tool = dialects.anthropic_text(body)
        tool = dialects.anthropic_tool(body, text, after_tool)
        said = f"tool said: {text}" if after_tool else text
        reply = sw.reply if sw.reply is not None else f"[{served}] {said}"
        parts, finish = shapes.reply_tokens(reply, sw.tokens, body.get("max_tokens"))
        stop = "max_tokens" if finish == "length" else "end_turn"
        if body.get("stream") is True:
            events = dialects.message_events(rid, served, parts, stop, prompt, tool)
            return await self._stream(writer, events, keep, crash, sw.token_delay_ms)
        return await self._send(
            writer, dialects.message_body(rid, served, parts, stop, prompt, tool), keep, crash
        )

    async def _responses(
        self,
        request: HttpRequest,
        writer: asyncio.StreamWriter,
        sw: Switches,
        body: dict[str, object],
        served: str,
        rid: str,
        crash: int | None,
    ) -> bool:
        """OpenAI's Responses API, as vLLM, llama-server, Ollama and OpenAI serve it (`_fake_responses`)."""
        keep, style = request.keep_alive, sw.resolved_error_style(request.path)
        messages = responses.messages_of_responses_input(body)
        if messages is None:
            error = shapes.error_body(style, 400, "input must be a string or a list of items")
            write_response(writer, 400, error, keep_alive=keep)
            return keep
        if request.path == "/v1/responses/input_tokens":
            return await self._send(writer, responses.input_tokens_body(messages), keep, crash)
        llama_server = sw.kind == "llamacpp"
        turn = responses.native_turn(body, served, sw.reply, messages, text_format=not llama_server)
        parts, finish = responses.turn_parts(turn, sw.tokens, body.get("max_output_tokens"))
        if llama_server and finish == "length":
            finish = "stop"  # cut all the same, but llama-server's Response says `completed`
        prompt = shapes.prompt_tokens_of_messages(messages)
        created = int(time.time())
        if body.get("stream") is True:
            events = responses.responses_events(
                body, rid, created, served, turn, parts, finish, prompt, content_index=not llama_server
            )
            return await self._stream(writer, events, keep, crash, sw.token_delay_ms)
        payload = responses.responses_body(body, rid, created, served, turn, parts, finish, prompt)
        return await self._send(writer, payload, keep, crash)

    async def _send(
        self, writer: asyncio.StreamWriter, payload: bytes, keep: bool, crash: int | None
    ) -> bool:
        if crash is None:
            write_response(writer, 200, payload, keep_alive=keep)
            return keep
        # A crash switch on a non-streamed answer: the headers and half the body, then the connection dies.
        head = response_head(
            200,
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
            keep_alive=keep,
        )
        writer.write(head + payload[: len(payload) // 2])
        await self._flushed(writer)
        self._crash(writer, abort=True)
        return False  # pragma: no cover - _crash raises

    @staticmethod
    async def _flushed(writer: asyncio.StreamWriter) -> None:
        """Wait until the kernel has what was written: abort() discards the transport's buffer."""
        await writer.drain()
        for _ in range(1000):
            if writer.transport.get_write_buffer_size() == 0:
                return
            await asyncio.sleep(0.001)

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        events: list[bytes],
        keep: bool,
        crash: int | None,
        delay_ms: float,
    ) -> bool:
        response = ChunkedResponse(writer)
        await response.start(200, "text/event-stream", [("Cache-Control", "no-cache")], keep_alive=keep)
        failing = self._state.switches.stream_error
        if failing is not None and events:
            events = [events[0], *dialects.stream_error_events(events[0], failing)]
        if self._state.switches.split_at is not None:
            events = _cut(b"".join(events), self._state.switches.split_at)
        for i, event in enumerate(events):
            if crash is not None and i == crash:
                await self._flushed(writer)
                self._crash(writer, abort=True)
            if i and delay_ms:
                await asyncio.sleep(delay_ms / 1000)
            await response.send(event)
        await response.end()
        return keep


def _cut(body: bytes, offsets: tuple[int, ...]) -> list[bytes]:
    """`body` in pieces cut at `offsets` (those past its end ignored)."""
    bounds = [0, *(o for o in offsets if o < len(body)), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds)]
