"""Forwarding one request: candidates in order, one overall deadline, failover before the first byte.

plan -> for each candidate: rewrite `model`, send, classify the outcome once (FailureClass)
     -> success: stream bytes through as they arrive (or return the body)
     -> retryable failure before the first byte: record it, next candidate (a new round, with
        backoff and Retry-After, when the list is spent and time and attempts remain)
     -> the client's own 4xx: answered at once, never retried, never held against the target
     -> the backend refuses the gateway's credentials (401/403, class `auth`): that backend is not
        tried again for this request; if nothing else serves, 502 naming the role and backend (never
        the client's own 401: its key was fine)
     -> the backend took the request and closed the connection without a word (`request_suspect`):
        a crash, or a body its parser chokes on (a JSON nesting bomb did that). One other attempt
        tells which: served there, the first target is charged with the failure; dropped again, the
        request is the cause: 502 at once, spread no further, and neither target is held to it
     -> a native route beyond chat completions that the target lacks (404/405 "no such route",
        `backends._errors.route_missing`): no verdict on the target; the request is translated on it,
        or skipped there, and the finding kept (`gateway.missing_routes`)
     -> every candidate failed: the last answer, normalized (a 404 from a target the probes saw serving
        other ids says the fix in words), or 503/504 saying what was tried
The per-try timeout bounds one attempt until something reaches the client: the response headers, then
the first byte of a stream or the whole body of a non-streamed answer (a backend that sends headers
and then stalls is failed over like one that hangs).
All candidates loading and nothing else healthy: the request is held (warm-up) for up to
`retry.warmup_wait`, like the runbook's "wait 30-60 s, retry", instead of failing.
A request of another client API (`ForwardRequest.dialect`: Responses, Messages, rerank, ...) takes the
same path; per attempt it goes natively where the target serves that API and is translated to chat
completions and back elsewhere (`gateway.dialects`), so failover may cross from one to the other.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from aifabric.config.schema import RetryConfig
from aifabric.core import BackendState, FailureClass, Outcome
from aifabric.errors import BudgetExceeded, NoHealthyTarget, UpstreamError, UpstreamFailure
from aifabric.gateway.body import RequestBody
from aifabric.gateway.dialects.base import BodyLike, Dialect, StreamTranslator
from aifabric.gateway.dropped import DropWarnings
from aifabric.gateway.missing_routes import MissingRoutes, RouteMissing
from aifabric.gateway.stream_usage import UsageCounter, UsageTap, split_events, wants_usage
from aifabric.http.client import UpstreamClient, UpstreamResponse
from aifabric.http.server import Response, StreamingResponse
from aifabric.observability.logging import redact, redact_cut
from aifabric.routing.load import process_cap
from aifabric.routing.retry import Deadline, backoff, parse_retry_after, retry_delay
from aifabric.routing.table import Endpoint, Route, RoutingTable
from aifabric.routing.target import AttemptGuard, TargetState
from aifabric.tenancy.ledger.record import Pending
from aifabric.tenancy.principal import ANONYMOUS, Principal, Priority
from aifabric.tenancy.priority import BackendGate, QueueFull
from aifabric.tenancy.tokens import reported_usage

__all__ = ["Attempt", "ForwardRequest", "Forwarder"]

log = logging.getLogger("aifabric.gateway")
_STREAM_HEADERS = [("cache-control", "no-cache"), ("x-accel-buffering", "no")]
_DONE = b"data: [DONE]\n\n"


# `init=False` and an `__init__` of their own: see http.server's Request (compiled, not exec'd).
@dataclass(slots=True, init=False)
class Attempt:
    target: str  # "backend/model"
    failure: FailureClass | None
    detail: str
    status: int | None
    # How it ended when `failure` is None: answered, or a route the target lacks (gateway.missing_routes).
    outcome: Outcome

    def __init__(
        self,
        target: str,
        failure: FailureClass | None,
        detail: str,
        status: int | None = None,
        outcome: Outcome = Outcome.OK,
    ) -> None:
        self.target = target
        self.failure = failure
        self.detail = detail
        self.status = status
        self.outcome = outcome


@dataclass(slots=True, init=False)
class ForwardRequest:
    route: Route
    path: str  # "/chat/completions", "/completions", "/embeddings"
    body: RequestBody | BodyLike
    stream: bool
    request_id: str
    attempts: list[Attempt]
    # Its place in the queue of a backend at its max_concurrency (the key's, or lowered by a header).
    priority: Priority
    # Who asked (the usage ledger records its name).
    principal: Principal
    # What the probes know about why a target refused the model id ("config says X, B serves Y: ..."),
    # so a client that gets the 404 also gets the fix (the runbook's "Embeddings Return 404").
    drift: list[str]
    # Another client API than `path`'s (None for the OpenAI routes, whose bodies pass through as sent).
    dialect: Dialect | None
    skipped: list[str] | None  # targets that cannot serve the dialect at all (None: no list to build)
    _chat: dict[str, Any] | None  # the translated chat request, built once at the first need
    # The role's own targets were all saturated when it was planned: its fallbacks served it on purpose.
    overflowed: bool
    # The conversation's affinity key (routing.affinity.session_key), when the role has several targets.
    session: bytes | None
    # Seconds spent waiting on others: each attempt at a backend (to its whole body, or to a stream's
    # first byte), a backend's max_concurrency queue, the waits between rounds. The rest of the
    # request's time is the gateway's own (aifabric_gateway_overhead_seconds); summed from clock
    # reads the forwarder takes anyway.
    waited: float
    # Told a stream's usage when it ends (its usage objects, else its counted content events): set
    # when a tokens-per-minute limit must replace its admission estimate (gateway.admit).
    on_tokens: Callable[[bytes | None, int], None] | None
    # The answer's (in, out, total) tokens as the forwarder read them for the ledger (None: not read,
    # or not one flat usage object): a tokens-per-minute limit settles with them, not parsing again.
    reported: tuple[int, int, int] | None

    def __init__(
        self,
        route: Route,
        path: str,
        body: RequestBody | BodyLike,
        stream: bool,
        request_id: str,
        attempts: list[Attempt] | None = None,
        priority: Priority = Priority.INTERACTIVE,
        principal: Principal = ANONYMOUS,
        drift: list[str] | None = None,
        dialect: Dialect | None = None,
        skipped: list[str] | None = None,
        overflowed: bool = False,
        session: bytes | None = None,
        waited: float = 0.0,
        on_tokens: Callable[[bytes | None, int], None] | None = None,
    ) -> None:
        self.route = route
        self.path = path
        self.body = body
        self.stream = stream
        self.request_id = request_id
        self.attempts = [] if attempts is None else attempts
        self.priority = priority
        self.principal = principal
        self.drift = [] if drift is None else drift
        self.dialect = dialect
        self.skipped = skipped
        self._chat = None
        self.overflowed = overflowed
        self.session = session
        self.waited = waited
        self.on_tokens = on_tokens
        self.reported = None


# Hooks the observability layer attaches; routing logic does not know about metrics or logs.
AttemptHook = Callable[[ForwardRequest, TargetState, Attempt, float], None]
# Called as an attempt starts; the headers it returns go to the backend (tracing: the traceparent).
AttemptStartHook = Callable[[ForwardRequest, TargetState], list[tuple[str, str]]]
# The usage ledger's: one small tuple per answered request, parsed and written off the request path.
UsageHook = Callable[[Pending], None]


class Forwarder:
    def __init__(
        self,
        table: Callable[[], RoutingTable],
        client: UpstreamClient,
        retry: RetryConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_attempt: AttemptHook | None = None,
        on_attempt_start: AttemptStartHook | None = None,
        on_usage: UsageHook | None = None,
        blocked: Callable[[], Mapping[str, str]] | None = None,
        prompt_counter: Callable[[str], Callable[[dict[str, Any]], int] | None] | None = None,
        waker: Callable[[Route], float] | None = None,
        engine_ready: Callable[[str], Awaitable[None]] | None = None,
        concurrency_share: Callable[[], float] | None = None,
    ) -> None:
        self._table = table
        self._client = client
        self._retry = retry
        self._clock = clock
        self._drops = DropWarnings(clock)
        self._rng = rng or random.Random()
        self._on_attempt = on_attempt
        self._on_attempt_start = on_attempt_start
        self._on_usage = on_usage
        # Backends out of routing (over their budget) -> why; read on every plan, swapped whole.
        self._blocked = blocked
        # A local model's own tokenizer, by backend, once loaded: the usage a stream synthesizes.
        self._prompt_counter = prompt_counter
        self._gates: dict[str, BackendGate] = {}  # by backend name, for backends with max_concurrency
        # This process's part of each backend's max_concurrency (1/N of the workers and replicas):
        # the caps hold for the whole gateway, not for each of its processes.
        self._concurrency_share = concurrency_share
        # Wakes the role's sleeping hosts (health.power); returns how long to hold the request for them.
        self._waker = waker
        # Wakes a backend's engine from vLLM's sleep mode before an attempt (health.engine_sleep).
        self._engine_ready = engine_ready
        # Native routes found missing on a backend (gateway.missing_routes): no failure, no ejection.
        self._missing = MissingRoutes()

    def set_retry(self, retry: RetryConfig) -> None:
        """A reload's retry policy: for the requests that start from now on."""
        self._retry = retry

    def gate(self, name: str, capacity: int | None, queue: int) -> BackendGate | None:
        """The concurrency gate of a backend with `max_concurrency`; it outlives reloads, resized."""
        if capacity is None:
            self._gates.pop(name, None)
            return None
        if self._concurrency_share is not None:
            capacity = process_cap(capacity, self._concurrency_share())
        gate = self._gates.get(name)
        if gate is None:
            gate = self._gates[name] = BackendGate(capacity, queue)
        elif gate.capacity != capacity or gate.waiting.bound != queue:
            gate.resize(capacity, queue)
        return gate

    def _share(self, req: ForwardRequest) -> float:
        """This process's part of the backends' caps, for a pinned request's check of its target."""
        if req.session is None or self._concurrency_share is None:
            return 1.0
        return self._concurrency_share()

    def gates(self) -> dict[str, BackendGate]:
        return dict(self._gates)

    async def _enter(self, req: ForwardRequest, target: TargetState, timeout: float) -> BackendGate | None:
        """Wait for a place at the target's backend when it has a concurrency cap. A full queue or
        a wait past the per-try timeout is a failed attempt (the next candidate may have room) that
        says nothing of the backend's health."""
        backend = target.backend
        if backend.max_concurrency is None and not self._gates:
            return None  # no cap anywhere: the common case costs one attribute read
        gate = self.gate(backend.name, backend.max_concurrency, backend.max_queue)
        if gate is None:
            return None
        queued = self._clock()  # only with a cap: the common case above reads no clock
        try:
            await gate.acquire(req.priority, timeout)
        except QueueFull:
            detail = f"at its max_concurrency ({gate.capacity}) with {backend.max_queue} queued"
            req.attempts.append(Attempt(_label(target), FailureClass.OVERLOADED, detail))
            raise UpstreamFailure(FailureClass.OVERLOADED, detail) from None
        except TimeoutError:
            detail = f"no free place (max_concurrency {gate.capacity}) within {timeout:.3g} s"
            req.attempts.append(Attempt(_label(target), FailureClass.TIMEOUT, detail))
            raise UpstreamFailure(FailureClass.TIMEOUT, detail) from None
        finally:
            req.waited += self._clock() - queued
        return gate

    async def forward(self, req: ForwardRequest) -> Response | StreamingResponse:
        # The attempt of a target that dropped this request without a word waits for its verdict until
        # another target has had the same request (see the module docstring); no verdict, no signal.
        pending: list[AttemptGuard] = []
        try:
            cfg = self._retry
            start = self._clock()
            deadline = Deadline(start, cfg.deadline)
            warmup_until = start + cfg.warmup_wait
            wake_until = start  # later when the role's sleeping hosts are being woken (retry.wake_wait)
            last_error: UpstreamFailure | None = None
            refused: set[str] = set()  # backends that refused our credentials: not asked again
            round_no = 0
            # Set when a round ended with every candidate loading: the next round is a warm-up retry, which
            # max_attempts does not cut short (only warmup_wait and the deadline bound it).
            holding = False
            # In flight, a request finishes on the table (and retry policy) it started with: a reload swaps
            # the table for the requests that come after, never under one being served, so its attempts,
            # retries and stream keep the roles, targets and backends it was planned with. Health and
            # ejections stay live: a target the reload kept shares its state objects with the new table.
            # The one exception is a warm-up hold (every candidate loading): that request is waiting for a
            # target rather than being served, so each held round looks at the newest table, where the
            # reload may have brought a ready target (or taken the loading one away).
            table = self._table()
            route = table.names.get(req.route.name, req.route)
            while True:
                if holding:
                    table = self._table()
                    route = table.names.get(req.route.name, route)
                plan = table.route_plan(route, self._clock(), req.session, self._share(req))
                candidates = plan.candidates
                if round_no == 0:
                    req.overflowed = plan.overflowed
                    if self._waker is not None and _needs_wake(candidates, route):
                        wake_until = start + self._waker(route)
                if self._blocked is not None:
                    candidates = self._unblocked(candidates, route)
                round_failures: list[FailureClass] = []
                for target in candidates:
                    if target.backend.name in refused:
                        continue
                    if len(req.attempts) >= cfg.max_attempts and not (
                        holding or self._warming(round_failures, warmup_until, wake_until, table, route)
                    ):
                        break
                    now = self._clock()
                    if deadline.expired(now):
                        break
                    origin = table.endpoints.get(target.backend.name)
                    if origin is None:
                        continue
                    endpoint = origin
                    if req.dialect is not None:
                        endpoint = self._missing.endpoint(origin, req.dialect.api)
                        if not req.dialect.can_serve(endpoint, req.stream):
                            # e.g. rerank asked of a backend with no rerank route
                            req.skipped = [*(req.skipped or ()), _label(target)]
                            continue
                    try_timeout = deadline.try_timeout(now, endpoint.try_timeout or cfg.try_timeout)
                    try:
                        result: Response | StreamingResponse | None = None
                        expired = False
                        sent: Endpoint | None = endpoint
                        while sent is not None:
                            try:
                                result = await self._attempt(req, target, sent, try_timeout, pending)
                                break
                            except RouteMissing as missing:
                                # The route does not exist there: no verdict on the target. Once more on
                                # the same target, translated, on its other counting route (the
                                # tokenizer) or answered locally, if possible; each time with one route
                                # fewer, so this ends.
                                assert req.dialect is not None
                                sent = self._missing.retry(
                                    origin, sent, req.dialect, req.body, req.stream, missing
                                )
                                if sent is not None:
                                    now = self._clock()
                                    expired = deadline.expired(now)
                                    if expired:
                                        break
                                    per_try = sent.try_timeout or cfg.try_timeout
                                    try_timeout = deadline.try_timeout(now, per_try)
                        if result is None:
                            if expired:
                                break
                            req.skipped = [*(req.skipped or ()), _label(target)]
                            continue
                        for dropped in pending:
                            # Another target served the request the first one dropped: that was its fault.
                            dropped.failure(FailureClass.CONNECT, self._clock())
                            self._drops.backend_caused(
                                dropped.target.backend.name, target.backend.name, req.request_id, route.name
                            )
                        return result
                    except UpstreamFailure as failure:
                        if failure.failure is FailureClass.CLIENT_ERROR:
                            # The backend says the request itself is wrong: the client sees its words.
                            raise self._upstream_error(failure) from None
                        if failure.request_suspect and len(pending) > 1:
                            names = (guard.target.backend.name for guard in pending)
                            self._drops.request_caused(names, req.request_id, route.name)
                            raise self._dropped(req, failure) from None
                        if failure.failure is FailureClass.AUTH:
                            refused.add(target.backend.name)
                            log.error(
                                "backend %s refused the gateway's credentials (HTTP %s) serving role %s: "
                                "fix backends.%s.api_key in the fabric file",
                                target.backend.name,
                                failure.status,
                                req.route.name,
                                target.backend.name,
                            )
                        last_error = failure
                        round_failures.append(failure.failure)
                round_no += 1
                now = self._clock()
                if not round_failures or last_error is None or deadline.expired(now):
                    break
                holding = self._warming(round_failures, warmup_until, wake_until, table, route)
                if holding:
                    # Every candidate is loading: hold the request (beyond max_attempts) and look again.
                    delay: float | None = max(
                        0.5, backoff(round_no, base=cfg.backoff_base, cap=cfg.backoff_max, rng=self._rng)
                    )
                else:
                    # The next round starts with the same targets again: the policy's wait for "same backend".
                    delay = retry_delay(
                        last_error.failure, last_error.retry_after, len(req.attempts), cfg, self._rng
                    )
                if delay is None:
                    break  # out of attempts, or a Retry-After longer than we may hold a request
                delay = min(delay, deadline.remaining(now))
                if delay > 0:
                    # The time slept, by the clock the request's time is measured with: the loop's
                    # timers are coarser than `delay` and may wake it a little early.
                    slept = self._clock()
                    await asyncio.sleep(delay)
                    req.waited += self._clock() - slept
            raise self._exhausted(req, last_error, deadline.expired(self._clock()))

        finally:
            for guard in pending:
                guard.abandon()  # nothing if it was settled

    def _unblocked(self, candidates: list[TargetState], route: Route) -> list[TargetState]:
        """The candidates whose backend is within its budget; none left: 429 naming the budgets."""
        blocked = self._blocked() if self._blocked is not None else {}
        if not blocked:
            return candidates
        kept = [t for t in candidates if t.backend.name not in blocked]
        if not kept and candidates:
            why = "; ".join(dict.fromkeys(blocked[t.backend.name] for t in candidates))
            refused = BudgetExceeded(f"no backend of role '{route.name}' is within its budget: {why}")
            refused.role = route.name
            raise refused
        return kept

    def _warming(
        self,
        failures: list[FailureClass],
        warmup_until: float,
        wake_until: float,
        table: RoutingTable,
        route: Route,
    ) -> bool:
        """Every candidate is still loading its model (it said so, or the health checker saw it) and
        the warm-up bound allows another wait; or the role's hosts are being woken, within wake_wait."""
        now = self._clock()
        if not failures:
            return False
        if now < warmup_until and (
            all(f is FailureClass.LOADING for f in failures) or table.only_loading(route, now)
        ):
            return True
        return now < wake_until and _waiting_for_wake(table, route, now)

    async def _attempt(
        self,
        req: ForwardRequest,
        target: TargetState,
        endpoint: Endpoint,
        try_timeout: float,
        pending: list[AttemptGuard],
    ) -> Response | StreamingResponse:
        dialect = req.dialect
        translator: StreamTranslator | None = None
        add_usage = False
        headers = list(endpoint.headers)
        native = False
        if dialect is None:
            path = endpoint.prefix + req.path
            client_usage = req.stream and wants_usage(req.body.payload)
            strip_usage = client_usage and not endpoint.adapter.supports_include_usage
            # The ledger wants a stream's token counts: asked of a backend that gives them, even when
            # the client did not ask (its usage chunk is then taken out of the stream on the way).
            add_usage = (
                (self._on_usage is not None or req.on_tokens is not None)
                and req.stream
                and not client_usage
                and endpoint.adapter.supports_include_usage
            )
            if add_usage and isinstance(req.body, RequestBody):
                body = req.body.with_model(target.model, include_usage=True)
            else:
                add_usage = False
                body = req.body.with_model(target.model, drop=("stream_options",) if strip_usage else ())
        else:
            strip_usage = False
            native = dialect.native_route(endpoint, req.stream)
            if native:
                path, body = dialect.native_request(endpoint, req.body, target.model)
                headers.extend(dialect.native_headers())
                if req.stream:
                    translator = dialect.native_stream()
            elif dialect.translatable:
                path, body = endpoint.prefix + "/chat/completions", self._chat_body(req, endpoint, target)
                if req.stream:
                    upstream_usage = endpoint.adapter.supports_include_usage
                    translator = dialect.stream_translator(req.body.payload, upstream_usage)
            else:
                return self._local(req, target, dialect)
            if dialect.sent_content_type is not None:  # multipart, say
                headers = [h for h in headers if h[0] != "content-type"]
                headers.append(("content-type", dialect.sent_content_type))
        if endpoint.adapter.accepts_request_id:
            headers.append(("x-request-id", req.request_id))
        if req.stream:
            headers.append(("accept", "text/event-stream"))
        gate = await self._enter(req, target, try_timeout)
        if self._on_attempt_start is not None:  # only with tracing on
            headers.extend(self._on_attempt_start(req, target))
        started = self._clock()
        # Settled exactly once: below, or by the stream's _Relay once the stream is handed over (the
        # guard ignores whichever of the two comes second), and the backend's place given back then.
        guard = target.on_start(started)
        if gate is not None:
            guard.on_settle = gate.release
        resp: UpstreamResponse | None = None
        ended: float | None = None  # when the backend's part was over (a clock read taken anyway)
        sending = False
        try:
            if self._engine_ready is not None and target.idles:
                await self._engine_ready(target.backend.name)  # held while its engine wakes up
            sending = True
            resp = await self._client.send(endpoint.origin, "POST", path, headers, body, try_timeout)
            if resp.status >= 400:
                # Bounded like a good answer's body: an error whose body stalls must not hold the request.
                left = max(0.0, try_timeout - (self._clock() - started))
                err_body = await resp.read(left, "the error body stalled")
                if native and endpoint.adapter.route_missing(resp.status, err_body):
                    self._route_missing(req, target, resp.status, started)
                    raise RouteMissing(resp.status, path, target.model)  # abandoned below: no health signal
                failure_class = endpoint.adapter.classify(resp.status, resp.headers, err_body)
                retry_after = parse_retry_after(resp.headers.get("retry-after"), time.time())
                raise UpstreamFailure(
                    failure_class,
                    f"HTTP {resp.status}",
                    status=resp.status,
                    body=err_body,
                    retry_after=retry_after,
                    headers=resp.headers,
                )
            # The per-try timeout runs until something reaches the client: a backend that sent its
            # headers and then nothing must not hold the request forever (another candidate may serve).
            left = max(0.0, try_timeout - (self._clock() - started))
            if req.stream:
                # Wait for the first byte before committing: until then another candidate may still serve.
                first = await resp.first_chunk(left, "no first byte of the stream")
                ended = self._clock()
                ttfb = ended - started
                tap = (
                    UsageTap(hide=add_usage, count=not endpoint.adapter.supports_include_usage)
                    if self._on_usage is not None or req.on_tokens is not None
                    else None
                )
                result: Response | StreamingResponse = self._stream(
                    req,
                    guard,
                    resp,
                    first,
                    ttfb,
                    strip_usage,
                    translator,
                    tap,
                    started,
                    translated=not native,
                )
            else:
                data = resp.body_if_complete()
                if data is None:
                    data = await resp.read(left, "the response body stalled")
                # Before the translation and the rest: those are the gateway's time, not the backend's.
                ended = self._clock()
                content_type = resp.headers.get("content-type", "application/json")
                if dialect is not None:
                    data, content_type = self._dialect_answer(
                        req, dialect, endpoint, target, data, native, content_type
                    )
                served = self._served_headers(req, target, len(req.attempts) + 1)
                if dialect is not None and not native:
                    served.append(("x-aifabric-translated", "chat"))
                result = Response(resp.status, data, served, content_type=content_type)
                guard.success(ended - started, ended)
                if self._on_usage is not None:
                    # Read once here, for the ledger's row and a tokens-per-minute limit (admit);
                    # what is not one flat object is parsed by the ledger's thread, from the tail.
                    at = data.rfind(b'"usage"')
                    counts = reported_usage(data, at) if at >= 0 else None
                    req.reported = counts
                    usage = data[at : at + 1024] if at >= 0 and counts is None else None
                    reported = None if counts is None else (counts[0], counts[1])
                    self._on_usage(
                        self._pending(req, target, resp.status, started, usage, None, data, reported)
                    )
        except UpstreamFailure as failure:
            if resp is not None:
                resp.close()
            if failure.request_suspect:
                pending.append(guard)  # maybe the request's doing: settled by the next attempt's outcome
            elif failure.failure is not FailureClass.CLIENT_ERROR:
                guard.failure(failure.failure, self._clock())
            else:
                guard.success(self._clock() - started, self._clock())
            if failure.failure is FailureClass.MODEL_NOT_FOUND and target.model_mismatch:
                req.drift.append(target.model_mismatch)
            attempt = Attempt(_label(target), failure.failure, failure.detail, failure.status)
            failure.backend = endpoint.name
            self._record(req, target, attempt, started)
            # Our own per-try timeout after the request went (not a status the backend answered).
            sent = resp is not None or failure.sent
            if failure.failure is FailureClass.TIMEOUT and failure.status is None and sent:
                self._spent(req, target, 504, started)
            raise
        except asyncio.CancelledError:
            # The client went away: the upstream request is closed with it, and it says nothing of
            # the target's health.
            if resp is not None:
                resp.close()
            guard.abandon()
            if sending:
                self._spent(req, target, 499, started)
            raise
        except Exception:
            if resp is not None:  # a bug of ours: as above, and nothing to say about tokens
                resp.close()
            guard.abandon()
            raise
        self._record(req, target, Attempt(_label(target), None, "ok", resp.status), started, ended)
        return result

    def _spent(self, req: ForwardRequest, target: TargetState, status: int, started: float) -> None:
        """The ledger row of an attempt that failed after its request reached the backend, which may
        have spent tokens on it: the per-try timeout ran out (504) or the client went away (499)
        while the backend was working. Its prompt is counted off the path (estimated), its output is
        unknown (0). Failures where the backend certainly spent nothing get no row: a connection
        refused or timed out, and an error status it answered (it refused the request, or failed
        without generating; no API bills those). A client that leaves while the connection is being
        opened (milliseconds) cannot be told apart from one that leaves later: counted too."""
        if self._on_usage is not None:
            self._on_usage(self._pending(req, target, status, started, None, None))

    def _pending(
        self,
        req: ForwardRequest,
        target: TargetState,
        status: int,
        started: float,
        usage: bytes | None,
        counted: tuple[int, int] | None,
        output: bytes | None = None,
        reported: tuple[int, int] | None = None,
    ) -> Pending:
        # Without the backend's usage, the request (and answer) are kept to count from, off the path.
        bare = usage is None and reported is None
        # tuple.__new__: a NamedTuple's own constructor is Python code (collections builds it with
        # exec), an interpreted call per request even in the compiled forwarder; this is a tuple's cost.
        return tuple.__new__(
            Pending,
            (
                time.time(),
                req.principal.name,
                req.route.name,
                target.backend.name,
                target.model,
                req.path,
                status,
                self._clock() - started,
                req.request_id,
                usage,
                counted,
                req.body.payload if bare else None,
                output if bare else None,
                reported,
            ),
        )

    def _stream(
        self,
        req: ForwardRequest,
        guard: AttemptGuard,
        resp: UpstreamResponse,
        first: bytes,
        ttfb: float,
        synthesize_usage: bool,
        translator: StreamTranslator | None = None,
        tap: UsageTap | None = None,
        started: float = 0.0,
        *,
        translated: bool = False,
    ) -> StreamingResponse:
        headers = self._served_headers(req, guard.target, len(req.attempts) + 1)
        headers.extend(_STREAM_HEADERS)
        if synthesize_usage:
            headers.append(("x-aifabric-usage", "estimated"))
        target = guard.target
        counter: StreamTranslator | None = translator
        if synthesize_usage:
            count = self._prompt_counter(target.backend.name) if self._prompt_counter is not None else None
            counter = UsageCounter(req.body.payload, count(req.body.payload) if count is not None else None)
        interrupted: Callable[[str, str], bytes] = _interrupted
        content_type = resp.headers.get("content-type", "text/event-stream")
        if req.dialect is not None:
            interrupted = _dialect_interrupted(req.dialect)
            if translator is not None and translated:
                content_type = "text/event-stream"
                headers.append(("x-aifabric-translated", "chat"))
        done: Callable[[int], None] | None = None
        hook = self._on_usage
        settle = req.on_tokens
        if tap is not None and (hook is not None or settle is not None):

            def done(status: int) -> None:
                if hook is not None:
                    hook(self._pending(req, target, status, started, tap.usage, (0, tap.completion_tokens)))
                if settle is not None:
                    settle(tap.usage, tap.completion_tokens)

        relay = _Relay(
            guard,
            resp,
            first,
            ttfb,
            counter,
            self._clock,
            self._retry.stream_idle_timeout,
            interrupted,
            tap,
            done,
            redacts=target.backend.api_key is not None,
        )
        return StreamingResponse(resp.status, relay, headers, content_type=content_type)

    def _chat_body(self, req: ForwardRequest, endpoint: Endpoint, target: TargetState) -> bytes:
        """The translated request for one target: built once per request, `model` set per target."""
        dialect = req.dialect
        assert dialect is not None
        if req._chat is None:
            req._chat = dialect.to_chat(req.body.payload)
            if req.stream:
                req._chat["stream"] = True
        chat = dict(req._chat)
        chat["model"] = target.model
        if req.stream and endpoint.adapter.supports_include_usage:
            chat["stream_options"] = {"include_usage": True}
        return orjson.dumps(chat)

    def _dialect_answer(
        self,
        req: ForwardRequest,
        dialect: Dialect,
        endpoint: Endpoint,
        target: TargetState,
        data: bytes,
        native: bool,
        content_type: str,
    ) -> tuple[bytes, str]:
        """A non-streamed answer of a dialect request as the client gets it."""
        if native:
            return dialect.native_answer(endpoint, data, target.model), content_type
        try:
            chat = orjson.loads(data)
        except orjson.JSONDecodeError:
            chat = None
        if not isinstance(chat, dict):
            raise UpstreamFailure(FailureClass.UPSTREAM_5XX, "the chat answer to translate is not JSON")
        return orjson.dumps(dialect.from_chat(chat, req.body.payload)), dialect.content_type

    def _local(self, req: ForwardRequest, target: TargetState, dialect: Dialect) -> Response:
        """No native route on this target, and the API is one the gateway can answer itself."""
        body, extra = dialect.local_answer(req.body.payload)
        headers = self._served_headers(req, target, len(req.attempts) + 1)
        headers.extend(extra)
        attempt = Attempt(_label(target), None, "answered by the gateway", 200)
        self._record(req, target, attempt, self._clock())
        return Response(200, body, headers, content_type=dialect.content_type)

    def _served_headers(
        self, req: ForwardRequest, target: TargetState, attempts: int
    ) -> list[tuple[str, str]]:
        headers = [
            ("x-aifabric-role", target.role),
            ("x-aifabric-requested-role", req.route.name),
            ("x-aifabric-backend", target.backend.name),
            ("x-aifabric-model", target.model),
            ("x-aifabric-attempts", str(attempts)),
            ("x-request-id", req.request_id),
        ]
        if req.overflowed:
            headers.append(("x-aifabric-overflow", "saturated"))
        return headers

    def _route_missing(self, req: ForwardRequest, target: TargetState, status: int, started: float) -> None:
        """The hooks hear of an attempt that met a missing route (metrics: outcome `route_missing`; its
        trace span ends), though it is no attempt of the request's (not in `req.attempts`)."""
        seconds = self._clock() - started
        req.waited += seconds  # time at the backend all the same, not the gateway's overhead
        if self._on_attempt is not None:
            detail = f"no native route (HTTP {status})"
            attempt = Attempt(_label(target), None, detail, status, outcome=Outcome.ROUTE_MISSING)
            self._on_attempt(req, target, attempt, seconds)

    def _record(
        self,
        req: ForwardRequest,
        target: TargetState,
        attempt: Attempt,
        started: float,
        ended: float | None = None,
    ) -> None:
        seconds = (self._clock() if ended is None else ended) - started
        req.attempts.append(attempt)
        req.waited += seconds
        if self._on_attempt is not None:
            self._on_attempt(req, target, attempt, seconds)

    def _upstream_error(self, failure: UpstreamFailure) -> UpstreamError:
        """A backend's error answer as the client gets it: its words in OpenAI's shape, its status
        and Retry-After kept. Redacted here, where foreign text enters: a backend may quote a key
        ("Incorrect API key provided: sk-..."), and traces, renderers and logs all read this message."""
        endpoint = self._table().endpoints.get(failure.backend or "")
        adapter = endpoint.adapter if endpoint is not None else None
        status = failure.status or 502
        if adapter is not None:
            err = adapter.normalize_error(status, failure.body)
        else:
            err = {"message": failure.body.decode("utf-8", "replace")[:500], "type": "upstream_error"}
        headers = {}
        if failure.retry_after is not None:
            headers["retry-after"] = str(max(1, round(failure.retry_after)))
        code = err.get("code")
        return UpstreamError(
            redact(str(err.get("message") or f"upstream returned HTTP {status}")),
            status=status,
            type=str(err.get("type") or "upstream_error"),
            code=code if isinstance(code, str | int) else None,
            param=err.get("param") if isinstance(err.get("param"), str) else None,
            headers=headers,
        )

    def _exhausted(
        self, req: ForwardRequest, last: UpstreamFailure | None, deadline_expired: bool
    ) -> NoHealthyTarget | UpstreamError:
        tried = "; ".join(f"{a.target} ({a.failure}: {a.detail})" for a in req.attempts) or "no candidate"
        headers = {"x-aifabric-attempts": str(len(req.attempts))}
        if not req.attempts and req.skipped and req.dialect is not None:
            skipped = ", ".join(dict.fromkeys(req.skipped))
            return NoHealthyTarget(
                f"no backend of role '{req.route.name}' serves the {req.dialect.api} API ({skipped}): "
                "give the role a target on a backend that does, or list it in that backend's `apis:`",
                code="api_not_served",
                headers=headers,
            )
        if (
            last is not None
            and last.status is not None
            and last.failure
            in (
                FailureClass.OVERLOADED,
                FailureClass.MODEL_NOT_FOUND,
                FailureClass.UPSTREAM_5XX,
            )
        ):
            # Every candidate answered with an error: the client gets the (normalized) answer, status
            # and Retry-After kept, so its own retry logic keeps working.
            error = self._upstream_error(last)
            error.headers.update(headers)
            if last.failure is FailureClass.MODEL_NOT_FOUND and req.drift:
                error.message = f"{error.message} ({'; '.join(dict.fromkeys(req.drift))})"
                error.args = (error.message,)
            return error
        if last is not None and last.failure is FailureClass.AUTH:
            # Our credentials, not the client's: never its own 401, and never the secret itself.
            return NoHealthyTarget(
                f"role '{req.route.name}' is unavailable: backend '{last.backend}' refused the "
                f"gateway's credentials (HTTP {last.status}); the operator must fix its api_key. "
                f"Tried: {tried}",
                status=502,
                type="upstream_error",
                code="upstream_auth_failed",
                headers=headers,
            )
        if deadline_expired or (last is not None and last.failure is FailureClass.TIMEOUT):
            return NoHealthyTarget(
                f"role '{req.route.name}' did not answer in time. Tried: {tried}",
                status=504,
                type="timeout",
                code="upstream_timeout",
                headers=headers,
            )
        if last is not None and last.failure is FailureClass.LOADING:
            headers["retry-after"] = "5"
            return NoHealthyTarget(
                f"role '{req.route.name}' is still loading its model. Tried: {tried}",
                code="model_loading",
                headers=headers,
            )
        return NoHealthyTarget(
            f"no backend of role '{req.route.name}' could serve the request. Tried: {tried}", headers=headers
        )

    def _dropped(self, req: ForwardRequest, failure: UpstreamFailure) -> NoHealthyTarget:
        return NoHealthyTarget(
            f"backend '{failure.backend}' of role '{req.route.name}' closed the connection without "
            "answering this request, as the target tried before it did: the request itself is the "
            "likely cause (check it, e.g. for deeply nested JSON or an oversized field); it is not "
            "sent further.",
            status=502,
            type="upstream_error",
            code="upstream_dropped_request",
            headers={"x-aifabric-attempts": str(len(req.attempts))},
        )


