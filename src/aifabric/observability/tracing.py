"""OpenTelemetry traces of API requests (the `otel` extra), exported over OTLP/HTTP.

    tracing:                                   # in the fabric file; absent, this module is never imported
      endpoint: http://collector:4318          # spans go to ENDPOINT/v1/traces
      service_name: aifabric
      sample_ratio: 1.0

One span per request (kind SERVER, `chat chat-fast`) and, under it, one per attempt at a backend (kind
CLIENT, `chat Qwen2.5-7B`), with the GenAI semantic conventions: `gen_ai.operation.name`,
`gen_ai.request.model` (what was asked: the role or alias on the request span, the target's model id on
an attempt), `gen_ai.response.model` (the `model` a non-streamed answer names, else the target's model
id), `gen_ai.provider.name` (`provider_name`: the backend that served, on both spans),
`gen_ai.usage.input_tokens` / `output_tokens` (from the answer's `usage`, streamed or not),
`gen_ai.request.max_tokens` / `temperature`, `error.type` (the failure class of an attempt, the error
type of a request), `server.address` / `server.port` (the backend, on an attempt), plus `aifabric.role`,
`aifabric.backend`, `aifabric.attempts`.

A client's W3C `traceparent` (and `tracestate`) makes the request span its child; every attempt sends
its own span's `traceparent` to the backend, so a traced vLLM continues the same trace. Off (no
`tracing:`), the gateway holds no tracer: the request path pays one `is None` check per request and one
per attempt, and nothing of OpenTelemetry is imported.

Spans are batched and exported from a background thread; `shutdown()` (the gateway closing) flushes.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aifabric.config.schema import TracingConfig
from aifabric.core import Outcome
from aifabric.errors import ApiError

if TYPE_CHECKING:
    from aifabric.http.server import Request, Response, StreamingResponse

__all__ = ["RequestTracer", "backend_attributes", "provider_name"]

_OPERATIONS = {
    "/chat/completions": "chat",
    "/messages": "chat",  # Anthropic's Messages API
    "/responses": "chat",  # OpenAI's Responses API
    "/completions": "text_completion",
    "/embeddings": "embeddings",
}
_PROPAGATOR = TraceContextTextMapPropagator()
# The request span of the request being served, for the forwarder's attempt hooks (same task).
_CURRENT: contextvars.ContextVar[_RequestSpan | None] = contextvars.ContextVar("aifabric_trace", default=None)

Proxy = Callable[["Request", str], Awaitable["Response | StreamingResponse"]]


# gen_ai.provider.name of an OpenAI-compatible API by its host (the GenAI conventions' registry values);
# any other host of the openai kind speaks OpenAI's API: "openai".
_PROVIDER_HOSTS = (
    (".openai.azure.com", "azure.ai.openai"),
    (".cognitiveservices.azure.com", "azure.ai.openai"),
    (".services.ai.azure.com", "azure.ai.inference"),
    (".models.ai.azure.com", "azure.ai.inference"),
    ("api.anthropic.com", "anthropic"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.groq.com", "groq"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "x_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("api.cohere.com", "cohere"),
    ("api.cohere.ai", "cohere"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
)


def provider_name(kind: str, url: str) -> str:
    """`gen_ai.provider.name` for a backend: the conventions' value for the cloud an `openai`-kind
    backend's URL names (`openai`, `azure.ai.openai`, ...); for the self-hosted engines, which the
    registry does not list, the backend's kind (`vllm`, `llamacpp`, `ollama`, ...)."""
    if kind != "openai":
        return kind
    host = (urlsplit(url).hostname or "").lower()
    for suffix, name in _PROVIDER_HOSTS:
        if host == suffix.lstrip(".") or host.endswith(suffix if suffix.startswith(".") else "." + suffix):
            return name
    return "openai"


