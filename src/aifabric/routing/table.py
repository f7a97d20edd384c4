"""The routing table: the one snapshot where the data plane and the control plane meet.

Built once from a `FabricConfig` (and again on reload, then swapped whole). The data plane reads it
without locks: `resolve(name)` finds the role a client's `model` names, `plan(route, now)` orders the
candidates (the role's targets by the balancer, then its fallback roles' in order, cycle-safe). The
control plane writes only the per-backend `BackendHealth` objects and per-target counters inside it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import orjson

from aifabric.backends.base import BackendAdapter, RequestField, adapter_for
from aifabric.config.schema import (
    BackendConfig,
    BalancePolicy,
    ClientApi,
    FabricConfig,
    RoleConfig,
    default_balance,
)
from aifabric.core import BackendHealth
from aifabric.http.client import Origin, split_url
from aifabric.routing.affinity import pin
from aifabric.routing.balance import only_loading, order_plan
from aifabric.routing.overflow import overflow_order
from aifabric.routing.target import TargetState

__all__ = ["Endpoint", "Plan", "Route", "RoutingTable"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How to reach one backend, computed once: origin, path prefix, the headers it needs."""

    name: str
    origin: Origin
    prefix: str  # e.g. "/v1"
    headers: tuple[tuple[str, str], ...]
    adapter: BackendAdapter
    try_timeout: float | None
    # The client APIs it serves natively (the fabric file's `apis:`, else its kind's), and those of
    # them it may also stream natively; every other API is translated to chat completions for it.
    native: frozenset[ClientApi] = frozenset()
    native_streams: frozenset[ClientApi] = frozenset()
    # (api, field) pairs its native routes accept but ignore (its kind's `unhonoured`): a request that
    # sets one of them is translated for it instead.
    unhonoured: frozenset[tuple[ClientApi, RequestField]] = frozenset()
    # Its kind's tokenizer route (vLLM's /tokenize) turned out to be missing (gateway.missing_routes).
    tokenizer_missing: bool = False

    @property
    def tokenize_path(self) -> str | None:
        """The route that counts tokens with the model's own tokenizer (its kind's), unless missing."""
        return None if self.tokenizer_missing else self.adapter.tokenize_path

    def serves_natively(self, api: ClientApi, stream: bool) -> bool:
        return api in (self.native_streams if stream else self.native)

    def beside_api(self, path: str) -> str:
        """`path` under the base URL's path without its `/v1`: where an engine serves its own routes
        beside the OpenAI API (vLLM's `/tokenize`, TEI's `/rerank`)."""
        root = self.prefix[: -len("/v1")] if self.prefix.endswith("/v1") else self.prefix
        return root + path

    def without_native(self, api: ClientApi) -> Endpoint:
        """This endpoint with `api` no longer native (the backend turned out to lack its route)."""
        return replace(self, native=self.native - {api}, native_streams=self.native_streams - {api})

    def without_tokenizer(self) -> Endpoint:
        """This endpoint without its tokenizer route (the backend answered "no such route" there)."""
        return replace(self, tokenizer_missing=True)

    def honours(self, api: ClientApi, fields: frozenset[RequestField]) -> bool:
        """Whether its native route of `api` acts on every one of `fields` (those a request sets)."""
        return not fields or not any((api, f) in self.unhonoured for f in fields)

    @classmethod
    def from_config(cls, backend: BackendConfig) -> Endpoint:
        origin, path = split_url(backend.url)
        headers = [("content-type", "application/json")]
        if backend.api_key:
            # The backend's own key; the client's Authorization header is never forwarded.
            headers.append(("authorization", f"Bearer {backend.api_key.reveal()}"))
        adapter = adapter_for(backend.kind)
        native = adapter.native_apis_for(backend) if backend.apis is None else frozenset(backend.apis)
        return cls(
            name=backend.name,
            origin=origin,
            prefix=path.rstrip("/"),
            headers=tuple(headers),
            adapter=adapter,
            try_timeout=backend.timeout,
            native=native,
            native_streams=native - adapter.translated_streams,
            unhonoured=frozenset((api, f) for api, fields in adapter.unhonoured.items() for f in fields),
        )


@dataclass(slots=True)
class Route:
    """A role as the data plane sees it."""

    name: str
    kind: str
    targets: list[TargetState]
    fallbacks: tuple[str, ...]
    config: RoleConfig
    balance: BalancePolicy = "p2c"  # the role's `balance:`, or its default (see default_balance)


