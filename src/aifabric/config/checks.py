"""Checks across sections of a fabric file, made after every section has been read.

Names are checked against what the file *declares* (even entries that were themselves wrong), so one
mistake is reported once: a backend with a bad URL is not also "missing" for the roles that use it.
"""

from __future__ import annotations

from aifabric.config.nodes import Reader, suggest
from aifabric.config.schema import FabricConfig
from aifabric.errors import ConfigProblem, ProblemKind

__all__ = ["check_references", "fallback_cycles", "report_env"]


def _pick(word: str, names: list[str], section: str) -> str:
    """The fix for a reference to a name that does not exist: the likely one, and every valid one."""
    if not names:
        return f"there is no {section} section with entries: declare '{word}' under {section}:"
    close = suggest(word, names)
    listing = f"{section} defined: " + ", ".join(names)
    return f"{close} ({listing})" if close.startswith("did you mean") else listing


def check_references(r: Reader, cfg: FabricConfig) -> None:
    hosts = list(r.declared.get("hosts", {}))
    backends = list(r.declared.get("backends", {}))
    roles = list(r.declared.get("roles", {}))
    lines = r.lines

    if "roles" in lines and not roles:
        r.problem(lines["roles"], "no roles are defined", "add a role under roles:, e.g. chat-fast: {...}")

    for name, backend in cfg.backends.items():
        if backend.host is not None and backend.host not in hosts:
            r.problem(
                lines.get(f"backends.{name}.host"),
                f"backend '{name}' is on host '{backend.host}', which is not defined in hosts",
                _pick(backend.host, hosts, "hosts") + "; or remove host: for a backend off the estate",
            )

    for name, role in cfg.roles.items():
        for i, target in enumerate(role.targets):
            if target.backend not in backends:
                r.problem(
                    lines.get(f"roles.{name}.targets[{i}].backend"),
                    f"role '{name}' targets backend '{target.backend}', which is not defined in backends",
                    _pick(target.backend, backends, "backends"),
                )
        for i, fallback in enumerate(role.fallbacks):
            line = lines.get(f"roles.{name}.fallbacks[{i}]")
            if fallback in cfg.aliases and fallback not in roles:
                r.problem(
                    line,
                    f"role '{name}' falls back to '{fallback}', which is an alias, not a role",
                    f"write the role it points to: '{cfg.aliases[fallback]}'",
                )
            elif fallback not in roles:
                r.problem(
                    line,
                    f"role '{name}' falls back to '{fallback}', which is not defined in roles",
                    _pick(fallback, roles, "roles"),
                )
            elif fallback in cfg.roles and cfg.roles[fallback].kind != role.kind:
                same = [o for o, c in cfg.roles.items() if c.kind == role.kind and o != name]
                r.problem(
                    line,
                    f"role '{name}' (kind {role.kind}) falls back to '{fallback}' (kind "
                    f"{cfg.roles[fallback].kind}): a fallback must serve the same kind of request",
                    f"remove '{fallback}' from its fallbacks"
                    + (f", or name a {role.kind} role: {', '.join(same)}" if same else ""),
                )

        if role.overflow is not None and not role.fallbacks:
            r.problem(
                lines.get(f"roles.{name}.overflow"),
                f"role '{name}' has overflow: but no fallbacks: a saturated role has nowhere to send them",
                "add fallbacks: [ROLE] (where overflowed requests go), or remove overflow:",
            )

    for cycle in fallback_cycles(cfg):
        first, second = cycle[0], cycle[1]
        index = cfg.roles[first].fallbacks.index(second)
        r.problem(
            lines.get(f"roles.{first}.fallbacks[{index}]"),
            "fallback cycle: " + " -> ".join(cycle),
            f"remove one of these fallbacks, e.g. '{second}' from the fallbacks of '{first}'",
        )

    for alias, role_name in cfg.aliases.items():
        line = lines.get(f"aliases.{alias}")
        if alias in roles:
            r.problem(
                line,
                f"alias '{alias}' has the name of a role: a client asking for '{alias}' would be ambiguous",
                f"remove the alias, or give it another name than the role '{alias}'",
            )
        elif role_name not in roles:
            if role_name in cfg.aliases:
                fix = f"an alias must name a role: write '{cfg.aliases[role_name]}'"
            else:
                fix = _pick(role_name, roles, "roles")
            r.problem(line, f"alias '{alias}' points to '{role_name}', which is not defined in roles", fix)

    ports: dict[int, str] = {}
    for name, backend in cfg.backends.items():
        if backend.local is None:
            continue
        other = ports.setdefault(backend.local.port, name)
        if other != name:
            r.problem(
                lines.get(f"backends.{name}.local.port"),
                f"local backends '{other}' and '{name}' both use port {backend.local.port}",
                "give each local backend its own port",
            )