@functools.lru_cache(maxsize=256)
def backend_attributes(kind: str, url: str) -> tuple[tuple[str, str | int], ...]:
    """The attempt span's attributes of the backend it went to (computed once per backend)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (
        ("gen_ai.provider.name", provider_name(kind, url)),
        ("server.address", parts.hostname or ""),
        ("server.port", port),
    )


class _RequestSpan:
    __slots__ = ("answered", "attempts", "operation", "provider", "span")

    def __init__(self, span: trace.Span, operation: str) -> None:
        self.span = span
        self.operation = operation
        self.attempts: list[trace.Span] = []
        self.provider = ""  # of the latest attempt's backend
        # The served attempt of a non-streamed answer: its span, when it ended (ns) and the target's
        # model id, kept open until the answer's body says which model answered.
        self.answered: tuple[trace.Span, int, str] | None = None

    def finish_answered(self, model: str | None = None) -> None:
        if self.answered is not None:
            span, ended, configured = self.answered
            self.answered = None
            span.set_attribute("gen_ai.response.model", model or configured)
            span.end(end_time=ended)


class RequestTracer:
    def __init__(self, config: TracingConfig, *, schedule_delay: float = 1.0) -> None:
        resource = Resource.create({"service.name": config.service_name})
        sampler = ParentBased(TraceIdRatioBased(config.sample_ratio))
        self.provider = TracerProvider(resource=resource, sampler=sampler)
        exporter = OTLPSpanExporter(endpoint=config.endpoint.rstrip("/") + "/v1/traces", timeout=10)
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay * 1000)
        )
        self.tracer = self.provider.get_tracer("aifabric")

    # -- the request -------------------------------------------------------------------------------

    async def serve(self, request: Request, sub: str, proxy: Proxy) -> Response | StreamingResponse:
        """`proxy(request, sub)` inside the request's span; a stream's span ends with the stream."""
        operation = _OPERATIONS.get(sub, sub.strip("/"))
        parent = _PROPAGATOR.extract(request.headers)
        attributes: dict[str, Any] = {"gen_ai.operation.name": operation, "http.request.method": "POST"}
        requested = _request_fields(request.body, attributes)
        span = self.tracer.start_span(
            f"{operation} {requested}".strip(), context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        state = _RequestSpan(span, operation)
        token = _CURRENT.set(state)
        try:
            response = await proxy(request, sub)
        except ApiError as exc:
            state.finish_answered()
            span.set_attribute("http.response.status_code", exc.status)
            span.set_attribute("error.type", str(exc.code or exc.type))
            span.set_status(Status(StatusCode.ERROR, exc.message[:200]))
            span.end()
            raise
        except BaseException:
            state.finish_answered()
            span.set_status(Status(StatusCode.ERROR))
            span.end()
            raise
        finally:
            _CURRENT.reset(token)
        _served(span, response.headers, response.status)
        if state.provider:
            span.set_attribute("gen_ai.provider.name", state.provider)
        if hasattr(response, "chunks"):  # a stream: its span ends when the stream does
            state.finish_answered()
            response.chunks = _TracedStream(response.chunks, span)
        else:
            model = _usage(span, response.body)
            if model is not None:
                span.set_attribute("gen_ai.response.model", model)
            state.finish_answered(model)
            span.end()
        return response

    # -- attempts (the forwarder's hooks) ----------------------------------------------------------

    def attempt_started(self, req: Any, target: Any) -> list[tuple[str, str]]:
        """A span for the attempt; the `traceparent` header that makes the backend's work its child."""
        state = _CURRENT.get()
        if state is None:
            return []
        backend = target.backend
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": state.operation,
            "gen_ai.request.model": target.model,
            "aifabric.role": target.role,
            "aifabric.backend": backend.name,
        }
        attributes.update(backend_attributes(backend.kind, backend.url))
        state.provider = attributes["gen_ai.provider.name"]
        span = self.tracer.start_span(
            f"{state.operation} {target.model}",
            context=trace.set_span_in_context(state.span),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        state.attempts.append(span)
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        return list(carrier.items())

    def attempt_ended(self, req: Any, target: Any, attempt: Any, seconds: float) -> None:
        state = _CURRENT.get()
        if state is None or not state.attempts:
            return
        span = state.attempts.pop(0)
        if attempt.status is not None:
            span.set_attribute("http.response.status_code", attempt.status)
        if attempt.failure is not None:
            span.set_attribute("error.type", str(attempt.failure))
            span.set_status(Status(StatusCode.ERROR, str(attempt.detail)[:200]))
        elif attempt.outcome is Outcome.ROUTE_MISSING:  # no failure, no answer: a route it lacks
            span.set_attribute("aifabric.attempt.outcome", str(attempt.outcome))
        elif not req.stream:
            # Ended now, but left open until the answer's body names the model that answered.
            state.finish_answered()
            state.answered = (span, time.time_ns(), target.model)
            return
        else:
            span.set_attribute("gen_ai.response.model", target.model)  # a stream's first event may not say
        span.end()

    def shutdown(self) -> None:
        """Export what is queued, then stop the exporter thread."""
        self.provider.shutdown()


def _request_fields(body: bytes, attributes: dict[str, Any]) -> str:
    """The requested model, and the request settings the conventions name, from the JSON body."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(payload, dict):
        return ""
    model = payload.get("model")
    if isinstance(model, str):
        attributes["gen_ai.request.model"] = model
    for key, name in (
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
    ):
        value = payload.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    if payload.get("stream") is True:
        attributes["aifabric.stream"] = True
    return model if isinstance(model, str) else ""


def _served(span: trace.Span, headers: list[tuple[str, str]], status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    for name, value in headers:
        if name == "x-aifabric-model":
            span.set_attribute("gen_ai.response.model", value)
        elif name == "x-aifabric-role":
            span.set_attribute("aifabric.role", value)
        elif name == "x-aifabric-backend":
            span.set_attribute("aifabric.backend", value)
        elif name == "x-aifabric-attempts":
            span.set_attribute("aifabric.attempts", int(value))
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def _usage(span: trace.Span, body: bytes) -> str | None:
    """`usage` of an OpenAI-shaped answer (a whole body, or one SSE event's data) set on `span`; the
    `model` the answer names, if it does."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    model = data.get("model")
    model = model if isinstance(model, str) and model else None
    usage = data.get("usage")
    if usage is None:  # nested in a stream's event: response.completed (Responses), message_start (Messages)
        inner = data.get("response") or data.get("message")
        usage = inner.get("usage") if isinstance(inner, dict) else None
    if not isinstance(usage, dict):
        return model
    # OpenAI's names, then Anthropic's (its message_delta event carries output_tokens only).
    for keys, name in (
        (("prompt_tokens", "input_tokens"), "gen_ai.usage.input_tokens"),
        (("completion_tokens", "output_tokens"), "gen_ai.usage.output_tokens"),
    ):
        value = next((usage[k] for k in keys if isinstance(usage.get(k), int)), None)
        if value is not None:
            span.set_attribute(name, value)
    if isinstance(data.get("id"), str):
        span.set_attribute("gen_ai.response.id", data["id"])
    return model


class _TracedStream:
    """A streamed body passed through unchanged; the span reads its `usage` event and ends with it."""

    def __init__(self, chunks: AsyncIterator[bytes], span: trace.Span) -> None:
        self._chunks = chunks
        self._span = span
        self._ended = False

    def __aiter__(self) -> _TracedStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._end()
            raise
        except BaseException:
            self._end(error=True)
            raise
        if b'"usage"' in chunk:
            for line in chunk.split(b"\n"):
                if line.startswith(b"data: {") and b'"usage"' in line:
                    _usage(self._span, line[6:])
        return chunk

    async def aclose(self) -> None:
        closer = getattr(self._chunks, "aclose", None)
        try:
            if closer is not None:
                await closer()
        finally:
            self._end()

    def _end(self, *, error: bool = False) -> None:
        if self._ended:
            return
        self._ended = True
        if error:
            self._span.set_status(Status(StatusCode.ERROR, "the stream was cut"))
        self._span.end()
