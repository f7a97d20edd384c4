"""The gateway assembled: listener + auth + routes + forwarder + the control plane beside it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import orjson

from aifabric.alerts.budget import BudgetFact, budget_alerts
from aifabric.alerts.monitor import Monitor
from aifabric.alerts.rules import Alert, wake_alert
from aifabric.alerts.sinks import Notifier, build_sinks
from aifabric.backends.base import unix_routes
from aifabric.config.extras import Extra, install_hint
from aifabric.config.schema import FabricConfig, HostConfig, Secret
from aifabric.config.show import config_secrets, redact_values
from aifabric.core import BackendHealth, BackendState, Transition
from aifabric.errors import (
    ApiError,
    BudgetExceeded,
    ConfigError,
    ConfigProblem,
    MethodNotAllowed,
    NotFound,
    StateStoreError,
)
from aifabric.gateway import anthropic_models, anthropic_routes, responses_routes, task_routes
from aifabric.gateway.admin_routes import AdminRoutes, LocalControl, check_admin_access
from aifabric.gateway.auth import Authenticator
from aifabric.gateway.errors import error_response, status_exception
from aifabric.gateway.forward import Forwarder, ForwardRequest
from aifabric.gateway.openai_routes import OpenAIRoutes
from aifabric.gateway.operator_access import OperatorAccess
from aifabric.gateway.ops_routes import OpsRoutes
from aifabric.gateway.reload import ReloadOutcome
from aifabric.gateway.reloading import RELOAD_PATH, Reloads
from aifabric.gateway.request_ids import new_request_id, request_id, shown
from aifabric.gateway.responses_routes import ResponsesRoutes
from aifabric.gateway.tls import server_tls_context
from aifabric.gateway.ui import UI_PATHS
from aifabric.gateway.wake_routes import WakeRoutes
from aifabric.health.checker import HealthChecker
from aifabric.health.engine_sleep import EngineSleep, OnDemand
from aifabric.health.power import PowerManager, WakeEvent
from aifabric.http.client import UpstreamClient
from aifabric.http.fdlimit import connection_cap
from aifabric.http.server import HttpServer, Request, Response, StreamingResponse
from aifabric.observability.logging import redact, register_config_secrets
from aifabric.observability.merged import SharedMetrics
from aifabric.observability.metrics import GatewayMetrics, render_metrics
from aifabric.observability.process import process_lines
from aifabric.routing.table import Route, RoutingTable
from aifabric.state import StateSync, default_state_dir, open_response_store, open_sync
from aifabric.tenancy.admission import Admission
from aifabric.tenancy.budget import BudgetTracker
from aifabric.tenancy.keystore import keys_url, open_key_store
from aifabric.tenancy.leases import FileLeases
from aifabric.tenancy.ledger import Ledger, Pending, ledger_opener
from aifabric.tenancy.limitsync import FileExchange, LimitExchange, LimitSync, RedisExchange
from aifabric.tenancy.pricing import Pricing
from aifabric.tenancy.principal import Principal
from aifabric.tenancy.redis_leases import RedisLeases
from aifabric.tenancy.tokens import LocalTokenizers
from aifabric.tenancy.usage_view import usage_metrics
from aifabric.tenancy.watch import KeyWatcher

if TYPE_CHECKING:
    from aifabric.observability.tracing import RequestTracer

__all__ = ["Gateway", "run_gateway", "serve_gateway", "settle_heap", "settled"]

log = logging.getLogger("aifabric.gateway")

_API_PATHS = ("/chat/completions", "/completions", "/embeddings")

# An API route: serve(request, sub-path) and render(error) in the API's own error shape.
ApiHandler = Callable[[Request, str], Awaitable[Response | StreamingResponse]]
ErrorRenderer = Callable[[ApiError], Response]
# Views that need an admin key once any key is configured (/admin/* checks its own; see operator_access).
_OPERATOR_PATHS = frozenset({"/health", "/status", "/metrics", "/alerts", *UI_PATHS})


class Gateway:
    """One gateway process: owns the routing table snapshot and swaps it whole on reload."""

    def __init__(
        self,
        config: FabricConfig,
        *,
        client: UpstreamClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        probe: bool = True,
    ) -> None:
        register_config_secrets(config)
        self.config = config
        self.clock = clock
        self.client = client or UpstreamClient(connect_timeout=config.gateway.connect_timeout)
        self.client.route_unix(unix_routes(config.backends.values()))
        self.metrics = GatewayMetrics()
        self.metrics.expect_wakes(n for n, h in config.hosts.items() if h.wake is not None)
        self.checker = HealthChecker(config, self.client, clock=clock, on_transition=self._on_transition)
        self.table = RoutingTable.build(config, healths=self.checker.healths, clock=clock)
        # vLLM sleep mode for backends with sleep_when_idle: asleep when idle, woken by the next request.
        self.engine_sleep = EngineSleep(config, lambda: self.checker.healths, self.client, clock=clock)
        self.auth = Authenticator(_master_keys(config))
        self.operator = self._operator_access(config)
        self.tracer = _tracer(config)  # None unless `tracing:` is set (OpenTelemetry imported only then)
        self.keys: KeyWatcher | None = None  # set by start(): the key store's records, kept current
        self.limit_sync: LimitSync | None = None  # set by start() when counts are shared
        # Under `serve --workers N`: this worker's index (0..N-1), and its side of the merged /metrics.
        self.worker: int | None = None
        self.shared_metrics: SharedMetrics | None = None
        self.leases: FileLeases | None = None  # set by start() under `serve --workers N`
        self.shared_leases: RedisLeases | None = None  # set by start() when state is Redis
        self._keys_task: asyncio.Task[None] | None = None
        self._switches: set[asyncio.Future[None]] = set()
        # The usage ledger and the budgets it feeds (none when `usage: off`).
        self.budgets = BudgetTracker(config)
        opener = ledger_opener(config)
        tokenizers = _tokenizers(config)
        self.ledger = (
            Ledger(opener, Pricing.from_config(config, tokenizers), budgets=self.budgets)
            if opener is not None
            else None
        )
        self.forwarder = Forwarder(
            lambda: self.table,
            self.client,
            config.retry,
            clock=clock,
            on_attempt=self.metrics.on_attempt if self.tracer is None else self._on_traced_attempt,
            on_attempt_start=None if self.tracer is None else self.tracer.attempt_started,
            on_usage=self.ledger.record if self.ledger is not None else None,
            blocked=(lambda: self.budgets.blocked_backends) if self.ledger is not None else None,
            prompt_counter=tokenizers.loaded,
            waker=self._wake_for,
            engine_ready=self.engine_sleep.ready,
            concurrency_share=self._concurrency_share,
        )
        # The fraction of each per-minute limit a worker may use while the counts are not exchanged
        # (tenancy.limitsync, started by start(), tells the admission when they are).
        self.admission = Admission(
            share=1.0 / max(1, config.gateway.workers), concurrency_share=self._concurrency_share
        )
        self.api = OpenAIRoutes(lambda: self.table, self.forwarder, self.admission)
        # The POST routes with routing, retries, metrics and access log (path without /v1 -> handler).
        self.api_routes: dict[str, tuple[ApiHandler, ErrorRenderer]] = {
            path: (self.api.proxy, error_response) for path in _API_PATHS
        }
        anthropic = anthropic_routes.AnthropicRoutes(lambda: self.table, self.forwarder, self.admission)
        for path in anthropic_routes.PATHS:
            self.api_routes[path] = (anthropic.serve, anthropic_routes.anthropic_error_response)
        tasks = task_routes.TaskRoutes(lambda: self.table, self.forwarder, self.admission)
        for path in task_routes.PATHS:
            self.api_routes[path] = (tasks.serve, error_response)
        self.responses = ResponsesRoutes(
            lambda: self.table, self.forwarder, open_response_store(config), admission=self.admission
        )
        for path in responses_routes.PATHS:
            self.api_routes[path] = (self.responses.serve, error_response)
        self.ops = OpsRoutes(self)
        self.admin: AdminRoutes | None = None  # only under `aifabric up`: see attach_local
        self.local_control: LocalControl | None = None
        self.on_demand: OnDemand | None = None  # models on demand, under `aifabric up` (attach_local)
        # Re-reads the fabric file and applies it (set by `serve` and `up`; None: the embedded default).
        self.reloader: Callable[[], ReloadOutcome] | None = None
        self.reloads = Reloads(self)
        self.monitor = Monitor(
            config,
            lambda: self.table.healths,
            Notifier(build_sinks(config.monitoring, self.client)),
            clock=clock,
            leader=lambda: self.state_sync is None or self.state_sync.probing,
            extra=self._budget_alerts,
        )
        # Wakes sleeping hosts that requests need (hosts.NAME.wake); an INFO alert says who woke what.
        self.power = PowerManager(
            config,
            lambda: self.checker.healths,
            self.checker.probe_one,
            on_wake=self._announce_wake,
            clock=clock,
        )
        self.wake_routes = WakeRoutes(self)  # POST /admin/hosts/NAME/wake: `aifabric wake HOST`
        self.probe = probe
        self.access_log = config.gateway.access_log
        if self.access_log:
            _access_log.setLevel(logging.INFO)  # asked for explicitly: shown whatever the general log level
        self.server: HttpServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probes: set[asyncio.Task[BackendHealth]] = set()
        self.state_sync: StateSync | None = None  # set by start() when state is shared
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def _concurrency_share(self) -> float:
        """This process's part of a backend's max_concurrency, and of a key's concurrent requests
        while they cannot be counted together (on Redis: tenancy.redis_leases; the workers of one
        machine: tenancy.leases): 1/N
        of the processes sharing them. (Not the admission's `share_at`: a minute's counts are exchanged, so a
        fresh exchange lets each process spend the whole limit; requests in flight are not, so they
        are always split.) Never more than 1/workers: this gateway's own workers share
        them from the start, before the limit sync has seen each other's counts (a worker alone in
        its first round would otherwise take the whole cap)."""
        workers = self.config.gateway.workers
        processes = self.limit_sync.processes if self.limit_sync is not None else workers
        return 1.0 / max(1, workers, processes)

    def tenancy_view(self) -> dict[str, object]:
        """Where keys and limit counters live and whether they can be reached (for /status)."""
        limits: dict[str, object] = (
            self.limit_sync.status()
            if self.limit_sync is not None
            else {"shared": "no", "share": round(self.admission.share_at(time.time()), 3)}
        )
        concurrency: dict[str, object]
        if self.shared_leases is not None:
            concurrency = self.shared_leases.status()
        else:
            kind = "local" if self.leases is not None else "no"  # the workers' file locks, or none
            concurrency = {"shared": kind, "reachable": True, "error": ""}
        return {
            "keys": self.keys.status.to_dict() if self.keys else None,
            "limits": limits,
            "concurrency": concurrency,
        }

    def _budget_alerts(self) -> list[Alert]:
        if self.ledger is None:
            return []
        return budget_alerts(
            BudgetFact(u.kind, u.name, u.spent, u.budget.amount, str(u.budget.period))
            for u in self.budgets.uses()
        )

    def _on_transition(self, transition: Transition) -> None:
        # Losing a backend is worth a warning; finding one, or a workstation going to sleep, is not.
        bad = transition.new in (BackendState.DOWN, BackendState.DEGRADED)
        log.log(logging.WARNING if bad else logging.INFO, "%s", transition)
        self.metrics.on_transition(transition)

    def _on_traced_attempt(self, req: Any, target: Any, attempt: Any, seconds: float) -> None:
        self.metrics.on_attempt(req, target, attempt, seconds)
        if self.tracer is not None:
            self.tracer.attempt_ended(req, target, attempt, seconds)

    def _wake_for(self, route: Route) -> float:
        """The role's targets are all asleep: wake their hosts, start their models on demand; how
        long the request may be held for them."""
        backends = [t.backend.name for t in route.targets]
        hold = self.power.wake_for(backends, f"for a request for role {route.name}")
        if self.on_demand is not None:
            hold = max(hold, self.on_demand.start(backends))
        return hold

    async def _announce_wake(self, event: WakeEvent) -> None:
        self.metrics.on_wake(event.host, event.ok)
        await self.monitor.announce(wake_alert(event))

    async def wake_by_hand(self, host: HostConfig) -> WakeEvent:
        """`aifabric wake HOST` through this gateway: sent now, announced (gateway.wake_routes)."""
        return await self.power.wake_by_hand(host)

    def reload(self, config: FabricConfig) -> None:
        """Swap the routing table atomically; health and per-target state carry over by name."""
        register_config_secrets(config)
        self.client.route_unix(unix_routes(config.backends.values()))
        self.checker.update_config(config)
        self.table = RoutingTable.build(
            config, healths=self.checker.healths, previous=self.table, clock=self.clock
        )
        old_keys = keys_url(self.config)
        self.config = config
        self.forwarder.set_retry(config.retry)
        self.auth.update_master(_master_keys(config))
        self.operator = self._operator_access(config)
        if keys_url(config) != old_keys and self._loop is not None:
            # `keys:` names another store: read it before long, as at start (the old keys hold until then).
            switch = asyncio.ensure_future(self._switch_keys())
            self._switches.add(switch)  # held until done: the loop keeps only weak references to tasks
            switch.add_done_callback(self._switches.discard)
        self.budgets.update_config(config)
        self.metrics.expect_wakes(n for n, h in config.hosts.items() if h.wake is not None)
        if self.ledger is not None:
            self.ledger.pricing = Pricing.from_config(config, self.ledger.pricing.tokenizers)
        self.access_log = config.gateway.access_log
        self.monitor.update_config(config, Notifier(build_sinks(config.monitoring, self.client)))
        self.power.update_config(config)
        self.engine_sleep.update_config(config)

    def local_backend_changed(self, name: str, state: str, why: str) -> None:
        """From the local supervisor's thread: a backend `up` runs is (re)starting, ready, or given up.

        While it (re)starts, its health says `loading` (requests wait for it, the warm-up, instead of
        failing); once ready it is probed at once rather than at the next interval.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._apply_local_state, name, state, why)

    def _apply_local_state(self, name: str, state: str, why: str) -> None:
        health = self.checker.healths.get(name)
        if health is None:
            return
        if state in ("loading", "backoff"):
            transition = health.mark_launching(why, self.clock())
            if self.state_sync is not None:
                self.state_sync.started(name)
            if transition is not None:
                self._on_transition(transition)
        elif state == "ready":
            probe = asyncio.ensure_future(self.checker.probe_one(name))
            self._probes.add(probe)  # held until done: the loop keeps only weak references to tasks
            probe.add_done_callback(self._probes.discard)
        elif state == "failed":
            health.launching = None  # no longer coming back by itself: the next probe says down
        elif state == "idle":  # a model on demand, not running: asleep; the next request starts it
            transition = health.mark_idle(why, self.clock())
            if transition is not None:
                self._on_transition(transition)
        elif state == "stopped":  # on purpose (drill, operator): down now, fallbacks serve, no warm-up hold
            transition = health.mark_stopped(why, self.clock())
            if self.state_sync is not None:  # every worker and replica holds it down too
                self.state_sync.stopped(name, why)
            if transition is not None:
                self._on_transition(transition)

    def _operator_access(self, config: FabricConfig) -> OperatorAccess:
        """The operator views' check: gateway.admin_keys, or a key store key with the admin scope;
        required once any key exists (the fabric file's or the key store's)."""
        gw = config.gateway
        configured = bool(gw.api_keys or gw.admin_keys)
        return OperatorAccess(
            gw.admin_keys,
            any_key_configured=lambda: configured or self.auth.enabled,
            admin_scope=self._admin_scope,
        )

    def _admin_scope(self, key: str) -> bool | None:
        """What the API keys (gateway.api_keys, the key store) know of `key`: its admin scope, or None."""
        try:
            principal = self.auth.check({"authorization": f"Bearer {key}"})
        except ApiError:
            return None
        return principal.admin

    def attach_local(self, control: LocalControl) -> None:
        """Under `aifabric up`: the supervisor of its local backends, behind the /admin/backends routes."""
        self.admin = AdminRoutes(self, control)
        self.local_control = control
        self.on_demand = OnDemand(lambda: self.config, lambda: self.checker.healths, control)
        self.engine_sleep.stop_local = control.idle_backend  # idle_stop of models on demand
        for name, state in control.states().items():  # models on demand not started (before we listened)
            if state == "idle":
                self._apply_local_state(name, "idle", "not running: started when a request needs it")

    async def handle(self, request: Request) -> Response | StreamingResponse:
        # One id for the whole exchange: set on the request, so every route and the forwarder read the
        # same one; every answer carries it and every error names it.
        rid = request.headers["x-request-id"] = request_id(request.headers)
        path = request.path
        versioned = path.startswith("/v1/")
        sub = path[3:] if versioned else path
        api_route = self.api_routes.get(sub)
        if api_route is not None:
            return await self._api(request, sub, api_route, rid)
        try:
            response = await self._route(request, path, sub, versioned)
        except ApiError as exc:
            self.metrics.on_error(exc)
            return self.error_for(path, _tagged(exc, rid), request.headers)
        response.headers.append(("x-request-id", rid))
        return response

    async def _api(
        self, request: Request, sub: str, api_route: tuple[ApiHandler, ErrorRenderer], rid: str
    ) -> Response | StreamingResponse:
        """One request of an API (OpenAI's, Anthropic's, ...), its errors in that API's own shape."""
        serve, render = api_route
        if request.method != "POST":
            not_allowed = MethodNotAllowed(f"{request.path} accepts POST only.", headers={"allow": "POST"})
            self.metrics.on_error(not_allowed)
            return render(_tagged(not_allowed, rid))
        started = self.clock()
        principal: Principal | None = None
        try:
            principal = _principal(request) or self.auth.check(request.headers)
            request.auth = principal  # what the route admits the request as (gateway.admit)
            if principal.budget is not None and self.ledger is not None:
                over = self.budgets.key_over(principal.name, principal.budget)
                if over is not None:
                    raise BudgetExceeded(f"Budget exceeded: {over}.")
            if self.tracer is None:
                response = await serve(request, sub)
            else:
                response = await self.tracer.serve(request, sub, serve)
        except ApiError as exc:
            response = render(_tagged(exc, rid))
            self.metrics.on_error(exc)
            if self.ledger is not None and principal is not None:
                # Refused or failed without an answer from a backend: who was refused, and why.
                spent = self.clock() - started
                self.ledger.record(
                    Pending(time.time(), principal.name, exc.role, "", "", sub, exc.status, spent, rid)
                )
        else:
            tag = ("x-request-id", rid)
            if tag not in response.headers:  # forwarded answers carry it already (the same id)
                response.headers.append(tag)
        elapsed = self.clock() - started
        fwd = request.forwarded
        if type(fwd) is ForwardRequest and fwd.attempts:  # a backend was asked: the gateway's own share
            self.metrics.on_request(response, elapsed, elapsed - fwd.waited)
        else:
            self.metrics.on_request(response, elapsed)
        if self.access_log:
            _log_access(request, response, elapsed, principal)
        return response

    async def _route(
        self, request: Request, path: str, sub: str, versioned: bool
    ) -> Response | StreamingResponse:
        if versioned and sub.startswith("/responses/") and request.method in ("GET", "HEAD"):
            self.auth.check(request.headers)
            return await self.responses.get(sub[len("/responses/") :])
        if sub == "/models" or sub.startswith("/models/"):
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed(f"{path} accepts GET only.", headers={"allow": "GET, HEAD"})
            principal = _principal(request) or self.auth.check(request.headers)
            if anthropic_models.HEADER in request.headers:  # Anthropic's SDKs: Anthropic's shape
                if sub == "/models":
                    return anthropic_models.models_page(self.table, principal, request.query)
                return anthropic_models.model_info(self.table, unquote(sub[len("/models/") :]), principal)
            if sub == "/models":
                return self.api.models(principal)
            # The SDKs percent-encode the id (`openai%2Fstrong`, `local%2Fchat`).
            return self.api.model(unquote(sub[len("/models/") :]), principal)
        if not versioned:
            if sub in _OPERATOR_PATHS:
                self.operator.check(request.headers, request.client)
            if sub == "/alerts" and request.method in ("GET", "HEAD"):
                view = redact_values(self.monitor.view(), config_secrets(self.config))
                return Response(200, orjson.dumps(view))
            if sub == RELOAD_PATH:
                return await self.reloads.route(request)
            if self.wake_routes.serves(sub):
                return await self.wake_routes.route(request)
            if self.admin is not None and sub.startswith("/admin/"):
                admin = self.admin.route(request)
                if admin is not None:
                    return await admin
            ops = self.ops.route(request)
            if ops is not None:
                return await ops
        raise NotFound(f"No route for {shown(request.method, 20)} {shown(path)}.", code="unknown_route")

    def on_head(self, request: Request) -> Principal | Response | None:
        """The listener's head hook, before the body is read: an API request's key is checked (its
        principal kept for the route), and a body sent to a route that takes none is refused, so a
        client without a valid key, or with nowhere to send it, never has its body buffered."""
        path, method, headers = request.path, request.method, request.headers
        versioned = path.startswith("/v1/")
        sub = path[3:] if versioned else path  # the API is served without the prefix too
        api_route = self.api_routes.get(sub)
        try:
            if (
                api_route is not None
                or sub == "/models"
                or sub.startswith("/models/")
                or (versioned and sub.startswith("/responses/"))
            ):
                return self.auth.check(headers)
            if not versioned and path.startswith("/admin/"):
                # Who may steer the gateway, and whether the route exists, are known from the head:
                # a refused or misdirected body is never buffered (401/403/404 at once).
                check_admin_access(self.operator, request)
                if (
                    path != RELOAD_PATH
                    and not self.wake_routes.serves(path)
                    and (self.admin is None or not self.admin.serves(path))
                ):
                    raise NotFound(f"No route for {shown(method, 20)} {shown(path)}.", code="unknown_route")
                return None
            if not versioned and method in ("GET", "HEAD"):
                return None
            if "content-length" not in headers and "transfer-encoding" not in headers:
                return None  # no body to spare: the route is answered as usual
            raise NotFound(f"No route for {shown(method, 20)} {shown(path)}.", code="unknown_route")
        except ApiError as exc:
            self.metrics.on_error(exc)
            response = self.error_for(path, _tagged(exc, request_id(headers)), headers)
            if api_route is not None:
                self.metrics.on_request(response, 0.0)
                if self.access_log:
                    _log_access(request, response, 0.0, None)
            return response

    def error_for(self, path: str, exc: ApiError, headers: dict[str, str] | None = None) -> Response:
        """An error in the shape of the API the path belongs to (Anthropic's on /v1/messages, and on
        /v1/models for a request that says `anthropic-version`; OpenAI's elsewhere)."""
        route = self.api_routes.get(path[3:])
        if route is not None:
            return route[1](exc)
        if headers is not None and anthropic_models.HEADER in headers and _is_models(path):
            return anthropic_routes.anthropic_error_response(exc)
        return error_response(exc)

    def listener_error(self, status: int, message: str, path: str) -> Response:
        """The listener's own errors (body too large, a timeout, a bug) in the shape of the path's API,
        with a request id of their own (the request's head may not even have been read)."""
        return self.error_for(path, _tagged(status_exception(status, message), new_request_id()))

    async def start(
        self, host: str, port: int, *, sock: object = None, reuse_port: bool = False
    ) -> HttpServer:
        self._loop = asyncio.get_running_loop()
        await self._start_keys()
        if self.ledger is not None:
            self.ledger.start()  # a ledger that cannot be opened stops the start, with the reason
        gw = self.config.gateway
        self.server = HttpServer(
            self.handle,
            max_body_bytes=gw.max_body_bytes,
            error_factory=self.listener_error,
            log_exception=lambda r: log.exception("unhandled error serving %s %s", r.method, r.path),
            head_hook=self.on_head,
            max_buffered_bytes=gw.max_buffered_bytes,
            head_timeout=gw.head_timeout,
            body_timeout=gw.body_timeout,
            max_connections=connection_cap(gw.max_connections),
            ssl=server_tls_context(gw.tls) if gw.tls is not None else None,
        )
        await self.server.start(host, port, sock=sock, reuse_port=reuse_port)  # type: ignore[arg-type]
        if self.config.gateway.workers > 1 and self.config.state == "memory":
            # The workers of one port keep their stored responses in files, so that a conversation
            # continues on whichever worker takes its next request; the port names the directory.
            self.responses.store = open_response_store(self.config, port=port or self.server.port)
        self._start_limits(port or self.server.port)
        if self.worker is not None and self.config.gateway.workers > 1:
            self._start_shared_metrics(port or self.server.port)
        if self.probe:
            # With workers or replicas sharing state, the sync task runs the checker while it holds
            # the probe lease and applies the holder's health otherwise; alone, the checker just runs.
            self.state_sync = open_sync(
                self.config,
                self.checker,
                lambda: self.table,
                port=port or self.server.port,
                clock=self.clock,
                on_transition=self.metrics.on_transition,
            )
            if self.state_sync is not None:  # a reload another worker or replica announced
                self.reloads.attach(self.state_sync)
            control = self.state_sync.run(self._stop) if self.state_sync else self.checker.run(self._stop)
            self._tasks.append(asyncio.create_task(control))
            # Alert rules over the same health the checker writes, every monitoring.interval.
            self._tasks.append(asyncio.create_task(self.monitor.run(self._stop)))
        if self.config.gateway.watch:
            self._tasks.append(asyncio.create_task(self.reloads.watch(self._stop)))
        if any(b.idles for b in self.config.backends.values()):
            self._tasks.append(asyncio.create_task(self.engine_sleep.run(self._stop)))
        return self.server

    async def _start_keys(self) -> None:
        """Read the key store before the first request (a gateway with keys never serves open, not
        even for a second), then keep it current beside the listener."""
        try:
            store = await asyncio.to_thread(open_key_store, self.config, create=False)
        except StateStoreError as exc:
            # Fail closed: without the store only the master keys get in, until it can be read.
            log.error("cannot open the key store, only gateway.api_keys are honoured: %s", exc)
            self.auth.require_keys()
            return
        self.keys = KeyWatcher(store, self.auth.update_records)
        await self.keys.refresh()
        if not self.keys.status.reachable:
            self.auth.require_keys()
        self._keys_task = asyncio.create_task(self.keys.run(self._stop))
        self._tasks.append(self._keys_task)

    async def _switch_keys(self) -> None:
        """A reload changed `keys:`: stop watching the old store, read and watch the new one."""
        if self._keys_task is not None:
            self._keys_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keys_task
        if self.keys is not None:
            self.keys.close()
            self.keys = None
        await self._start_keys()
        log.warning("key store is now %s", self.keys.status.store if self.keys else keys_url(self.config))

    def _start_limits(self, port: int) -> None:
        """Share rate-limit counts with the other processes: the replicas on Redis, or the workers
        of this port through files (see tenancy.limitsync); a lone process shares nothing."""
        exchange: LimitExchange | None = None
        if self.config.state != "memory":
            exchange = RedisExchange(self.config.state)
        elif self.config.gateway.workers > 1:
            exchange = FileExchange(default_state_dir(port))
        if self.config.state == "memory" and self.config.gateway.workers > 1:
            # A key's requests in flight: counted by the workers together (file locks), not split.
            directory = default_state_dir(port)
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.admission.leases = self.leases = FileLeases(directory)
        if self.config.state != "memory":
            # A key's requests in flight: counted by every replica and worker together, on Redis.
            self.admission.shared_leases = self.shared_leases = RedisLeases(self.config.state)
            self._tasks.append(asyncio.create_task(self.shared_leases.run(self._stop)))
        if exchange is not None:
            self.limit_sync = LimitSync(self.admission, exchange, processes=self.config.gateway.workers)
            self._tasks.append(asyncio.create_task(self.limit_sync.run(self._stop)))

    def exposition(self, open_fds: bool = False) -> str:
        """This process's own Prometheus exposition (its counters, its view of the gauges). `open_fds`:
        with `process_open_fds`, for a scrape; it lists /proc/self/fd (~2 ms at 5,000 connections), too
        dear for the workers' once-a-second publishing and the status page's polls, which read counters."""
        body = render_metrics(self.metrics, self.table, self.clock()).decode()
        extra = usage_metrics(self.ledger, self.budgets) + process_lines(open_fds)
        return body + "\n".join(extra) + "\n"

    def _start_shared_metrics(self, port: int) -> None:
        """Write this worker's counters beside the others' every second, for whoever answers a scrape
        (observability.merged); rendering is on the loop, the file I/O in a thread."""
        directory = default_state_dir(port)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        assert self.worker is not None
        shared = self.shared_metrics = SharedMetrics(directory, self.worker)

        async def publish() -> None:
            while not self._stop.is_set():
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(shared.publish, self.exposition())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), METRICS_PUBLISH_INTERVAL)

        self._tasks.append(asyncio.create_task(publish()))

    async def close(self) -> None:
        self._stop.set()
        if self.server is not None:
            await self.server.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.close)  # what is queued is written before we return
        await self.power.aclose()
        if self.on_demand is not None:
            await self.on_demand.aclose()
        await self.client.aclose()
        await self.responses.store.close()
        if self.keys is not None:
            self.keys.close()
        if self.limit_sync is not None:
            await self.limit_sync.close()
        if self.leases is not None:
            self.leases.close()
        if self.shared_leases is not None:
            await self.shared_leases.close()
        if self.shared_metrics is not None:  # the last counts, for a worker that replaces this one
            with contextlib.suppress(OSError):
                self.shared_metrics.publish(self.exposition())
        if self.tracer is not None:  # the spans still queued are exported before the process ends
            await asyncio.to_thread(self.tracer.shutdown)