def _needs_wake(candidates: list[TargetState], route: Route) -> bool:
    """Cheap test on the hot path: the plan does not start with an awake target of the role itself."""
    if not candidates:
        return bool(route.targets)
    first = candidates[0]
    return first.role != route.name or first.health.state is BackendState.ASLEEP


def _waiting_for_wake(table: RoutingTable, route: Route, now: float) -> bool:
    """Nothing of the role or its fallbacks is available, and the role's targets are asleep."""
    groups = table.groups(route)
    if any(t.available(now) for group in groups for t in group):
        return False
    return any(t.health.state is BackendState.ASLEEP for t in route.targets)


class _Relay:
    """A streamed answer's body as the listener pulls it. From the first byte on it carries the
    attempt's guard and settles it (success at the end of the stream, failure when the backend dies
    mid-stream, abandon when the client goes away), also when the listener drops it unread (aclose),
    which an async generator could not promise: one never started runs no cleanup."""

    __slots__ = (
        "_attempt",
        "_clock",
        "_counter",
        "_done",
        "_ended",
        "_first",
        "_held",
        "_idle",
        "_interrupted",
        "_redacts",
        "_resp",
        "_tap",
        "_ttfb",
    )

    def __init__(
        self,
        attempt: AttemptGuard,
        resp: UpstreamResponse,
        first: bytes,
        ttfb: float,
        counter: StreamTranslator | None,
        clock: Callable[[], float],
        idle_timeout: float,
        interrupted: Callable[[str, str], bytes] | None = None,
        tap: UsageTap | None = None,
        done: Callable[[int], None] | None = None,
        redacts: bool = True,
    ) -> None:
        # Whether an error event may quote a secret: only a backend the gateway sends a key to can echo
        # one (the client's own Authorization never goes upstream). Others' chunks skip the scan, which
        # costs ~0.8 µs per 2 KB chunk.
        self._redacts = redacts
        # For those, the incomplete event a chunk ends with (its bytes after the last blank line), held
        # until the rest of it arrives: an error event, or the key quoted in it, cut between two chunks
        # would match in neither. The client loses nothing by the wait: SSE clients act on whole events.
        self._held = b""
        self._tap = tap
        self._done = done  # the ledger's record, called once when the stream ends (with its status)
        # The stream's last event went to the client ([DONE], message_stop, response.completed): a
        # client that closes now, before the backend's end of the body arrives, got the whole answer.
        self._ended = False
        self._idle = idle_timeout
        self._attempt = attempt
        self._interrupted = interrupted or _interrupted
        self._resp = resp
        self._first: bytes | None = first
        self._ttfb = ttfb
        self._counter = counter
        self._clock = clock

    def __aiter__(self) -> _Relay:
        return self

    async def __anext__(self) -> bytes:
        counter = self._counter
        first = self._first
        if first is not None:
            self._first = None
            if self._tap is not None:
                first = self._tap.feed(first)
            out = first if counter is None else counter.feed(first)
            if self._redacts:
                out = self._whole_events(out)
            self._ended = _ends_stream(out)
            return out
        if self._attempt.settled:
            raise StopAsyncIteration
        try:
            # A backend that stops sending mid-stream must not hold the client forever.
            chunk = await self._resp.next_chunk(self._idle, "no data from the stream")
        except UpstreamFailure as failure:
            # Mid-stream: too late to fail over. The client gets a well-formed end, never a hang.
            self._resp.close()
            self._attempt.failure(failure.failure, self._clock())
            tail = self._tap_rest(counter) if self._tap is not None and self._tap.held else b""
            self._record(502)  # the tokens generated so far were spent all the same
            rest = tail + self._rest() if self._held else tail
            return rest + self._interrupted(self._attempt.target.backend.name, failure.detail)
        except BaseException:
            self._close()  # the client went away: close the upstream too (no await in an except)
            raise
        if chunk is not None:
            if self._tap is not None:
                chunk = self._tap.feed(chunk)
            out = chunk if counter is None else counter.feed(chunk)
            if self._redacts:
                out = self._whole_events(out)
            self._ended = self._ended or _ends_stream(out)
            return out
        # What the tap held of the last event: before the record, a usage object may be in it.
        tail = self._tap_rest(counter) if self._tap is not None and self._tap.held else b""
        self._attempt.success(self._ttfb, self._clock())
        self._record(self._resp.status)
        rest = tail + self._rest() if self._held else tail
        if counter is None:
            if rest:
                return rest  # the next call finds the attempt settled: the end
            raise StopAsyncIteration
        end = counter.finish()  # a translator's last events, or a native watcher's unterminated one
        if self._redacts and _ERROR_MARK in end:
            end = _redacted(end)
        return rest + end

    def _tap_rest(self, counter: StreamTranslator | None) -> bytes:
        """What the usage tap held of the stream's last event, once no more will come, on its way to
        the client like any chunk."""
        assert self._tap is not None
        tail = self._tap.flush()
        if tail and counter is not None:
            tail = counter.feed(tail)
        if tail and self._redacts:
            tail = self._whole_events(tail)
        return tail

    def _whole_events(self, out: bytes) -> bytes:
        """`out`, after the tail held from the last chunk, up to its last complete event (the rest is
        held), with every secret masked when an error event is among them. A chunk that ends an event,
        as nearly all do, costs one `endswith` more than before."""
        out, self._held = split_events(self._held, out)
        if _ERROR_MARK in out:
            out = _redacted(out)
        return out

    def _rest(self) -> bytes:
        """The held tail, once no more of it will come (the stream ended or broke off), masked
        whether or not it reads as an error event, and a key cut short at its end too."""
        held, self._held = self._held, b""
        if not held:
            return held
        return redact_cut(held.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    async def aclose(self) -> None:
        """The listener is done with the stream before its end: a client that hangs up says nothing
        for or against the backend's health."""
        self._close()

    def _close(self) -> None:
        self._held = b""  # the client is gone: an incomplete event is of no use to anyone
        if self._attempt.settled:
            return
        if self._resp.complete or self._ended:
            if not self._resp.complete:
                self._resp.close()  # the rest of the body (its terminating chunk) is not waited for
            self._attempt.success(self._ttfb, self._clock())
            self._record(self._resp.status)
        else:
            self._resp.close()
            self._attempt.abandon()
            self._record(499)  # the client went away; what was generated until then was spent

    def _record(self, status: int) -> None:
        if self._done is not None:
            done, self._done = self._done, None
            done(status)


# The last event of a stream, in each dialect a backend streams natively: chat completions' `[DONE]`,
# Anthropic's `message_stop`, the Responses API's `response.completed` / `response.incomplete`, a
# streamed transcription's `transcript.text.done`. One compiled alternation, searched in place: it is
# read on every relayed chunk, and an `any()` over the names cost twice as much (~1 µs a chunk).
_STREAM_END = re.compile(
    rb"data: \[DONE\]|message_stop|response\.(?:completed|incomplete)|transcript\.text\.done"
)


def _ends_stream(chunk: bytes) -> bool:
    """Whether `chunk`'s last event is a stream's last (only the start of that event is looked at)."""
    at = chunk.rfind(b"\n\n", 0, len(chunk) - 2)
    start = at + 2 if at >= 0 else 0
    return _STREAM_END.search(chunk, start, start + 48) is not None


# In every error event a backend streams (chat completions' `{"error": ...}`, Anthropic's and the
# Responses API's `"type":"error"`, `response.failed`'s `"error": {...}`), and never in generated text,
# whose quotes JSON escapes: a chunk without it is passed on untouched, at the cost of one scan.
_ERROR_MARK = b'"error"'


def _redacted(chunk: bytes) -> bytes:
    """`chunk` with every secret masked: an error event may quote the key the backend was sent."""
    return redact(chunk.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def _interrupted(backend: str, detail: str) -> bytes:
    error = {
        "message": redact(f"the backend {backend} failed mid-stream: {detail}"),
        "type": "upstream_error",
        "param": None,
        "code": "stream_interrupted",
    }
    return b"\n\ndata: " + orjson.dumps({"error": error}) + b"\n\n" + _DONE


def _dialect_interrupted(dialect: Dialect) -> Callable[[str, str], bytes]:
    def interrupted(backend: str, detail: str) -> bytes:
        return dialect.stream_error(redact(f"the backend {backend} failed mid-stream: {detail}"))

    return interrupted


def _label(target: TargetState) -> str:
    return f"{target.backend.name}/{target.model}"
