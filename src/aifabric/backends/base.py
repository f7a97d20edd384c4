"""One narrow adapter per backend kind: how to probe it (costing no tokens) and how to read its errors.

Every kind speaks the OpenAI wire format for requests; they differ in how they say "I am up",
"still loading", "saturated", which model ids they serve, and how their error bodies look. An
adapter is stateless; `adapter_for(kind)` returns the shared instance.

A backend's configured URL is its OpenAI base URL and includes `/v1` ("http://h:8000/v1"); the
health routes of vLLM, llama-server, TEI and Ollama live at the origin ("http://h:8000/health").
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit, urlunsplit

from aifabric.backends._drift import check_models, closest_model, exact_match
from aifabric.backends._errors import (
    classify_response,
    normalize_error_body,
    parse_json,
    route_missing,
)
from aifabric.config.schema import BACKEND_KINDS, BackendConfig, ClientApi
from aifabric.config.show import redact_url
from aifabric.core import BackendState, FailureClass, ProbeResult
from aifabric.errors import UpstreamFailure
from aifabric.http.client import Origin, split_url

__all__ = [
    "BackendAdapter",
    "ProbeContext",
    "ProbeFailed",
    "ProbeHttp",
    "RequestField",
    "adapter_for",
    "check_models",
    "closest_model",
    "model_ids",
    "origin_of",
    "unix_routes",
]

_MAX_PROBE_BODY = 4 * 1024 * 1024


class _Response(Protocol):
    """What a probe reads of `aifabric.http.client.UpstreamResponse`."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> dict[str, str]: ...

    async def read(self) -> bytes: ...

    def close(self) -> object: ...


class ProbeHttp(Protocol):
    """What a probe needs from `aifabric.http.client.UpstreamClient`."""

    async def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        timeout: float | None = None,
    ) -> _Response: ...


class ProbeFailed(Exception):
    """Raised inside an adapter's `_probe` to end it with a failed result."""

    def __init__(self, state: BackendState, reason: str, failure: FailureClass | None) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason
        self.failure = failure


def unix_routes(backends: Iterable[BackendConfig]) -> dict[Origin, str]:
    """Origin -> socket, for every backend with `unix_socket:`. The client keeps its pools by origin
    (scheme, host, port); `UpstreamClient.route_unix` sends such an origin's requests and probes through
    the socket, while the url still gives the path and the Host header."""
    return {split_url(b.url)[0]: b.unix_socket for b in backends if b.unix_socket}


def origin_of(url: str) -> str:
    """ "http://h:8000/v1" -> "http://h:8000": where health routes live."""
    parts = urlsplit(url.rstrip("/"))
    path = parts.path
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def model_ids(doc: Any) -> tuple[str, ...]:
    """Ids from an OpenAI model list {"data": [{"id": ...}, ...]}."""
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        return ()
    return tuple(m["id"] for m in doc["data"] if isinstance(m, dict) and isinstance(m.get("id"), str))