METRICS_PUBLISH_INTERVAL = 1.0  # seconds between a worker's writes of its counters (observability.merged)

_access_log = logging.getLogger("aifabric.access")


def _tagged(exc: ApiError, rid: str) -> ApiError:
    """`exc` naming the request's id, in its message and its headers, whatever shape renders it.

    Every API's errors pass here before their renderer (OpenAI's, Anthropic's). A backend's words
    are redacted where they enter (`Forwarder._upstream_error`, so traces never carry a key either);
    this redacts again for the errors built from other text (a client's bearer token, say) before
    any client sees it."""
    exc.message = f"{redact(exc.message)} (request id {rid})"
    exc.args = (exc.message,)
    exc.headers["x-request-id"] = rid
    return exc


def _master_keys(config: FabricConfig) -> tuple[Secret, ...]:
    """The fabric file's keys for /v1: gateway.api_keys, and the admin keys too once /v1 needs keys."""
    gw = config.gateway
    return (*gw.api_keys, *gw.admin_keys) if gw.api_keys else ()


def _tracer(config: FabricConfig) -> RequestTracer | None:
    if config.tracing is None:
        return None
    try:
        from aifabric.observability.tracing import RequestTracer
    except ImportError as exc:  # the `otel` extra is not installed
        raise ConfigError(
            [
                ConfigProblem(
                    config.source,
                    config.loaded.key_lines.get("tracing"),
                    f"tracing needs OpenTelemetry, which is not installed ({exc.name})",
                    f"{install_hint(Extra.OTEL)}, or remove the tracing: section",
                )
            ]
        ) from None
    return RequestTracer(config.tracing)


