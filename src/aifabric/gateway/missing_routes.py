"""Native routes a backend turned out to lack, although its kind (or its `apis:`) said it serves them.

An `openai`-kind URL that is not OpenAI's, an older vLLM, a proxy in front of llama-server: asked
natively for /v1/responses, /v1/messages, /v1/rerank, ..., such a server answers 404 (or 405) because
the route does not exist there. That says nothing about its health, so the forwarder neither counts it
as a failure nor ejects the target (which would also take its chat traffic away): it retries the
request translated to chat completions on the same target when the API translates, else it goes on to
the next candidate as for a target that does not serve the API. This registry remembers the finding
per backend and API, so later requests go the right way at once, and says it once, at WARNING, with
the fix. It is forgotten when a reload rebuilds the backend's endpoint (the operator may have fixed
`apis:`, or upgraded the server).
"""

from __future__ import annotations

import logging

from aifabric.config.schema import ClientApi
from aifabric.gateway.dialects.base import BodyLike, Dialect
from aifabric.routing.table import Endpoint

__all__ = ["ROUTE_MISSING", "MissingRoutes", "RouteMissing"]

log = logging.getLogger("aifabric.gateway")

# The outcome such an attempt is counted under (metrics, traces): neither "ok" nor a failure class.
ROUTE_MISSING = "route_missing"


class RouteMissing(Exception):
    """A native route beyond chat completions answered "no such route" (404/405, see
    `backends._errors.route_missing`): the target lacks that API, it is not failing."""

    def __init__(self, status: int, path: str, model: str) -> None:
        super().__init__(f"HTTP {status} on POST {path}")
        self.status = status
        self.path = path
        self.model = model


class MissingRoutes:
    """Per (backend, API): the endpoint the route was found missing on, and that endpoint without the
    API native. Bounded by the number of backends times the number of APIs."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[tuple[str, ClientApi], tuple[Endpoint, Endpoint]] = {}

    def endpoint(self, endpoint: Endpoint, api: ClientApi) -> Endpoint:
        """`endpoint` as requests of `api` should see it: without that API native once its route was
        found missing on this very endpoint (a reload's new endpoint starts afresh)."""
        if not self._known:
            return endpoint
        known = self._known.get((endpoint.name, api))
        if known is None or known[0] is not endpoint:
            return endpoint
        return known[1]

    def retry(
        self, endpoint: Endpoint, dialect: Dialect, body: BodyLike, stream: bool, missing: RouteMissing
    ) -> Endpoint | None:
        """Note the missing route; the endpoint to send the same request to once more (translated, or
        answered locally), or None when this target cannot serve it at all (or only on that route)."""
        reduced = self.note(endpoint, dialect.api, missing.status, missing.path, dialect.translatable)
        if not dialect.can_serve(reduced, stream):
            return None
        if dialect.native_route(reduced, stream) and (
            dialect.native_request(reduced, body, missing.model)[0] == missing.path
        ):
            return None  # the same route again (vLLM's /tokenize, say): nothing else to try here
        return reduced

    def note(
        self, endpoint: Endpoint, api: ClientApi, status: int, path: str, translatable: bool
    ) -> Endpoint:
        """The route of `api` answered `status` on `endpoint`: remember it (logged once), and return
        the endpoint without that API native."""
        key = (endpoint.name, api)
        known = self._known.get(key)
        if known is not None and known[0] is endpoint:
            return known[1]
        reduced = endpoint.without_native(api)
        self._known[key] = (endpoint, reduced)
        apis = ", ".join(sorted(reduced.native)) if reduced.native else ""
        then = (
            "its requests are translated to chat completions for it"
            if translatable
            else "it is not asked for that API any more; other targets serve it"
        )
        log.warning(
            "backend %s has no native %s route (HTTP %s on POST %s), although its kind or `apis:` "
            "says it serves it: %s (it is not counted as a failure). Declare what it serves: "
            "backends.%s.apis: [%s] in the fabric file",
            endpoint.name,
            api,
            status,
            path,
            then,
            endpoint.name,
            apis,
        )
        return reduced
