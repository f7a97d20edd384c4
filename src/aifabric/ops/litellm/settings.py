"""`router_settings`, `litellm_settings`, `general_settings` and `environment_variables` -> the
fabric file's gateway, retry, state, health, fallbacks and aliases; the rest reported, key by key."""

from __future__ import annotations

from aifabric.ops.litellm.context import Context, duration, seconds
from aifabric.ops.litellm.plan import Setting
from aifabric.ops.litellm.source import Item

__all__ = ["import_environment", "import_fallbacks", "import_general", "import_router"]

_RETRY_DEFAULT_DEADLINE = 600.0  # aifabric's retry.deadline default, which a longer try would exceed

# Keys of litellm_settings / router_settings with no aifabric equivalent, and why.
_ROUTER_WHY = {
    "callbacks": "LiteLLM callbacks (logging, tracing): aifabric has /metrics (Prometheus) and "
    "gateway.access_log, not these integrations",
    "success_callback": "a LiteLLM callback: aifabric has /metrics and gateway.access_log instead",
    "failure_callback": "a LiteLLM callback: aifabric has /metrics and gateway.access_log instead",
    "service_callback": "a LiteLLM callback: aifabric has /metrics and gateway.access_log instead",
    "cache": "response caching: aifabric does not cache answers",
    "cache_params": "response caching: aifabric does not cache answers",
    "drop_params": "aifabric forwards every request field unchanged; a backend that refuses one answers 400",
    "set_verbose": "LiteLLM's debug logging: aifabric logs JSON lines (gateway.access_log: one per request)",
    "json_logs": "aifabric's logs are JSON lines already",
    "max_budget": "budgets: aifabric has none yet",
    "budget_duration": "budgets: aifabric has none yet",
    "default_team_settings": "LiteLLM teams: aifabric has no teams",
    "context_window_fallbacks": "aifabric never fails over on the client's own error: a backend's 400 "
    "for a prompt over its context window is classified client_error, which by design is never retried, "
    "never sent to a fallback and never ejects the target (docs/resilience.md), and aifabric does not "
    "count a prompt's tokens before sending it; the client gets the 400. Have it name the longer-context "
    "role itself",
    "content_policy_fallbacks": "aifabric never fails over on the client's own error (a refused "
    "prompt is a 400)",
    "enable_pre_call_checks": "context-window checks before the call: aifabric does not count tokens",
    "enable_tag_filtering": "tag-based routing: aifabric has no request tags",
    "routing_strategy_args": "arguments of a LiteLLM routing strategy",
}
_GENERAL_WHY = {
    "budget": "budgets: aifabric has none yet",
    "spend": "spend tracking: aifabric has none yet",
    "store_model": "LiteLLM's database (virtual keys, spend logs, models stored in it): aifabric keeps none",
    "batch_write": "LiteLLM's database (virtual keys, spend logs, models stored in it): aifabric keeps none",
    "database": "LiteLLM's database (virtual keys, spend logs, models stored in it): aifabric keeps none",
    "alert": "alerting: configure monitoring.sinks (docs/monitoring.md), with the runbook's thresholds",
    "ui": "LiteLLM's admin UI: aifabric's status page is GET /ui",
    "pass_through": "pass-through routes: aifabric serves the OpenAI API only",
    "custom_auth": "custom auth code: aifabric has API keys (gateway.api_keys)",
}
_BALANCE = {
    "simple-shuffle": (None, "p2c (the default) shares by the same weights, preferring the faster target"),
    "least-busy": ("least_outstanding", "the target with the fewest requests in flight"),
    "latency-based-routing": (None, "p2c (the default) prefers the target with the lower latency"),
}


def import_router(ctx: Context, section: Item, path: str) -> None:
    """router_settings and litellm_settings: they overlap (fallbacks, retries, timeouts)."""
    for key, item in section.mapping().items():
        where = f"{path}.{key}"
        if key in ("fallbacks", "default_fallbacks"):
            continue  # after every alias is known: see `import_fallbacks`
        if key in ("model_group_alias", "model_alias_map"):
            _aliases(ctx, item, where)
        elif key == "num_retries":
            _num_retries(ctx, item, where)
        elif key in ("timeout", "request_timeout"):
            _timeout(ctx, item, where)
        elif key == "stream_timeout":
            stream_timeout(ctx, item, where)
        elif key == "retry_after":
            _set(ctx, ctx.plan.retry, item, where, "backoff_base", "the first pause between attempts")
        elif key == "allowed_fails":
            _allowed_fails(ctx, item, where)
        elif key == "cooldown_time":
            value = seconds(item)
            if value is None:
                ctx.left_out(item, where, "not a positive number of seconds")
            else:
                _health(ctx, "base_ejection", duration(value), f"line {item.line}: {where}")
        elif key == "routing_strategy":
            _balance(ctx, item, where)
        elif key in ("redis_host", "redis_port", "redis_password", "redis_url"):
            continue  # read together by _state
        elif key == "telemetry":
            ctx.note(item, where, "aifabric sends no telemetry")
        elif key in _ROUTER_WHY:
            ctx.left_out(item, where, _ROUTER_WHY[key])
        else:
            ctx.left_out(item, where, "no aifabric equivalent the importer knows of")
    _state(ctx, section, path)


