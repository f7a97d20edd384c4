"""OpenTelemetry traces of API requests (the `otel` extra), exported over OTLP/HTTP.

    tracing:                                   # in the fabric file; absent, this module is never imported
      endpoint: http://collector:4318          # spans go to ENDPOINT/v1/traces
      service_name: aifabric
      sample_ratio: 1.0

One span per request (kind SERVER, `chat chat-fast`) and, under it, one per attempt at a backend (kind
CLIENT, `chat Qwen2.5-7B`), with the GenAI semantic conventions: `gen_ai.operation.name`,
`gen_ai.request.model` (what was asked: the role or alias on the request span, the target's model id on
an attempt), `gen_ai.response.model`, `gen_ai.usage.input_tokens` / `output_tokens` (from the answer's
`usage`, streamed or not), `gen_ai.request.max_tokens` / `temperature`, `error.type` (the failure class of
an attempt, the error type of a request), plus `aifabric.role`, `aifabric.backend`, `aifabric.attempts`.

A client's W3C `traceparent` (and `tracestate`) makes the request span its child; every attempt sends
its own span's `traceparent` to the backend, so a traced vLLM continues the same trace. Off (no
`tracing:`), the gateway holds no tracer: the request path pays one `is None` check per request and one
per attempt, and nothing of OpenTelemetry is imported.

Spans are batched and exported from a background thread; `shutdown()` (the gateway closing) flushes.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

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
from aifabric.errors import ApiError

if TYPE_CHECKING:
    from aifabric.http.server import Request, Response, StreamingResponse

__all__ = ["RequestTracer"]

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


class _RequestSpan:
    __slots__ = ("attempts", "operation", "span")

    def __init__(self, span: trace.Span, operation: str) -> None:
        self.span = span
        self.operation = operation
        self.attempts: list[trace.Span] = []


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
            span.set_attribute("http.response.status_code", exc.status)
            span.set_attribute("error.type", str(exc.code or exc.type))
            span.set_status(Status(StatusCode.ERROR, exc.message[:200]))
            span.end()
            raise
        except BaseException:
            span.set_status(Status(StatusCode.ERROR))
            span.end()
            raise
        finally:
            _CURRENT.reset(token)
        _served(span, response.headers, response.status)
        if hasattr(response, "chunks"):  # a stream: its span ends when the stream does
            response.chunks = _TracedStream(response.chunks, span)
        else:
            _usage(span, response.body)
            span.end()
        return response

    # -- attempts (the forwarder's hooks) ----------------------------------------------------------

    def attempt_started(self, req: Any, target: Any) -> list[tuple[str, str]]:
        """A span for the attempt; the `traceparent` header that makes the backend's work its child."""
        state = _CURRENT.get()
        if state is None:
            return []
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": state.operation,
            "gen_ai.request.model": target.model,
            "aifabric.role": target.role,
            "aifabric.backend": target.backend.name,
        }
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
        else:
            span.set_attribute("gen_ai.response.model", target.model)
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


def _usage(span: trace.Span, body: bytes) -> None:
    """`usage` of an OpenAI-shaped answer (a whole body, or one SSE event's data)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(data, dict):
        return
    usage = data.get("usage")
    if usage is None:  # nested in a stream's event: response.completed (Responses), message_start (Messages)
        inner = data.get("response") or data.get("message")
        usage = inner.get("usage") if isinstance(inner, dict) else None
    if not isinstance(usage, dict):
        return
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
