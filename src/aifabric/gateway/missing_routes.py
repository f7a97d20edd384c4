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

__all__ = ["MissingRoutes", "RouteMissing"]

log = logging.getLogger("aifabric.gateway")


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
        self,
        origin: Endpoint,
        endpoint: Endpoint,
        dialect: Dialect,
        body: BodyLike,
        stream: bool,
        missing: RouteMissing,
    ) -> Endpoint | None:
        """Note the missing route (`endpoint` is the one the request was sent with, `origin` the routing
        table's, whose finding it is); the endpoint to send the same request to once more (translated,
        on its other counting route, or answered locally), or None when this target cannot serve it at
        all. Each retry has one route fewer, so a request tries a target a bounded number of times."""
        reduced = self.note(origin, endpoint, dialect.api, missing, dialect.translatable)
        if reduced == endpoint or not dialect.can_serve(reduced, stream):
            return None  # nothing left to try here
        if dialect.native_route(reduced, stream) and (
            dialect.native_request(reduced, body, missing.model)[0] == missing.path
        ):
            return None  # the same route again: nothing else to try here
        return reduced

    def note(
        self, origin: Endpoint, endpoint: Endpoint, api: ClientApi, missing: RouteMissing, translatable: bool
    ) -> Endpoint:
        """The route `missing.path` of `api` answered "no such route" on `endpoint` (`origin` as the
        routing table has it, or that with routes already found missing): remember it (logged once),
        and return the endpoint without that route. Another request may have found it first."""
        key = (origin.name, api)
        known = self._known.get(key)
        current = known[1] if known is not None and known[0] is origin else endpoint
        tokenizer = current.tokenize_path
        if tokenizer is not None and missing.path == current.beside_api(tokenizer):
            reduced = current.without_tokenizer()
            if reduced == current:
                return current
            self._known[key] = (origin, reduced)
            log.warning(
                "backend %s has no tokenizer route (HTTP %s on POST %s), although its kind has one: "
                "its %s counts are estimated where the API allows it, else other targets count them "
                "(it is not counted as a failure). A server of its kind older than that route, or a "
                "proxy in front of it, does this: give the role a target that counts",
                origin.name,
                missing.status,
                missing.path,
                api,
            )
            return reduced
        reduced = current.without_native(api)
        if reduced == current:
            return current  # known already (another request found it first)
        self._known[key] = (origin, reduced)
        apis = ", ".join(sorted(reduced.native)) if reduced.native else ""
        then = (
            "its requests are translated to chat completions for it"
            if translatable
            else "it is not asked for that API any more; other targets serve it"
        )
        log.warning(
            "backend %s has no native %s route (HTTP %s on POST %s), although its kind or `apis:` says "
            "it serves it: %s (it is not counted as a failure). Declare what it serves: "
            "backends.%s.apis: [%s] in the fabric file",
            origin.name,
            api,
            missing.status,
            missing.path,
            then,
            origin.name,
            apis,
        )
        return reduced