def import_fallbacks(ctx: Context, section: Item, path: str) -> None:
    for key in ("fallbacks", "default_fallbacks"):
        item = section.get(key)
        if item is None:
            continue
        if key == "fallbacks":
            for role, names, line_item in _fallback_pairs(ctx, item, f"{path}.{key}"):
                _add_fallbacks(ctx, role, names, line_item, f"{path}.{key}")
        else:
            names = (
                [str(i.value) for i in item.items()] if isinstance(item.value, list) else [str(item.value)]
            )
            for name in names:
                if _resolve(ctx, name) is None:
                    ctx.left_out(
                        item, f"{path}.{key}", f"default fallback '{name}' is not a role of the import"
                    )
            known = [n for n in names if _resolve(ctx, n) is not None]
            for role in list(ctx.plan.roles):
                usable = [n for n in known if _resolve(ctx, n) != role]
                _add_fallbacks(ctx, role, usable, item, f"{path}.{key}", quiet=True)


def import_general(ctx: Context, section: Item, path: str) -> None:
    for key, item in section.mapping().items():
        where = f"{path}.{key}"
        if key == "master_key":
            secret = ctx.secret(item, where, "MASTER_KEY")
            if secret is not None:
                # LiteLLM's master key is its admin key too (/health, the UI, key management): both
                # lists, the same ${VAR}, so the operator commands keep working with it.
                origin = f"line {item.line}: {where} (LiteLLM's master key is also its admin key)"
                ctx.plan.gateway.append(Setting("api_keys", [secret], f"line {item.line}: {where}"))
                ctx.plan.gateway.append(Setting("admin_keys", [secret], origin))
                ctx.note(
                    item,
                    where,
                    "in gateway.api_keys and gateway.admin_keys (it is LiteLLM's admin key too: /metrics, "
                    "/status, /health, /ui and `aifabric status` / `config reload` accept it); clients "
                    "keep sending it as `Authorization: Bearer`; LiteLLM's virtual keys (kept in its "
                    "database) are not carried",
                )
        elif key in ("host", "port"):
            _set(ctx, ctx.plan.gateway, item, where, key, "where the gateway listens")
        elif key == "health_check_interval":
            value = seconds(item)
            if value is None:
                ctx.left_out(item, where, "not a positive number of seconds")
            else:
                _health(ctx, "interval", duration(value), f"line {item.line}: {where}")
        elif key == "background_health_checks":
            ctx.note(
                item, where, "aifabric always probes every backend, in the way of its kind, costing no tokens"
            )
        else:
            why = next((w for word, w in _GENERAL_WHY.items() if word in key), "no aifabric equivalent")
            ctx.left_out(item, where, why)


def import_environment(ctx: Context, section: Item, path: str) -> None:
    """LiteLLM puts these in its environment; the fabric file reads `${NAME}` from the env file."""
    for key, item in section.mapping().items():
        if item.value is None:
            ctx.left_out(item, f"{path}.{key}", "no value")
            continue
        value = str(item.value).lower() if isinstance(item.value, bool) else str(item.value)
        ctx.plan.env_vars[key] = (value, item.line)
    if ctx.plan.env_vars:
        ctx.note(section, path, "copied to the env file, where ${NAME} references find them")


# -- pieces ----------------------------------------------------------------------------------------


def _set(ctx: Context, section: list[Setting], item: Item, where: str, key: str, what: str) -> None:
    for old in section:
        if old.key == key:
            ctx.note(item, where, f"{key} is already set by {old.comment}: kept that one")
            return
    value: str | int | float = ctx.text(item)
    if key == "backoff_base":
        number = seconds(item)
        if number is None:
            ctx.left_out(item, where, "not a positive number of seconds")
            return
        value = duration(number)
    elif key == "port" and isinstance(item.value, int):
        value = item.value
    section.append(Setting(key, value, f"line {item.line}: {where} ({what})"))