def _principal(request: Request) -> Principal | None:
    """The principal the head hook found, or None (a request handed to `handle` directly)."""
    auth = request.auth
    return auth if isinstance(auth, Principal) else None


def _tokenizers(config: FabricConfig) -> LocalTokenizers:
    """The prompt counters of local llama.cpp models (their server, or their GGUF), for rows without usage."""
    from aifabric.errors import LocalBackendError
    from aifabric.local.models import resolve_model

    paths: dict[str, str] = {}
    servers: dict[str, tuple[str, str | None]] = {}
    for name, backend in config.backends.items():
        if backend.local is not None and backend.local.engine == "llama-server":
            # It counts with its own template and tokenizer (/apply-template, /tokenize), asked by
            # the ledger's writer for the rows it reported no usage for (a stream cut, a client gone).
            url = urlsplit(backend.url)
            key = backend.api_key.reveal() if backend.api_key else None
            servers[name] = (f"{url.scheme}://{url.netloc}", key)
        elif backend.local is not None and backend.local.engine == "llama-cpp-python":
            try:
                paths[name] = str(resolve_model(backend.local.model, backend.local.engine).path)
            except LocalBackendError:
                continue  # not installed here: its prompts are estimated
    return LocalTokenizers(paths, servers)


def _log_access(
    request: Request, response: Response | StreamingResponse, seconds: float, principal: Principal | None
) -> None:
    """One line per API request: what was asked, what served it, how it went. Never a body or a key."""
    served = dict(response.headers)
    _access_log.info(
        "%s %s %d",
        request.method,
        request.path,
        response.status,
        extra={
            "request_id": served.get("x-request-id"),
            "key": principal.name if principal is not None else None,  # the key's name, never the key
            "role": served.get("x-aifabric-role"),
            "backend": served.get("x-aifabric-backend"),
            "attempts": served.get("x-aifabric-attempts"),
            "status": response.status,
            "duration_ms": round(seconds * 1000, 2),
            "client": request.client,
        },
    )


