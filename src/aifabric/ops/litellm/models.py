"""`model_list` -> backends and roles.

Entries are grouped by `model_name` into roles (file order kept); each entry becomes a target on the
backend its provider and `api_base` name, and entries that share a base URL (and key) share one
backend. LiteLLM's `order` (lower first, higher only when the lower ones cannot serve) becomes a
fallback role per further tier, tried before the role's own fallbacks: what aifabric's fallbacks do.
Per-deployment `rpm` / `tpm` are the targets' weights (simple-shuffle's shares) and, when every
deployment of a role sets one, the role's `limits:` (their sum: aifabric limits a role, not a target).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from aifabric.ops.litellm.context import Context, duration
from aifabric.ops.litellm.entries import Entry, limits_left_out, read_entry
from aifabric.ops.litellm.plan import BackendPlan, HostPlan, RolePlan, Setting, TargetPlan
from aifabric.ops.litellm.source import Item

__all__ = ["import_models"]

_GENERIC_HOST_LABELS = frozenset({"api", "www", "inference", "integrate", "generativelanguage"})


def import_models(ctx: Context, model_list: Item) -> None:
    if not isinstance(model_list.value, list):
        ctx.left_out(model_list, "model_list", "model_list is not a list of entries")
        return
    entries = [e for i, item in enumerate(model_list.items()) if (e := read_entry(ctx, i, item)) is not None]
    _backends(ctx, entries)
    _roles(ctx, entries)


# -- backends --------------------------------------------------------------------------------------


def _backends(ctx: Context, entries: list[Entry]) -> None:
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


def _backend_timeout(ctx: Context, plan: BackendPlan, entry: Entry) -> None:
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


def _backend_name(entry: Entry) -> str:
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


def _host(ctx: Context, entry: Entry) -> str | None:
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


def _roles(ctx: Context, entries: list[Entry]) -> None:
    groups: dict[str, list[Entry]] = {}
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
                limits_left_out(ctx, other)
        same = [m for m in members if m.kind == kind]
        weights, weighted_by = _weights(same)
        tiers = sorted({m.order for m in same})
        names = [group] + [_free_name(f"{group}/order-{t}", groups) for t in tiers[1:]]
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
            role = ctx.plan.roles[name] = RolePlan(name, kind, targets, comment)
            _limits(ctx, role, tier_members)
        for later in names[1:]:
            ctx.plan.roles[group].fallbacks.append((later, "litellm_params.order"))


def _limits(ctx: Context, role: RolePlan, members: list[Entry]) -> None:
    """`roles.X.limits.rpm/tpm`: the sum of the deployments' own, when every one of them sets it
    (LiteLLM limits each deployment; aifabric all keys together on the role). A limit that only some
    deployments set has no such sum: reported, as having no equivalent."""
    for key in ("rpm", "tpm"):
        if not any(key in m.limit_items for m in members):
            continue
        setters = [m for m in members if key in m.limit_items]
        if len(setters) < len(members):
            unset = [m.item.line for m in members if m not in setters]
            which = "the deployment on" if len(unset) == 1 else "the deployments on"
            for m in setters:
                ctx.left_out(
                    *m.limit_items[key],
                    "a rate limit of this deployment: aifabric has no per-target rate limit, and the "
                    f"role's limit is their sum only when every deployment sets one ({which} "
                    f"{_lines(unset)} sets no {key}); its share of traffic is the target's weight",
                )
            continue
        total = max(1, round(sum(getattr(m, key) for m in members)))
        lines = _lines([m.limit_items[key][0].line for m in members])
        role.limits.append(
            Setting(key, total, f"the sum of its deployments' {key} ({lines}): LiteLLM limits each one")
        )
        for m in members:
            ctx.note(
                *m.limit_items[key],
                f"carried as roles.{role.name}.limits.{key}: {total}, the sum over the role's "
                f"deployments (aifabric has no per-target rate limit; the target's share of traffic "
                f"is its weight)",
            )


def _free_name(name: str, groups: dict[str, list[Entry]]) -> str:
    """A role name no model_name of the file has."""
    candidate, n = name, 2
    while candidate in groups:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def _weights(members: list[Entry]) -> tuple[dict[int, float], str]:
    """LiteLLM's simple-shuffle shares: `weight`, else `rpm`, else `tpm`; equal shares need none."""
    for key in ("weight", "rpm", "tpm"):
        values = [getattr(m, key) for m in members]
        if any(v is not None for v in values):
            if len(set(values)) <= 1:
                return {}, key
            return {id(m): (v if v is not None else 1.0) for m, v in zip(members, values, strict=True)}, key
    return {}, ""


def _target_comment(entry: Entry, weighted_by: str) -> str:
    text = f"line {entry.item.line}: {entry.written}"
    if weighted_by in ("rpm", "tpm"):
        text += f" (weight: its {weighted_by}, the share LiteLLM's simple-shuffle gives it)"
    return text


def _lines(lines: list[int]) -> str:
    return ("line " if len(lines) == 1 else "lines ") + ", ".join(str(n) for n in lines)