def fallback_cycles(cfg: FabricConfig) -> list[list[str]]:
    """Every distinct cycle in the fallback graph, each as [a, b, ..., a] starting at its first role in
    file order. Fallbacks that name no role are ignored here (reported elsewhere)."""
    order = {name: i for i, name in enumerate(cfg.roles)}
    found: dict[tuple[str, ...], list[str]] = {}
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            cycle = stack[stack.index(name) :]
            start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
            rotated = cycle[start:] + cycle[:start]
            found.setdefault(tuple(rotated), [*rotated, rotated[0]])
            return
        if name in done:
            return
        stack.append(name)
        for fallback in cfg.roles[name].fallbacks:
            if fallback in cfg.roles:
                visit(fallback, stack)
        stack.pop()
        done.add(name)

    for name in cfg.roles:
        visit(name, [])
    return list(found.values())


def report_env(r: Reader) -> None:
    """Turn the `${VAR}` references that did not resolve into problems, one per cause."""
    env = r.env
    file = str(env.env_file) if env.env_file is not None else None
    unset = [m for m in env.misses if m.reason == "unset"]
    env_file_broken = env.env_file_missing or env.env_file_unreadable is not None
    if file is not None and env_file_broken and unset:
        # One cause, one problem: the file is not there (or unreadable), at the line that names it.
        why = "does not exist" if env.env_file_missing else f"cannot be read ({env.env_file_unreadable})"
        needed = ", ".join(f"${{{m.name}}} ({m.path}, line {m.line})" for m in unset)
        names = list(dict.fromkeys(m.name for m in unset))
        r.problem(
            env.env_file_line,
            f"env_file {file} {why}, and the environment does not set {needed}",
            f"create {file} with {names[0]}=..., correct gateway.env_file, or set "
            f"{', '.join(names)} in the environment (the environment takes precedence over the env file)",
            kind=ProblemKind.ENV,
        )
        unset = []
    for m in unset:
        if m.path == "gateway.env_file":
            where = "the environment (env_file's own path cannot come from the env file)"
            fix = f"export {m.name}, or write the path without it"
        elif file is not None:
            where = f"the environment nor in env_file {file}"
            fix = f"add {m.name}=... to {file}, or export {m.name} in the environment"
        else:
            where = "the environment, and no gateway.env_file is set"
            fix = (
                f"export {m.name}=... before starting aifabric, or set gateway.env_file to a file defining it"
            )
        r.problem(m.line, f"${{{m.name}}} in {m.path} is not set: not in {where}", fix, kind=ProblemKind.ENV)
    for m in env.misses:
        if m.reason == "empty":
            r.problem(
                m.line,
                f"${{{m.name}}} in {m.path} is set but empty",
                f"give {m.name} a value, or write ${{{m.name}:-default}} to allow a default",
                kind=ProblemKind.ENV,
            )
        elif m.reason == "bad-name":
            r.problem(
                m.line,
                f"'${{{m.name}}}' in {m.path} is not a variable reference",
                "write ${NAME} (letters, digits, underscores) or $${...} for a literal '${'",
                kind=ProblemKind.ENV,
            )
    for error in env.env_file_errors:
        r.problems.append(
            ConfigProblem(
                file or "<env file>",
                error.line,
                f"env file: {error.message}",
                "write KEY=VALUE or export KEY=VALUE; quote values with spaces or '#'",
                ProblemKind.ENV,
            )
        )