class ProbeContext:
    """The HTTP side of one probe: GETs with the backend's key, the first request's latency."""

    def __init__(
        self,
        http: ProbeHttp,
        backend: BackendConfig,
        timeout: float,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.http = http
        self.backend = backend
        self.timeout = timeout
        self.base = backend.url.rstrip("/")
        self.origin = origin_of(backend.url)
        self.shown_origin = redact_url(self.origin)  # for reasons: never a password from the URL
        self._clock = clock
        self.latency: float | None = None
        self._headers: list[tuple[str, str]] = [("accept", "application/json")]
        if backend.api_key:
            self._headers.append(("authorization", f"Bearer {backend.api_key.reveal()}"))

    async def get(self, url: str) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body); raises UpstreamFailure on I/O failure (refused, timeout)."""
        start = self._clock()
        try:
            # The client's timeout covers the response headers; the body must not hang a probe either.
            async with asyncio.timeout(self.timeout):
                resp = await self.http.request("GET", url, headers=self._headers, timeout=self.timeout)
                try:
                    body: bytes = await resp.read()
                finally:
                    closed = resp.close()
                    if inspect.isawaitable(closed):
                        await closed
        except TimeoutError:
            raise UpstreamFailure(
                FailureClass.TIMEOUT, f"no complete answer within {self.timeout:g}s"
            ) from None
        if self.latency is None:
            self.latency = self._clock() - start
        return resp.status, resp.headers, body[:_MAX_PROBE_BODY]

    async def get_optional(self, url: str) -> bytes | None:
        """An optional endpoint (load signals): its body when it answers 200, else None. The backend
        already answered its health check, so a failure here is no verdict on it."""
        try:
            status, _, body = await self.get(url)
        except UpstreamFailure:
            return None
        return body if status == 200 else None

    async def get_ok(self, url: str, what: str, adapter: BackendAdapter) -> tuple[dict[str, str], bytes]:
        """A GET that must answer 2xx; anything else ends the probe with a classified reason."""
        status, headers, body = await self.get(url)
        if 200 <= status < 300:
            return headers, body
        raise adapter.failed_probe(status, headers, body, what)

    async def models(self, adapter: BackendAdapter) -> tuple[str, ...]:
        _, body = await self.get_ok(f"{self.base}/models", "GET /v1/models", adapter)
        return model_ids(parse_json(body))


class RequestField(enum.StrEnum):
    """The closed set of request fields a kind's native route may accept without honouring
    (`BackendAdapter.unhonoured`): it ignores the field, or acts on it but answers as if it had not
    (a cut answer said to be complete). Each names a field of a client API's request and the values
    of it that matter; the API's dialect says which of them a request sets (once per request)."""

    # Responses `text.format` of type json_schema or json_object (structured output); "text" asks nothing.
    TEXT_FORMAT = "text.format"
    # Responses `max_output_tokens` set to an integer: an answer it cuts must say `status: incomplete`
    # with `incomplete_details.reason: max_output_tokens` (and a stream end with response.incomplete).
    MAX_OUTPUT_TOKENS = "max_output_tokens"


