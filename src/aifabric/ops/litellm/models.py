"""`model_list` -> backends and roles.

Entries are grouped by `model_name` into roles (file order kept); each entry becomes a target on the
backend its provider and `api_base` name, and entries that share a base URL (and key) share one
backend. LiteLLM's `order` (lower first, higher only when the lower ones cannot serve) becomes a
fallback role per further tier, tried before the role's own fallbacks: what aifabric's fallbacks do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from aifabric.ops.litellm.context import Context, duration, seconds
from aifabric.ops.litellm.plan import BackendPlan, HostPlan, RolePlan, Setting, TargetPlan
from aifabric.ops.litellm.providers import (
    NO_KIND,
    PROVIDERS,
    Provider,
    infer_role_kind,
    mode_role_kind,
    split_model,
)
from aifabric.ops.litellm.source import Item

__all__ = ["import_models"]

_SELF_HOSTED_API = ("vllm", "llamacpp")  # servers whose OpenAI API lives under /v1 of the origin

# litellm_params that are defaults for the request body: aifabric forwards the client's body unchanged.
_REQUEST_DEFAULTS = frozenset(
    [
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "top_p",
        "top_k",
        "stop",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "response_format",
        "tools",
        "tool_choice",
        "logit_bias",
        "user",
        "extra_body",
        "extra_headers",
        "reasoning_effort",
        "num_ctx",
        "keep_alive",
        "repetition_penalty",
        "min_p",
        "logprobs",
        "top_logprobs",
        "parallel_tool_calls",
    ]
)
_REQUEST_DEFAULTS_WHY = (
    "a request default: aifabric forwards the client's request unchanged and has no per-role defaults "
    "(set it in the client)"
)
_COSTS = frozenset(
    [
        "input_cost_per_token",
        "output_cost_per_token",
        "input_cost_per_second",
        "output_cost_per_second",
        "input_cost_per_pixel",
        "output_cost_per_pixel",
    ]
)
_COSTS_WHY = "a price for LiteLLM's spend tracking: aifabric has no prices or spend tracking yet"
_PARAMS_WHY = {
    "stream_timeout": "aifabric has one per-attempt timeout for streamed and whole answers "
    "(backends.NAME.timeout, until the first byte of a stream)",
    "max_retries": "the OpenAI client's retries on this one deployment: aifabric retries across the "
    "role's targets and fallbacks instead, within retry.max_attempts",
    "tags": "tag-based routing: aifabric has no request tags",
    "region_name": "region-based routing: aifabric has no regions",
    "organization": "aifabric sends a backend only its key (no OpenAI-Organization header)",
}
_LIMIT_WHY = (
    "a rate limit of this deployment: aifabric has no per-target rate limit (the share of traffic "
    "LiteLLM's simple-shuffle gives by rpm, else tpm, is carried as the target's weight)"
)
_GENERIC_HOST_LABELS = frozenset({"api", "www", "inference", "integrate", "generativelanguage"})


@dataclass
class _Entry:
    path: str
    item: Item
    group: str
    provider: Provider
    written: str  # litellm_params.model as written
    model: str  # the id the backend serves
    url: str
    from_api_base: bool
    key_item: Item | None
    key_env: str | None  # LiteLLM's default variable, when the entry names no key
    kind: str
    weight: float | None = None
    rpm: float | None = None
    tpm: float | None = None
    order: int = 1
    timeout: float | None = None
    backend: str = ""

    def key_id(self) -> object:
        """Which key the backend is called with: entries that share a base URL and this share a backend."""
        if self.key_item is not None and self.key_item.value not in (None, ""):
            value = str(self.key_item.value)
            if value.startswith("os.environ/"):
                return ("env", value.removeprefix("os.environ/"))
            return ("value", value)
        return ("env", self.key_env)


def import_models(ctx: Context, model_list: Item) -> None:
    if not isinstance(model_list.value, list):
        ctx.left_out(model_list, "model_list", "model_list is not a list of entries")
        return
    entries = [e for i, item in enumerate(model_list.items()) if (e := _entry(ctx, i, item)) is not None]
    _backends(ctx, entries)
    _roles(ctx, entries)


# -- one entry -------------------------------------------------------------------------------------


def _entry(ctx: Context, index: int, item: Item) -> _Entry | None:
    path = f"model_list[{index}]"
    name_item = item.get("model_name")
    params = item.get("litellm_params")
    model_item = params.get("model") if params else None
    if name_item is None or not isinstance(name_item.value, str | int | float) or name_item.value == "":
        ctx.left_out(item, path, "an entry without a model_name: no name to serve it under")
        return None
    group = str(name_item.value)
    if "*" in group:
        ctx.left_out(
            name_item,
            f"{path}.model_name",
            f"'{group}' is a wildcard: aifabric serves named roles only "
            "(add a role per model the clients use)",
        )
        return None
    if model_item is None or not isinstance(model_item.value, str) or not model_item.value:
        ctx.left_out(item, path, f"'{group}' has no litellm_params.model: nothing says what serves it")
        return None
    custom = params.get("custom_llm_provider") if params else None
    provider_name, model = split_model(model_item.value, str(custom.value) if custom else None)
    provider = PROVIDERS.get(provider_name or "")
    where = f"{path}.litellm_params.model"
    if provider is None:
        if provider_name in NO_KIND:
            why = f"provider '{provider_name}': {NO_KIND[provider_name]}"
        elif provider_name is None:
            why = (
                f"'{model}' names no provider LiteLLM's prefixes or OpenAI's model names tell; if it "
                "serves the OpenAI API, write openai/MODEL with its api_base"
            )
        else:
            why = (
                f"unknown provider '{provider_name}': aifabric has no backend kind for it; if it serves "
                "the OpenAI API, write openai/MODEL with its api_base"
            )
        ctx.left_out(model_item, where, f"'{group}' is left out: {why}")
        return None
    if not model:
        ctx.left_out(model_item, where, f"'{group}' is left out: '{model_item.value}' names no model")
        return None
    if "*" in model:
        ctx.left_out(model_item, where, f"'{model_item.value}' is a wildcard: aifabric serves named models")
        return None
    kind = _role_kind(ctx, item, path, group, provider, model)
    if kind is None:
        return None
    api_base = params.get("api_base") if params else None
    url = _url(ctx, provider, api_base, f"{path}.litellm_params", group, item)
    if url is None:
        return None
    key_item = params.get("api_key") if params else None
    from_api_base = api_base is not None and api_base.value not in (None, "")
    own_endpoint = from_api_base and provider.name in ("openai", "text-completion-openai", "custom_openai")
    entry = _Entry(
        path=path,
        item=item,
        group=group,
        provider=provider,
        written=model_item.value,
        model=model,
        url=url,
        from_api_base=from_api_base,
        key_item=key_item,
        # LiteLLM falls back to the provider's variable; not for an OpenAI-compatible server of one's own,
        # where it would send the OpenAI key to that server.
        key_env=None if own_endpoint or provider.self_hosted else provider.key_env,
        kind=kind,
    )
    _params(ctx, entry, params)
    for key in ("rpm", "tpm"):  # also accepted beside litellm_params
        if (limit := item.get(key)) is not None:
            _limit(ctx, entry, key, limit, f"{path}.{key}")
    for key, child in item.mapping().items():
        if key not in ("model_name", "litellm_params", "model_info", "rpm", "tpm"):
            ctx.left_out(child, f"{path}.{key}", "not a key of a LiteLLM model_list entry the importer knows")
    _model_info(ctx, item.get("model_info"), f"{path}.model_info")
    return entry


def _role_kind(ctx: Context, item: Item, path: str, group: str, provider: Provider, model: str) -> str | None:
    info = item.get("model_info")
    mode = info.get("mode") if info else None
    if mode is not None:
        kind = mode_role_kind(str(mode.value))
        if kind is None:
            ctx.left_out(
                mode,
                f"{path}.model_info.mode",
                f"'{group}' is left out: mode '{mode.value}' has no "
                "aifabric role kind (chat, completions, embeddings)",
            )
        return kind
    kind, why = infer_role_kind(provider, model)
    if kind is None:
        ctx.left_out(
            item,
            path,
            f"'{group}' is left out: '{model}' is for {why}, which aifabric has no role kind "
            "for (chat, completions, embeddings)",
        )
    elif why:
        ctx.note(item, path, f"'{group}' becomes a {kind} role: {why} (else say model_info.mode)")
    return kind


def _url(
    ctx: Context, provider: Provider, api_base: Item | None, path: str, group: str, item: Item
) -> str | None:
    if api_base is not None and api_base.value not in (None, ""):
        url = ctx.text(api_base).rstrip("/")
        if provider.suffix:
            if not url.endswith(provider.suffix):
                url += provider.suffix
        elif provider.kind in _SELF_HOSTED_API and urlsplit(url).path in ("", "/") and "${" not in url:
            url += "/v1"
        return url
    if provider.base is not None:
        return provider.base + provider.suffix
    if provider.base_env is not None:
        return ctx.reference(provider.base_env, item.line) + provider.suffix
    ctx.left_out(
        item,
        f"{path}.api_base",
        f"'{group}' is left out: {provider.name}/ needs an api_base (the server's URL)",
    )
    return None


def _params(ctx: Context, entry: _Entry, params: Item | None) -> None:
    if params is None:
        return
    base = f"{entry.path}.litellm_params"
    for key, child in params.mapping().items():
        where = f"{base}.{key}"
        if key in ("model", "api_key", "api_base", "custom_llm_provider"):
            continue
        if key == "weight":
            entry.weight = _positive(ctx, child, where)
        elif key in ("rpm", "tpm"):
            _limit(ctx, entry, key, child, where)
        elif key == "order":
            order = child.value
            if isinstance(order, int) and not isinstance(order, bool) and order >= 1:
                entry.order = order
            else:
                ctx.left_out(child, where, "order must be a whole number from 1: ignored")
        elif key == "timeout":
            entry.timeout = seconds(child)
            if entry.timeout is None:
                ctx.left_out(child, where, "not a positive number of seconds")
        elif key == "api_version" and entry.provider.suffix == "/openai/v1":
            ctx.note(child, where, "Azure's v1 API (/openai/v1) takes no api-version")
        elif key in _REQUEST_DEFAULTS:
            ctx.left_out(child, where, _REQUEST_DEFAULTS_WHY)
        elif key in _COSTS:
            ctx.left_out(child, where, _COSTS_WHY)
        else:
            ctx.left_out(child, where, _PARAMS_WHY.get(key, "no aifabric equivalent the importer knows of"))


def _limit(ctx: Context, entry: _Entry, key: str, item: Item, where: str) -> None:
    value = _positive(ctx, item, where)
    setattr(entry, key, value)
    if value is not None:
        ctx.left_out(item, where, _LIMIT_WHY)


def _positive(ctx: Context, item: Item, where: str) -> float | None:
    value = seconds(item)  # any positive number
    if value is None:
        ctx.left_out(item, where, "not a positive number: ignored")
    return value


def _model_info(ctx: Context, info: Item | None, path: str) -> None:
    if info is None:
        return
    for key, child in info.mapping().items():
        if key == "mode":
            continue
        if key in _COSTS:
            ctx.left_out(child, f"{path}.{key}", _COSTS_WHY)
        else:
            ctx.note(child, f"{path}.{key}", "model metadata for LiteLLM: aifabric does not need it to route")


# -- backends --------------------------------------------------------------------------------------


def _backends(ctx: Context, entries: list[_Entry]) -> None:
    by_identity: dict[tuple[str, object], BackendPlan] = {}
    lines: dict[str, list[int]] = {}
    for entry in entries:
        identity = (entry.url, entry.key_id())
        plan = by_identity.get(identity)
        if plan is None:
            name = _unique(_backend_name(entry), ctx.plan.backends, entry.url)
            plan = BackendPlan(name, entry.provider.kind, entry.url, None, _host(ctx, entry), "")
            if entry.key_item is not None and entry.key_item.value not in (None, ""):
                plan.api_key = ctx.secret(
                    entry.key_item, f"{entry.path}.litellm_params.api_key", f"{name}_API_KEY"
                )
            elif entry.key_env is not None:
                plan.api_key = ctx.reference(entry.key_env, entry.item.line)
                ctx.note(
                    entry.item,
                    entry.path,
                    f"no api_key: LiteLLM reads ${entry.key_env}, so does the fabric file",
                )
            by_identity[identity] = plan
            ctx.plan.backends[name] = plan
            lines[name] = []
        elif plan.kind == "openai" and entry.provider.kind != "openai":
            plan.kind = entry.provider.kind  # the same server named more precisely by another entry
        lines[plan.name].append(entry.item.line)
        entry.backend = plan.name
        if entry.timeout is not None:
            _backend_timeout(ctx, plan, entry)
    for name, plan in ctx.plan.backends.items():
        first = next(e for e in entries if e.backend == name)
        plan.comment = f"{first.provider.name}/ at {plan.url}: model_list entries on {_lines(lines[name])}"


def _backend_timeout(ctx: Context, plan: BackendPlan, entry: _Entry) -> None:
    assert entry.timeout is not None
    where = f"line {entry.item.line}: litellm_params.timeout"
    if not plan.settings:
        plan.settings.append(Setting("timeout", duration(entry.timeout), where))
        return
    current = plan.settings[0]
    if current.value != duration(entry.timeout):
        ctx.note(
            entry.item,
            f"{entry.path}.litellm_params.timeout",
            f"backend {plan.name} has one timeout: kept {current.value} ({current.comment})",
        )


def _backend_name(entry: _Entry) -> str:
    provider = entry.provider
    if not entry.from_api_base and not provider.self_hosted:
        return provider.name.replace("_", "-")
    suffix = provider.kind if provider.self_hosted else provider.name.replace("_", "-")
    if suffix in ("custom-openai", "text-completion-openai"):
        suffix = "openai"
    return f"{_host_label(entry.url)}-{suffix}"


def _host_label(url: str) -> str:
    if url.startswith("${"):
        return url[2 : url.index("}")].lower().replace("_", "-")
    host = urlsplit(url).hostname or "backend"
    if re.fullmatch(r"[0-9.]+|[0-9a-f:]+", host):
        return host.replace(".", "-").replace(":", "-")
    labels = host.split(".")
    while len(labels) > 1 and labels[0] in _GENERIC_HOST_LABELS:
        labels = labels[1:]
    return labels[0]


def _unique(name: str, taken: dict[str, BackendPlan], url: str) -> str:
    if name not in taken:
        return name
    port = urlsplit(url).port if not url.startswith("${") else None
    if port is not None and f"{name}-{port}" not in taken:
        return f"{name}-{port}"
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def _host(ctx: Context, entry: _Entry) -> str | None:
    """The hosts: entry of a self-hosted server (so its machine can be marked always_on: false)."""
    if not entry.provider.self_hosted or entry.url.startswith("${"):
        return None
    address = urlsplit(entry.url).hostname
    if not address:
        return None
    name = _host_label(entry.url)
    if name not in ctx.plan.hosts:
        ctx.plan.hosts[name] = HostPlan(
            name, address, f"the machine of the api_base on line {entry.item.line}"
        )
    return name


# -- roles -----------------------------------------------------------------------------------------


def _roles(ctx: Context, entries: list[_Entry]) -> None:
    groups: dict[str, list[_Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.group, []).append(entry)
    for group, members in groups.items():
        kind = members[0].kind
        for other in members[1:]:
            if other.kind != kind:
                ctx.left_out(
                    other.item,
                    other.path,
                    f"'{group}' is a {kind} role (line {members[0].item.line}), this "
                    f"entry serves {other.kind}: a role serves one kind of request",
                )
        same = [m for m in members if m.kind == kind]
        weights, weighted_by = _weights(same)
        tiers = sorted({m.order for m in same})
        names = [group] + [f"{group}/order-{t}" for t in tiers[1:]]
        for tier, name in zip(tiers, names, strict=True):
            tier_members = [m for m in same if m.order == tier]
            comment = (
                f"model_name '{group}': model_list entries on {_lines([m.item.line for m in tier_members])}"
            )
            if tier != tiers[0]:
                comment += f" (order {tier}: tried when the order {tiers[0]} targets cannot serve)"
            targets = [
                TargetPlan(m.backend, m.model, weights.get(id(m)), _target_comment(m, weighted_by))
                for m in tier_members
            ]
            ctx.plan.roles[name] = RolePlan(name, kind, targets, comment)
        for later in names[1:]:
            ctx.plan.roles[group].fallbacks.append((later, "litellm_params.order"))


def _weights(members: list[_Entry]) -> tuple[dict[int, float], str]:
    """LiteLLM's simple-shuffle shares: `weight`, else `rpm`, else `tpm`; equal shares need none."""
    for key in ("weight", "rpm", "tpm"):
        values = [getattr(m, key) for m in members]
        if any(v is not None for v in values):
            if len(set(values)) <= 1:
                return {}, key
            return {id(m): (v if v is not None else 1.0) for m, v in zip(members, values, strict=True)}, key
    return {}, ""


def _target_comment(entry: _Entry, weighted_by: str) -> str:
    text = f"line {entry.item.line}: {entry.written}"
    if weighted_by in ("rpm", "tpm"):
        text += f" (weight: its {weighted_by}, the share LiteLLM's simple-shuffle gives it)"
    return text


def _lines(lines: list[int]) -> str:
    return ("line " if len(lines) == 1 else "lines ") + ", ".join(str(n) for n in lines)
