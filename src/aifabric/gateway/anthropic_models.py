"""`GET /v1/models` and `/v1/models/{id}` in Anthropic's shape, for a request that says `anthropic-version`.

Anthropic's SDKs and Claude Code send `anthropic-version` on every request; OpenAI's clients never do,
so the header alone picks the shape (the plain path pays one dict lookup for it):

    {"data": [{"type": "model", "id", "display_name", "created_at", "lifecycle"}, ...],
     "has_more": false, "first_id": "...", "last_id": "..."}

Only the roles `/v1/messages` serves (kind `chat`) and their aliases are listed, in the order of the
OpenAI list, paged as Anthropic documents (`limit` 1..1000, default 20; `after_id` / `before_id`
cursors). `created_at` is when the routing table was built (RFC 3339): Anthropic's "release date", for
which an epoch is allowed when unknown. A key limited to some roles sees only those.
"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import parse_qs

import orjson

from aifabric.errors import BadRequest, ModelNotFound
from aifabric.gateway.request_ids import shown
from aifabric.http.server import Response
from aifabric.routing.table import RoutingTable
from aifabric.tenancy.principal import Principal

__all__ = ["HEADER", "MESSAGES_KINDS", "model_info", "models_page"]

HEADER = "anthropic-version"
_DEFAULT_LIMIT = 20
_MAX_LIMIT = 1000
# The kinds of role Anthropic's Messages API is served on: anthropic_routes resolves only these, and
# only these are listed.
MESSAGES_KINDS = ("chat",)

# (the OpenAI /v1/models body) -> its chat models as Anthropic's ModelInfo objects, each with its role.
# Keyed by the body itself, as openai_routes' filtered lists are: a reload renders a new one.
_rendered: dict[bytes, list[tuple[str, dict[str, Any]]]] = {}


def _models(table: RoutingTable) -> list[tuple[str, dict[str, Any]]]:
    models = _rendered.get(table.models_body)
    if models is None:
        models = []
        for entry in orjson.loads(table.models_body)["data"]:
            if entry.get("kind") not in MESSAGES_KINDS:
                continue
            name, role = entry["id"], entry["role"]
            created = datetime.datetime.fromtimestamp(entry["created"], datetime.UTC)
            info = {
                "type": "model",
                "id": name,
                "display_name": name if name == role else f"{name} (alias of {role})",
                "created_at": created.isoformat().replace("+00:00", "Z"),
                "lifecycle": "active",
            }
            models.append((role, info))
        if len(_rendered) > 16:
            _rendered.clear()
        _rendered[table.models_body] = models
    return models


def _visible(table: RoutingTable, principal: Principal) -> list[dict[str, Any]]:
    return [info for role, info in _models(table) if principal.allows(role)]


def _param(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _limit(query: dict[str, list[str]]) -> int:
    raw = _param(query, "limit")
    if raw is None:
        return _DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= _MAX_LIMIT:
        raise BadRequest(
            f"limit: must be an integer from 1 to {_MAX_LIMIT}, got '{shown(raw)}'.", param="limit"
        )
    return limit


def _cursor(ids: list[str], value: str, name: str) -> int:
    try:
        return ids.index(value)
    except ValueError:
        raise BadRequest(f"{name}: no model '{shown(value)}' in this list.", param=name) from None


def models_page(table: RoutingTable, principal: Principal, query: str) -> Response:
    """One page of Anthropic's model list (`GET /v1/models?limit=&after_id=&before_id=`)."""
    models = _visible(table, principal)
    params = parse_qs(query, keep_blank_values=True) if query else {}
    limit = _limit(params)
    ids = [m["id"] for m in models]
    after, before = _param(params, "after_id"), _param(params, "before_id")
    if before is not None:
        end = _cursor(ids, before, "before_id")
        start = max(0, end - limit)
        has_more = start > 0
    else:
        start = _cursor(ids, after, "after_id") + 1 if after is not None else 0
        end = min(len(models), start + limit)
        has_more = end < len(models)
    page = models[start:end]
    body = {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
    return Response(200, orjson.dumps(body))


def model_info(table: RoutingTable, name: str, principal: Principal) -> Response:
    """`GET /v1/models/{id}`: one model of that list (404 in Anthropic's shape when not in it)."""
    for info in _visible(table, principal):
        if info["id"] == name:
            return Response(200, orjson.dumps(info))
    valid = ", ".join(m["id"] for m in _visible(table, principal))
    raise ModelNotFound(f"model: '{shown(name)}' does not exist. Valid models: {valid}.")