class BackendAdapter:
    """Probe and error reading for one kind. Subclasses implement `_probe`."""

    kind: ClassVar[str] = ""
    probe_paths: ClassVar[tuple[str, ...]] = ()
    # Whether the kind streams a final usage chunk on `stream_options.include_usage`.
    supports_include_usage: ClassVar[bool] = True
    # Whether a request for a model id it does not serve fails (404). llama-cpp-python and TEI
    # silently answer with the loaded model, so drift there is worth reporting but not routing around.
    enforces_model_id: ClassVar[bool] = True
    # Whether the gateway's X-Request-ID may be sent upstream. llama-cpp-python's server (starlette-context
    # RequestIdPlugin) answers 400 with an empty body to any X-Request-ID that is not a UUID.
    accepts_request_id: ClassVar[bool] = True
    # The least time between two probes: clouds are probed sparingly.
    min_probe_interval: ClassVar[float] = 0.0
    # The client APIs beyond chat completions, completions and embeddings that the kind serves itself
    # (per its documentation); the gateway translates the others to chat completions. A backend's
    # `apis:` in the fabric file replaces this set.
    native_apis: ClassVar[frozenset[ClientApi]] = frozenset()
    # Of those, the ones whose native *stream* is broken for the official SDKs: streamed requests of
    # these APIs are translated even where the API is native (a non-streamed one still goes native).
    translated_streams: ClassVar[frozenset[ClientApi]] = frozenset()
    # Per native API, the request fields its native route takes without a word but ignores (checked
    # against the engine itself): a request that sets one is translated to chat completions for this
    # kind, where the field is carried. Empty for most kinds: then the dialect does no work for it.
    unhonoured: ClassVar[Mapping[ClientApi, frozenset[RequestField]]] = {}
    # Where the kind's native rerank route lives under its base URL's origin, when not `/v1/rerank`.
    rerank_path: ClassVar[str | None] = None
    # Where the kind's tokenizer lives under its base URL's origin, when it has one that takes chat
    # messages and applies the model's own template ({"count": N} back): token counts go there where
    # the kind does not count natively.
    tokenize_path: ClassVar[str | None] = None
    # Whether the kind's native Anthropic count_tokens route counts a request translated to it (a
    # Responses input_tokens count, where the kind's `apis:` leave out the native one).
    counts_translated_messages: ClassVar[bool] = False

    def native_apis_for(self, backend: BackendConfig) -> frozenset[ClientApi]:
        """The APIs this backend serves natively when its `apis:` does not say: the kind's set, or,
        for a kind that covers servers of different makes (`openai`), the set its URL's server
        documents. Pure: read once, when the routing table is built."""
        return self.native_apis

    def route_missing(self, status: int, body: bytes) -> bool:
        """Whether an error answer to a native non-chat route says that route does not exist there
        (rather than that the model or the request is wrong): see `_errors.route_missing`."""
        return route_missing(status, body)

    async def probe(self, http: ProbeHttp, backend: BackendConfig, timeout: float) -> ProbeResult:
        """Check the backend without spending tokens. Never raises for a backend's failure."""
        ctx = ProbeContext(http, backend, timeout)
        start = time.perf_counter()
        try:
            return await self._probe(ctx)
        except ProbeFailed as exc:
            if exc.state is BackendState.DEGRADED:
                return ProbeResult(True, exc.state, exc.reason, ctx.latency or 0.0, failure=exc.failure)
            return self._failed(ctx, start, exc.state, exc.reason, exc.failure)
        except UpstreamFailure as exc:
            state = BackendState.DOWN
            if exc.failure is FailureClass.TIMEOUT:
                reason = f"no answer from {ctx.shown_origin} within {timeout:g}s"
            elif exc.failure is FailureClass.CONNECT:
                reason = f"not answering at {ctx.shown_origin}: {exc.detail}"
            else:
                reason = f"probe of {ctx.shown_origin} failed: {exc.detail}"
            return self._failed(ctx, start, state, reason, exc.failure)

    def _failed(
        self,
        ctx: ProbeContext,
        start: float,
        state: BackendState,
        reason: str,
        failure: FailureClass | None,
    ) -> ProbeResult:
        latency = ctx.latency if ctx.latency is not None else time.perf_counter() - start
        return ProbeResult(False, state, reason, latency, failure=failure)

    async def _probe(self, ctx: ProbeContext) -> ProbeResult:
        raise NotImplementedError

    def up(
        self,
        ctx: ProbeContext,
        served: tuple[str, ...],
        load: dict[str, float] | None = None,
        saturated: str | None = None,
    ) -> ProbeResult:
        """A serving result: `saturated` (a reason in words) makes it degraded."""
        latency = ctx.latency or 0.0
        if saturated:
            return ProbeResult(True, BackendState.DEGRADED, saturated, latency, served, load or {})
        return ProbeResult(True, BackendState.UP, "serving", latency, served, load or {})

    def failed_probe(self, status: int, headers: Mapping[str, str], body: bytes, what: str) -> ProbeFailed:
        """A probe request's error response as a failed probe, in words."""
        failure = self.classify(status, headers, body)
        message = self.normalize_error(status, body)["message"]
        said = f"{what} answered {status}: {message}"
        if failure is FailureClass.LOADING:
            return ProbeFailed(BackendState.LOADING, f"loading its model ({said})", failure)
        if failure is FailureClass.AUTH:
            return ProbeFailed(
                BackendState.DOWN, f"api key rejected ({said}): check the backend's api_key", failure
            )
        if failure is FailureClass.OVERLOADED:
            # It answers, it is just too busy (or rate-limits us): serving, but saturated.
            return ProbeFailed(BackendState.DEGRADED, f"overloaded ({said})", failure)
        return ProbeFailed(BackendState.DOWN, said, failure)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> FailureClass:
        """The failure class of an error response from this kind of backend."""
        return classify_response(status, headers, body)

    def normalize_error(
        self, status: int, body: bytes, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """OpenAI's error object {"message", "type", "param", "code"} from this kind's error body."""
        return normalize_error_body(status, body, self.classify(status, headers or {}, body))

    def serves(self, model: str, served: Sequence[str]) -> bool:
        """Whether a request for `model` reaches that model on a backend serving `served`."""
        return exact_match(model, served)

    def check_models(self, configured: Iterable[str], served: Sequence[str], backend_name: str) -> list[str]:
        return check_models(configured, served, backend_name, matches=self.serves)


_ADAPTERS: dict[str, BackendAdapter] = {}


def adapter_for(kind: str) -> BackendAdapter:
    """The adapter of a backend kind (as written in the fabric file)."""
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        if kind not in BACKEND_KINDS:
            raise ValueError(f"unknown backend kind {kind!r}; known: {', '.join(BACKEND_KINDS)}")
        # One module per kind, named after it: "llama-cpp-python" -> aifabric.backends.llama_cpp_python.
        module = importlib.import_module(f"aifabric.backends.{kind.replace('-', '_')}")
        adapter = module.ADAPTER
        assert isinstance(adapter, BackendAdapter)
        _ADAPTERS[kind] = adapter
    return adapter
