"""One `model_list` entry read: its role name and kind, provider, base URL, key, weights, order and
timeout; whatever in it has no equivalent is reported at its line."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aifabric.config.schema import ROLE_KINDS
from aifabric.ops.litellm.context import Context, seconds
from aifabric.ops.litellm.providers import (
    NO_KIND,
    PROVIDERS,
    Provider,
    infer_role_kind,
    mode_role_kind,
    split_model,
)
from aifabric.ops.litellm.settings import stream_timeout
from aifabric.ops.litellm.source import Item

__all__ = ["Entry", "read_entry"]

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
    "max_retries": "the retries of the OpenAI client LiteLLM builds for this one deployment: aifabric has "
    "no retry count per backend or per role; a request's attempts are counted across the role's targets "
    "and fallbacks by retry.max_attempts, one setting for the gateway (carried from router_settings."
    "num_retries when set), each failed attempt going on to the next candidate",
    "tags": "tag-based routing: aifabric has no request tags",
    "region_name": "region-based routing: aifabric has no regions",
    "organization": "aifabric sends a backend only its key (no OpenAI-Organization header)",
}
_LIMIT_WHY = (
    "a rate limit of this deployment: aifabric has no per-target rate limit (the share of traffic "
    "LiteLLM's simple-shuffle gives by rpm, else tpm, is carried as the target's weight)"
)


@dataclass
class Entry:
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
    # Where its rpm / tpm are written: the role step carries them as the role's limits, or reports them.
    limit_items: dict[str, tuple[Item, str]] = field(default_factory=dict)

    def key_id(self) -> object:
        """Which key the backend is called with: entries that share a base URL and this share a backend."""
        if self.key_item is not None and self.key_item.value not in (None, ""):
            value = str(self.key_item.value)
            if value.startswith("os.environ/"):
                return ("env", value.removeprefix("os.environ/"))
            return ("value", value)
        return ("env", self.key_env)


def read_entry(ctx: Context, index: int, item: Item) -> Entry | None:
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
    entry = Entry(
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
                f"aifabric role kind ({', '.join(ROLE_KINDS)})",
            )
        return kind
    kind, why = infer_role_kind(provider, model)
    if kind is None:
        ctx.left_out(
            item,
            path,
            f"'{group}' is left out: '{model}' is for {why}, which aifabric has no role kind "
            f"for ({', '.join(ROLE_KINDS)})",
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


def _params(ctx: Context, entry: Entry, params: Item | None) -> None:
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
        elif key == "stream_timeout":
            stream_timeout(ctx, child, where)
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


def _limit(ctx: Context, entry: Entry, key: str, item: Item, where: str) -> None:
    value = _positive(ctx, item, where)
    setattr(entry, key, value)
    if value is not None:
        entry.limit_items[key] = (item, where)


def limits_left_out(ctx: Context, entry: Entry, why: str = "") -> None:
    """The entry's rpm / tpm reported as having no equivalent (`why` adds the reason of the role)."""
    for item, where in entry.limit_items.values():
        ctx.left_out(item, where, _LIMIT_WHY + why)


def _positive(ctx: Context, item: Item, where: str) -> float | None:
    value = seconds(item)  # any positive number
    if value is None:
        ctx.left_out(item, where, "not a positive number: ignored")
    return value


def _model_info(ctx: Context, info: Item | None, path: str) -> None:
    if info is None or info.value is None:
        return
    if not isinstance(info.value, dict):
        ctx.left_out(info, path, "not a mapping: ignored")
        return
    for key, child in info.mapping().items():
        if key == "mode":
            continue
        if key in _COSTS:
            ctx.left_out(child, f"{path}.{key}", _COSTS_WHY)
        else:
            ctx.note(child, f"{path}.{key}", "model metadata for LiteLLM: aifabric does not need it to route")