def _num_retries(ctx: Context, item: Item, where: str) -> None:
    value = item.value
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        ctx.left_out(item, where, "not a whole number of retries")
        return
    if any(s.key == "max_attempts" for s in ctx.plan.retry):
        ctx.note(item, where, "retries are already set (router_settings wins, as in LiteLLM)")
        return
    comment = (
        f"line {item.line}: {where}: {value} (one try, then up to {value} more, across targets and fallbacks)"
    )
    ctx.plan.retry.append(Setting("max_attempts", value + 1, comment))


def stream_timeout(ctx: Context, item: Item, where: str) -> None:
    """LiteLLM's `stream_timeout` (a deployment's, or the router's) -> `retry.stream_idle_timeout`.

    LiteLLM hands it to the OpenAI client of streamed calls as its timeout, which httpx applies to every
    read: a stream ends when the backend sends nothing for that long. That is what aifabric's
    `retry.stream_idle_timeout` does once a stream has begun (the wait for the first byte is the
    backend's `timeout` / `retry.try_timeout`, from LiteLLM's `timeout`). aifabric has one for the
    gateway: when deployments differ, the longest is kept, so no stream LiteLLM let run is cut sooner.
    """
    value = seconds(item)
    if value is None:
        ctx.left_out(item, where, "not a positive number of seconds")
        return
    comment = (
        f"line {item.line}: {where} (LiteLLM's read timeout of streamed calls: no byte for this long "
        "ends the stream; the first byte is waited for as long as the backend's timeout)"
    )
    current = next((s for s in ctx.plan.retry if s.key == "stream_idle_timeout"), None)
    if current is None:
        ctx.plan.retry.append(Setting("stream_idle_timeout", duration(value), comment))
        return
    kept = float(str(current.value).removesuffix("s"))
    if value > kept:
        ctx.plan.retry[ctx.plan.retry.index(current)] = Setting(
            "stream_idle_timeout", duration(value), comment
        )
        ctx.note(
            item,
            where,
            f"retry.stream_idle_timeout is one for the gateway: the longest, {duration(value)}, kept",
        )
    elif value < kept:
        ctx.note(
            item,
            where,
            f"retry.stream_idle_timeout is one for the gateway: the longest, {current.value}, kept",
        )


def _timeout(ctx: Context, item: Item, where: str) -> None:
    value = seconds(item)
    if value is None:
        ctx.left_out(item, where, "not a positive number of seconds")
        return
    if any(s.key == "try_timeout" for s in ctx.plan.retry):
        ctx.note(item, where, "the timeout is already set (router_settings wins, as in LiteLLM)")
        return
    ctx.plan.retry.append(
        Setting(
            "try_timeout", duration(value), f"line {item.line}: {where} (one attempt, until the first byte)"
        )
    )
    if value > _RETRY_DEFAULT_DEADLINE:
        ctx.plan.retry.append(
            Setting(
                "deadline", duration(value), f"line {item.line}: {where} (the whole request may take as long)"
            )
        )


def _allowed_fails(ctx: Context, item: Item, where: str) -> None:
    value = item.value
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        ctx.left_out(item, where, "not a whole number")
        return
    _health(
        ctx, "consecutive_failures", value + 1, f"line {item.line}: {where}: {value} allowed, the next ejects"
    )
    ctx.note(item, where, "LiteLLM counts failures per minute, aifabric failures in a row")


def _health(ctx: Context, key: str, value: str | int, comment: str) -> None:
    ctx.health_settings.append(Setting(key, value, comment))


def _balance(ctx: Context, item: Item, where: str) -> None:
    strategy = str(item.value)
    if strategy not in _BALANCE:
        ctx.left_out(
            item,
            where,
            f"'{strategy}': aifabric balances by latency and requests in flight (p2c) or "
            "fewest in flight (least_outstanding), not by usage or cost",
        )
        return
    balance, why = _BALANCE[strategy]
    ctx.note(item, where, why)
    if balance is not None:
        ctx.balance = Setting("balance", balance, f"line {item.line}: {where}: {strategy}")