async def serve_gateway(
    config: FabricConfig,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    ready: Callable[[Gateway], None] | None = None,
    sock: object = None,
    reuse_port: bool = False,
    worker: int | None = None,
) -> None:
    """Serve until `stop` is set (`worker`: this worker's index under `serve --workers N`)."""
    gateway = Gateway(config)
    gateway.worker = worker
    await gateway.start(host, port, sock=sock, reuse_port=reuse_port)
    if ready is not None:
        ready(gateway)
    # Closed after the `try`, not in a `finally`: see _Connection._write_stream (aifabric.http.server)
    # on awaiting while an exception is handled, in code compiled by mypyc.
    error: BaseException | None = None
    try:
        await stop.wait()
    except BaseException as exc:
        error = exc
    await gateway.close()
    if error is not None:
        raise error


# The cyclic collector's first generation, in container allocations between two collections (Python's
# default is 700). A request allocates dozens of short-lived containers that reference counting frees,
# so at the default a collection ran every few requests, each also walking the survivors; at this
# threshold it runs every few hundred, and at worst holds ~10,000 objects of garbage cycles (a few MB)
# a moment longer. bench/compare.py: ~3 µs of CPU per request less.
_GC_GEN0 = 10_000


def settle_heap() -> None:
    """Once the gateway serves: what startup built (modules, the config, the routing table) lives as long
    as the process, so it is moved out of the collector's sight (`gc.freeze`: never traversed again),
    and the first generation is collected less often (_GC_GEN0). Again after each applied reload (see
    `settled`). For the process that runs the gateway (`serve`, `up`), not for one that embeds it (a
    test's): freezing would keep that process's garbage cycles for good."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(_GC_GEN0, gen1, gen2)


def settled(reloader: Callable[[], ReloadOutcome]) -> Callable[[], ReloadOutcome]:
    """`reloader`, and once a reload applied, the heap settled again: unfrozen first, since a frozen
    object in a reference cycle is never freed, and the replaced config and routing table hold some."""

    def reload_and_settle() -> ReloadOutcome:
        outcome = reloader()
        if outcome.applied:  # the old config and table are garbage now: let them go
            gc.unfreeze()
            settle_heap()
        return outcome

    return reload_and_settle


def run_loop(coro: Coroutine[Any, Any, None]) -> None:
    """uvloop where it exists (a dependency on Linux): the listener's and client's I/O is its hot path."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def run_gateway(
    config: FabricConfig,
    host: str,
    port: int,
    *,
    ready: Callable[[Gateway], None] | None = None,
    sock: object = None,
    reuse_port: bool = False,
    config_path: str | None = None,
    adapt: Callable[[FabricConfig], FabricConfig] | None = None,
    worker: int | None = None,
) -> None:
    """Blocking: serve until SIGINT or SIGTERM, then drain in-flight requests and return.

    With `config_path`, SIGHUP reloads the fabric file: a valid file replaces the routing table whole
    (health and ejection state carry over by name); a broken one is reported and the old table stays.
    `adapt` is applied to every reloaded config as it was to `config` (the command line's overrides).
    """
    holder: list[Gateway] = []

    def on_ready(gateway: Gateway) -> None:
        holder.append(gateway)
        settle_heap()
        if config_path is not None:
            from aifabric.gateway.reload import reload_from_file

            path = config_path
            gateway.reloader = settled(lambda: reload_from_file(gateway, path, adapt=adapt))
        # A worker of `serve --workers N` starts with SIGHUP held (cli/serve.py): a reload sent while
        # it was starting is handled now that it can be.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        if ready is not None:
            ready(gateway)

    def reload() -> None:
        reloader = holder[0].reloader if holder else None
        if reloader is None:
            return
        outcome = reloader()
        holder[0].reloads.record(outcome)
        log.log(logging.WARNING if outcome.applied else logging.ERROR, "%s", outcome.message)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload)
        await serve_gateway(
            config, host, port, stop, ready=on_ready, sock=sock, reuse_port=reuse_port, worker=worker
        )

    run_loop(main())


def _is_models(path: str) -> bool:
    sub = path[3:] if path.startswith("/v1/") else path
    return sub == "/models" or sub.startswith("/models/")