@dataclass(slots=True, init=False)
class Plan:
    """The candidates of one request in the order to try them, and whether the role overflowed
    (its own targets saturated: the fallbacks lead). Not changed once made (not `frozen`, for a
    compiled `__init__`: see routing.retry.Deadline)."""

    candidates: list[TargetState]
    overflowed: bool
    pinned: bool  # the session's target leads (routing.affinity)

    def __init__(self, candidates: list[TargetState], overflowed: bool = False, pinned: bool = False) -> None:
        self.candidates = candidates
        self.overflowed = overflowed
        self.pinned = pinned


@dataclass
class RoutingTable:
    config: FabricConfig
    routes: dict[str, Route] = field(default_factory=dict)
    names: dict[str, Route] = field(default_factory=dict)  # roles and aliases
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    healths: dict[str, BackendHealth] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    models_body: bytes = b""

    @classmethod
    def build(
        cls,
        config: FabricConfig,
        *,
        healths: dict[str, BackendHealth] | None = None,
        previous: RoutingTable | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> RoutingTable:
        """A new table; health and per-target state carry over from `previous` where names match."""
        table = cls(config=config, rng=rng or random.Random(), clock=clock)
        healths = dict(healths or (previous.healths if previous else {}))
        for name, backend in config.backends.items():
            table.endpoints[name] = Endpoint.from_config(backend)
            if name not in healths:
                healths[name] = BackendHealth(name)
            table.healths[name] = healths[name]
        old_targets: dict[tuple[str, str, str], TargetState] = {}
        if previous is not None:
            for route in previous.routes.values():
                for t in route.targets:
                    old_targets[(route.name, t.backend.name, t.model)] = t
        for role in config.roles.values():
            targets = []
            for tc in role.targets:
                backend = config.backends[tc.backend]
                old = old_targets.get((role.name, tc.backend, tc.model))
                if old is not None and old.backend == backend:
                    old.weight = tc.weight
                    targets.append(old)
                    continue
                targets.append(
                    TargetState.from_config(
                        role.name, backend, tc.model, table.healths[tc.backend], weight=tc.weight
                    )
                )
            table.routes[role.name] = Route(
                role.name,
                role.kind,
                targets,
                role.fallbacks,
                role,
                default_balance(role, config.backends),
            )
        table.names = dict(table.routes)
        for alias, role_name in config.aliases.items():
            table.names[alias] = table.routes[role_name]
        table.models_body = table._render_models()
        return table

    def resolve(self, name: str) -> Route | None:
        return self.names.get(name)

    def groups(self, route: Route) -> list[list[TargetState]]:
        """The role's targets, then each fallback role's in order (breadth-first, each role once)."""
        seen_roles = {route.name}
        groups = [route.targets]
        queue = list(route.fallbacks)
        while queue:
            name = queue.pop(0)
            if name in seen_roles:
                continue  # the loader rejects cycles; this keeps a reload race harmless too
            seen_roles.add(name)
            fallback = self.routes.get(name)
            if fallback is None:
                continue
            groups.append(fallback.targets)
            queue.extend(fallback.fallbacks)
        return groups

    def plan(self, route: Route, now: float) -> list[TargetState]:
        """Ordered candidates: healthy targets of the role by the balancer, then its fallbacks'."""
        return self.route_plan(route, now).candidates

    def route_plan(self, route: Route, now: float, session: bytes | None = None, share: float = 1.0) -> Plan:
        """`plan`, or the overflow order when the role's own targets are all saturated (routing.overflow);
        with a `session` key, that session's target of the role leads while it has room (routing.affinity;
        `share` is this process's part of the backends' `max_concurrency`)."""
        if session is None and len(route.targets) == 1 and not route.fallbacks:
            # One candidate, healthy or not (order_plan's panic order of one): the plan, without
            # sorting health tiers on every request of the common one-target role.
            return Plan([route.targets[0]])
        groups = self.groups(route)
        overflow = route.config.overflow
        if overflow is not None:
            ordered = overflow_order(groups, now, self.rng, route.balance, overflow)
            if ordered is not None:
                return Plan(ordered, overflowed=True)
        candidates = order_plan(groups, now, self.rng, route.balance)
        pinned = session is not None and pin(session, route.targets, candidates, now, share)
        return Plan(candidates, pinned=pinned)

    def only_loading(self, route: Route, now: float) -> bool:
        """Nothing of the role or its fallbacks can serve, and something is still loading its model."""
        return only_loading([t for g in self.groups(route) for t in g], now)

    def _render_models(self) -> bytes:
        created = int(time.time())
        data = []
        for name, route in self.names.items():
            entry: dict[str, object] = {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "aifabric",
                "role": route.name,
                "kind": route.kind,
            }
            if name != route.name:
                entry["alias_of"] = route.name
            data.append(entry)
        return orjson.dumps({"object": "list", "data": data})