def _state(ctx: Context, section: Item, path: str) -> None:
    """LiteLLM's Redis (shared usage and cooldowns) -> `state:` (health and ejections shared by replicas)."""
    url_item, host_item = section.get("redis_url"), section.get("redis_host")
    if url_item is None and host_item is None:
        for key in ("redis_port", "redis_password"):
            if (item := section.get(key)) is not None:
                ctx.left_out(item, f"{path}.{key}", "no redis_host to go with it")
        return
    if ctx.plan.state is not None:
        ctx.note(url_item or host_item, f"{path}.redis_*", f"state is already set ({ctx.plan.state.comment})")
        return
    if url_item is not None:
        url = ctx.text(url_item)
        first = url_item
    else:
        assert host_item is not None
        port_item, password_item = section.get("redis_port"), section.get("redis_password")
        port = ctx.text(port_item) if port_item is not None else "6379"
        password = (
            ctx.secret(password_item, f"{path}.redis_password", "REDIS_PASSWORD") if password_item else None
        )
        auth = f":{password}@" if password else ""
        url = f"redis://{auth}{ctx.text(host_item)}:{port}/0"
        first = host_item
    ctx.plan.state = Setting("state", url, f"line {first.line}: {path}.redis_*")
    ctx.note(
        first,
        f"{path}.redis_*",
        "LiteLLM shares usage and cooldowns through Redis; aifabric shares "
        "health and ejections between replicas through it (docs/state.md)",
    )


def _aliases(ctx: Context, item: Item, where: str) -> None:
    if not isinstance(item.value, dict):
        ctx.left_out(item, where, "expected {alias: model_name, ...}")
        return
    for alias, written in item.mapping().items():
        at = f"{where}.{alias}"
        hidden_item = written.get("hidden")
        hidden = bool(hidden_item is not None and hidden_item.value)
        target = written.get("model") or written  # {model: NAME, hidden: true} or NAME
        role = str(target.value)
        if alias in ctx.plan.roles:
            ctx.left_out(target, at, f"'{alias}' is also a model_name: an alias may not have a role's name")
        elif role not in ctx.plan.roles:
            ctx.left_out(
                target, at, f"'{role}' is not a role of the import (no model_list entry of that name made it)"
            )
        else:
            ctx.plan.aliases[alias] = (role, f"line {target.line}: {where}")
            if hidden:
                ctx.note(target, at, "hidden in LiteLLM; aifabric lists every alias in /v1/models")


def _fallback_pairs(ctx: Context, item: Item, where: str) -> list[tuple[str, list[str], Item]]:
    """LiteLLM writes `[{model: [fallback, ...]}, ...]`."""
    pairs: list[tuple[str, list[str], Item]] = []
    groups = item.items() if isinstance(item.value, list) else [item]
    for group in groups:
        if not isinstance(group.value, dict):
            ctx.left_out(group, where, "expected {model_name: [fallback, ...]}")
            continue
        for model, names in group.mapping().items():
            listed = (
                [str(n.value) for n in names.items()] if isinstance(names.value, list) else [str(names.value)]
            )
            pairs.append((model, listed, names))
    return pairs


def _resolve(ctx: Context, name: str) -> str | None:
    if name in ctx.plan.roles:
        return name
    alias = ctx.plan.aliases.get(name)
    return alias[0] if alias else None


def _add_fallbacks(
    ctx: Context, model: str, names: list[str], item: Item, where: str, *, quiet: bool = False
) -> None:
    role_name = _resolve(ctx, model)
    at = f"{where}.{model}" if not quiet else where
    if role_name is None:
        ctx.left_out(item, at, f"'{model}' is not a role of the import")
        return
    role = ctx.plan.roles[role_name]
    for name in names:
        target = _resolve(ctx, name)
        have = [f for f, _ in role.fallbacks]
        if target is None:
            ctx.left_out(item, at, f"fallback '{name}' is not a role of the import")
        elif target == role_name or target in have:
            continue
        elif ctx.plan.roles[target].kind != role.kind:
            if not quiet:
                ctx.left_out(
                    item, at, f"'{name}' serves {ctx.plan.roles[target].kind}, '{model}' {role.kind}"
                )
        elif _reaches(ctx, target, role_name):
            # aifabric follows a fallback's own fallbacks: a cycle would be refused by the loader.
            ctx.left_out(
                item,
                at,
                f"'{model}' -> '{name}' would close a cycle ('{name}' already falls back to "
                f"'{model}', and aifabric follows fallbacks of fallbacks)",
            )
        else:
            role.fallbacks.append((target, f"line {item.line}: {where}"))


def _reaches(ctx: Context, start: str, goal: str) -> bool:
    seen, queue = set(), [start]
    while queue:
        name = queue.pop()
        if name == goal:
            return True
        if name not in seen:
            seen.add(name)
            queue.extend(f for f, _ in ctx.plan.roles[name].fallbacks)
    return False
