"""`aifabric doctor`: the runbook's "LiteLLM won't start" checklist, run as code.

    report = diagnose("fabric.yaml")          # or diagnose(None): the embedded default
    report.exit_code                          # 0: no FAIL, 1: something will stop the gateway

Each check ends PASS, WARN or FAIL (SKIP when it cannot run, e.g. while the fabric file does not load)
and, unless it passed, says the fix in words. What the runbook did by hand, and the check that does it:

    YAML syntax error           "fabric file": every problem with file:line and what to write instead
    missing secrets in .env     "secrets" (every ${VAR} resolves, and from where) and "env file"
                                (exists, not readable by others, has KEY=VALUE lines)
    port conflict (ss -tlnp)    "listen port": free, or the pid and command line holding it
    is the host online (ping)   "dns NAME": the host name resolves; nothing is sent to the host
    model not loaded            "model", "engine", "memory": local weights installed, engine imports,
                                enough free memory for them

Quiet on the network by design: a host is looked up in DNS, never contacted, unless `probe=True`,
which runs the health checker's probes (the same as `aifabric health`) against every backend.
Values of secrets are never read into the report: only names, paths and file modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import ipaddress
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from aifabric.config.env import parse_env_file
from aifabric.config.load import load_config
from aifabric.config.schema import FabricConfig
from aifabric.errors import ConfigError, ConfigProblem, LocalBackendError

__all__ = [
    "Check",
    "DoctorReport",
    "Verdict",
    "diagnose",
    "engine_check",
    "log_dir_check",
    "memory_check",
    "port_check",
    "resolve",
]


class Verdict(enum.StrEnum):
    PASS = "PASS"
    WARN = "WARN"  # works, but is a risk or will surprise someone later
    FAIL = "FAIL"  # the gateway will not start, or will not serve what the file promises
    SKIP = "SKIP"  # could not run (an earlier check failed) or was not asked for


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    summary: str
    fix: str = ""
    details: tuple[str, ...] = ()


@dataclass
class DoctorReport:
    source: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.verdict is Verdict.FAIL for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.checks:
            out[c.verdict.value] = out.get(c.verdict.value, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "checks": [{**asdict(c), "details": list(c.details)} for c in self.checks],
        }


_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
_PLACEHOLDER = "aifabric-doctor-unset"


def diagnose(
    path: str | os.PathLike[str] | None,
    *,
    environ: Mapping[str, str] | None = None,
    probe: bool = False,
    probe_timeout: float | None = None,
    dns_timeout: float = 5.0,
    available_memory: int | None = None,
) -> DoctorReport:
    """Run every check on the fabric file at `path` (None: the embedded default). Never raises for a
    failed check. `available_memory` (bytes) defaults to MemAvailable of /proc/meminfo."""
    if path is None:
        from aifabric.config.defaults import default_config_path

        path = default_config_path()
    source = str(path)
    environ = os.environ if environ is None else environ
    report = DoctorReport(source)
    config = _load(source, environ, report)
    if config is None:
        report.checks.append(
            Check("other checks", Verdict.SKIP, "not run: they need a fabric file that loads")
        )
        return report
    lines = _key_lines(source)
    report.checks.extend(_env_file_checks(config, lines))
    report.checks.extend(_port_checks(config))
    report.checks.extend(_state_checks(config))
    report.checks.extend(_dns_checks(config, lines, dns_timeout))
    report.checks.extend(_local_checks(config, lines, available_memory))
    report.checks.extend(_log_dir_checks(config))
    if probe:
        report.checks.extend(_probe_checks(config, probe_timeout))
    else:
        report.checks.append(
            Check(
                "backend probes",
                Verdict.SKIP,
                "not run: nothing is sent to the backends without --probe (DNS lookups only)",
            )
        )
    return report


# -- the fabric file and its ${VAR} references ----------------------------------------------------


def _is_env_problem(problem: ConfigProblem, source: str) -> bool:
    """Problems `config.checks.report_env` made: unresolved references and env file lines."""
    if problem.file != source:
        return True  # located in the env file itself
    return problem.message.startswith(("${", "'${", "env_file ", "env file:"))


def _load(source: str, environ: Mapping[str, str], report: DoctorReport) -> FabricConfig | None:
    try:
        config = load_config(source, environ=environ)
    except ConfigError as exc:
        structural = [p for p in exc.problems if not _is_env_problem(p, source)]
        env = [p for p in exc.problems if _is_env_problem(p, source)]
        if structural:
            report.checks.append(
                Check(
                    "fabric file",
                    Verdict.FAIL,
                    f"{len(structural)} problem(s) in {source}, each with its fix",
                    "",
                    tuple(str(p) for p in structural),
                )
            )
        else:
            report.checks.append(_loaded(source, None))
        if env:
            report.checks.append(
                Check(
                    "secrets",
                    Verdict.FAIL,
                    f"{len(env)} ${{VAR}} reference(s) or env file line(s) cannot be used",
                    "",
                    tuple(str(p) for p in env),
                )
            )
        if structural:
            return None
        # Only secrets are missing: load again with stand-ins so the other checks still run.
        try:
            return load_config(source, environ=_StandIns(environ))
        except ConfigError:
            return None
    report.checks.append(_loaded(source, config))
    report.checks.append(_secrets_check(config, environ))
    return config


def _loaded(source: str, config: FabricConfig | None) -> Check:
    if config is None:
        return Check("fabric file", Verdict.PASS, f"{source} is valid apart from its secrets")
    summary = (
        f"{source} loads: {len(config.hosts)} hosts, {len(config.backends)} backends, "
        f"{len(config.roles)} roles, {len(config.aliases)} aliases"
    )
    return Check("fabric file", Verdict.PASS, summary)


class _StandIns(Mapping[str, str]):
    """An environment in which every variable is set (to a stand-in unless really set)."""

    def __init__(self, real: Mapping[str, str]) -> None:
        self._real = real

    def __getitem__(self, key: str) -> str:
        return self._real.get(key) or _PLACEHOLDER

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Any:
        return iter(self._real)

    def __len__(self) -> int:
        return len(self._real)


def _secrets_check(config: FabricConfig, environ: Mapping[str, str]) -> Check:
    """Every reference resolved (the loader says so); where each came from, which matters for a service:
    systemd and compose give it the env file, never the shell that ran this command."""
    refs: dict[str, bool] = {}  # name -> has a default somewhere
    for text in _scalars(config.source):  # values only: a `${X}` in a comment is not a reference
        for m in _REFERENCE.finditer(text):
            if m.group(1):
                refs[m.group(1)] = refs.get(m.group(1), False) or bool(m.group(2))
    if not refs:
        return Check("secrets", Verdict.PASS, "no ${VAR} references")
    env_file = config.gateway.env_file
    in_file: set[str] = set()
    if env_file:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            in_file = set(parse_env_file(env_file)[0])
    details, shell_only = [], []
    for name, has_default in refs.items():
        where = [w for w, ok in (("environment", name in environ), ("env file", name in in_file)) if ok]
        if not where and has_default:
            where = ["its default"]
        details.append(f"${{{name}}}: from {' and '.join(where)}")
        if where == ["environment"]:
            shell_only.append(name)
    summary = f"all {len(refs)} ${{VAR}} reference(s) resolve"
    if not shell_only:
        return Check("secrets", Verdict.PASS, summary, details=tuple(details))
    names = ", ".join(shell_only)
    fix = (
        f"add {names} to {env_file} (KEY=VALUE lines)"
        if env_file
        else f"set gateway.env_file to a file (mode 600) defining {names}"
    )
    return Check(
        "secrets",
        Verdict.WARN,
        f"{summary}, but {names} only from this shell's environment: a service started by systemd or "
        "compose will not have it",
        fix,
        tuple(details),
    )


# -- env file ---------------------------------------------------------------------------------------


def _env_file_checks(config: FabricConfig, lines: Mapping[str, int]) -> list[Check]:
    env_file = config.gateway.env_file
    if not env_file:
        return []
    where = f"{config.source}:{lines['gateway.env_file']}" if "gateway.env_file" in lines else config.source
    path = Path(os.path.abspath(env_file))  # as the fix commands need it, wherever they are run
    try:
        st = path.stat()
    except FileNotFoundError:
        return [
            Check(
                "env file",
                Verdict.WARN,
                f"{path} (gateway.env_file, {where}) does not exist; "
                "every ${VAR} came from the environment",
                f"create {path} with KEY=VALUE lines and `chmod 600 {path}`, or remove gateway.env_file",
            )
        ]
    except OSError as exc:
        return [Check("env file", Verdict.FAIL, f"{path} cannot be examined: {exc.strerror}", "")]
    if not stat.S_ISREG(st.st_mode):
        return [Check("env file", Verdict.FAIL, f"{path} is not a regular file", f"point {where} at a file")]
    try:
        values, errors = parse_env_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        return [
            Check(
                "env file",
                Verdict.FAIL,
                f"{path} cannot be read: {why}",
                f"check its owner and mode: `ls -l {path}`; the gateway must be able to read it",
            )
        ]
    mode = stat.S_IMODE(st.st_mode)
    checks = []
    if mode & 0o077:
        checks.append(
            Check(
                "env file",
                Verdict.WARN,
                f"{path} holds secrets but is readable by {'others' if mode & 0o007 else 'its group'} "
                f"(mode {mode:04o})",
                f"chmod 600 {path}",
            )
        )
    if errors:
        checks.append(
            Check(
                "env file lines",
                Verdict.WARN,
                f"{len(errors)} line(s) of {path} are not KEY=VALUE and are ignored",
                "write KEY=VALUE (or export KEY=VALUE); quote values with spaces or '#'",
                tuple(f"{path}:{e.line}: {e.message}" for e in errors),  # never the line itself
            )
        )
    if not values:
        checks.append(
            Check("env file", Verdict.WARN, f"{path} defines no variables", f"add KEY=VALUE lines to {path}")
        )
    if not checks:
        checks.append(Check("env file", Verdict.PASS, f"{path}: {len(values)} variable(s), mode {mode:04o}"))
    return checks


# -- ports ------------------------------------------------------------------------------------------


def _port_checks(config: FabricConfig) -> list[Check]:
    from aifabric.local.launch import local_backends

    gw = config.gateway
    wanted = [("listen port", gw.host, gw.port, "gateway.port")] if gw.port else []
    for backend in local_backends(config):
        assert backend.local is not None
        host = urlsplit(backend.url).hostname or "127.0.0.1"
        wanted.append(
            (f"port of {backend.name}", host, backend.local.port, f"backends.{backend.name}.local.port")
        )
    return [port_check(name, host, port, key) for name, host, port, key in wanted]


def port_check(name: str, host: str, port: int, key: str = "gateway.port") -> Check:
    """Whether `host:port` can be bound; if something holds it, its pid and command line."""
    from aifabric.local.ports import find_port_holder, port_in_use

    try:
        busy = port_in_use(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            return Check(
                name,
                Verdict.FAIL,
                f"{host} is not an address of this machine",
                "listen on 0.0.0.0 (every address), 127.0.0.1 (this machine only) "
                "or an address that `ip -br addr` shows",
            )
        if exc.errno == errno.EACCES:
            return Check(
                name,
                Verdict.FAIL,
                f"port {port} is privileged and this user may not bind it",
                f"set {key} to 1024 or above, or grant CAP_NET_BIND_SERVICE "
                "(AmbientCapabilities=CAP_NET_BIND_SERVICE in the systemd unit)",
            )
        return Check(name, Verdict.FAIL, f"cannot bind {host}:{port}: {exc.strerror}")
    if not busy:
        return Check(name, Verdict.PASS, f"{host}:{port} is free")
    holder = find_port_holder(port)
    if holder is None:
        return Check(
            name,
            Verdict.FAIL,
            f"port {port} on {host} is in use by a process this user cannot see",
            f"run `sudo ss -tlnp 'sport = :{port}'` to find it; stop it, or change {key}",
        )
    cmd = holder.cmdline if len(holder.cmdline) <= 120 else holder.cmdline[:117] + "..."
    fix = f"stop it (`kill {holder.pid}`), or set {key} to a free port"
    if "aifabric" in holder.cmdline:
        fix = (
            f"aifabric already runs there (see `aifabric status --url http://127.0.0.1:{port}`); "
            f"stop it first (`systemctl stop aifabric` or `kill {holder.pid}`), or change {key}"
        )
    return Check(name, Verdict.FAIL, f"port {port} on {host} is in use by pid {holder.pid} ({cmd})", fix)


# -- DNS --------------------------------------------------------------------------------------------


def resolve(name: str, timeout: float) -> tuple[list[str], str]:
    """Addresses of `name` (a DNS lookup, nothing sent to the host), or ([], why not). Bounded by
    `timeout`: a resolver that does not answer must not hang the doctor (the lookup thread is left)."""
    result: list[tuple[list[str], str]] = []

    def lookup() -> None:
        import socket

        try:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
            result.append((sorted({str(i[4][0]) for i in infos}), ""))
        except OSError as exc:
            result.append(([], str(exc.strerror or exc)))

    thread = threading.Thread(target=lookup, name=f"doctor-dns-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else ([], f"no answer from the resolver within {timeout:g} s")


def _dns_checks(config: FabricConfig, lines: Mapping[str, int], timeout: float) -> list[Check]:
    """One check per host name the fabric sends traffic to: hosts' addresses and backends' URLs."""
    users: dict[str, list[tuple[str, bool]]] = {}  # name -> [(key path, always_on)]
    for host in config.hosts.values():
        users.setdefault(host.address, []).append((f"hosts.{host.name}.address", host.always_on))
    for backend in config.backends.values():
        if backend.local is not None:
            continue  # the supervisor's own loopback listener
        hostname = urlsplit(backend.url).hostname or ""
        on = config.hosts.get(backend.host) if backend.host else None
        users.setdefault(hostname, []).append(
            (f"backends.{backend.name}.url", on.always_on if on is not None else True)
        )
    if config.state != "memory" and not config.state.startswith("unix:"):
        with contextlib.suppress(ValueError):
            hostname = urlsplit(config.state).hostname or ""
            users.setdefault(hostname, []).append(("state", True))
    checks = []
    for name, used in users.items():
        if not name:
            continue
        try:
            ipaddress.ip_address(name)
            continue  # an address: nothing to resolve
        except ValueError:
            pass
        where = tuple(f"{config.source}:{lines[k]}: {k}" if k in lines else k for k, _ in used)
        addresses, error = resolve(name, timeout)
        if addresses:
            shown = ", ".join(addresses[:3]) + (" ..." if len(addresses) > 3 else "")
            checks.append(Check(f"dns {name}", Verdict.PASS, f"resolves to {shown}", details=where))
            continue
        sleeper = not any(always_on for _, always_on in used)
        checks.append(
            Check(
                f"dns {name}",
                Verdict.WARN if sleeper else Verdict.FAIL,
                f"{name} does not resolve ({error})"
                + ("; its host has always_on: false, so it may be powered off" if sleeper else ""),
                "check the spelling where it is written (above); for a tailnet name check "
                "`tailscale status` and that MagicDNS is on",
                where,
            )
        )
    return checks


# -- local backends ---------------------------------------------------------------------------------

# What each engine needs to import, checked in a fresh interpreter: a broken native build (llama.cpp
# built for another CPU) may crash the process that imports it, and must not crash the doctor.
_ENGINE_IMPORTS = {
    "llama-cpp-python": (
        "import llama_cpp, llama_cpp.server.app",
        'make up (or: pip install "$(scripts/llama-wheel.sh)[server]", a build with portable CPU flags)',
    ),
    "aifabric-embed": ("import onnxruntime, tokenizers, numpy", "pip install 'aifabric[local]'"),
}
_PROCESS_OVERHEAD = 200 * 1024 * 1024  # a Python engine process beyond its weights (measured ~150 MB)


def engine_check(engine: str, python: Sequence[str] = (sys.executable,), timeout: float = 120.0) -> Check:
    """Whether the interpreter (`python`: its command, the venv's by default) imports what `engine` needs."""
    statement, fix = _ENGINE_IMPORTS[engine]
    name = f"engine {engine}"
    shown = python[0]
    try:
        proc = subprocess.run(
            [*python, "-c", statement], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return Check(name, Verdict.FAIL, f"importing it took over {timeout:g} s", fix)
    except OSError as exc:
        return Check(name, Verdict.FAIL, f"cannot run {shown}: {exc.strerror}", fix)
    if proc.returncode == 0:
        return Check(name, Verdict.PASS, f"imports in {shown}")
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        return Check(
            name,
            Verdict.FAIL,
            f"importing it crashed the interpreter ({sig}): a native build that does not fit this CPU",
            f"reinstall it with portable CPU flags: {fix}",
        )
    last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
    return Check(name, Verdict.FAIL, f"does not import in {shown}: {last}", fix)


def memory_check(needed: int, available: int | None) -> Check:
    """Free memory against what the local models need (weights plus a process each): WARN if short."""
    mib = 1024 * 1024
    if available is None:
        return Check("memory", Verdict.SKIP, "MemAvailable is not readable from /proc/meminfo")
    summary = f"{available / mib:,.0f} MiB available, local models need about {needed / mib:,.0f} MiB"
    if available >= needed:
        return Check("memory", Verdict.PASS, summary)
    return Check(
        "memory",
        Verdict.WARN,
        summary + ": they may be killed by the OOM killer, or swap and answer slowly",
        "stop other processes, give the machine more memory, or use smaller models (fewer local backends)",
    )


def _available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _local_checks(config: FabricConfig, lines: Mapping[str, int], available: int | None) -> list[Check]:
    from aifabric.local.launch import local_backends
    from aifabric.local.models import resolve_model

    backends = local_backends(config)
    if not backends:
        return []
    checks: list[Check] = []
    weights: dict[Path, int] = {}  # one file mmapped by several processes is in memory once
    for backend in backends:
        local = backend.local
        assert local is not None
        key = f"backends.{backend.name}.local.model"
        where = f" ({config.source}:{lines[key]})" if key in lines else ""
        try:
            model = resolve_model(local.model, local.engine)
        except LocalBackendError as exc:
            checks.append(
                Check(
                    f"model of {backend.name}",
                    Verdict.FAIL,
                    f"{exc}{where}",
                    f"install the package named above, or point {key} at an existing file",
                )
            )
            continue
        size = model.path.stat().st_size
        weights[model.path.resolve()] = size
        checks.append(
            Check(f"model of {backend.name}", Verdict.PASS, f"{model.path} ({size / 1024 / 1024:,.0f} MiB)")
        )
    for engine in dict.fromkeys(b.local.engine for b in backends if b.local is not None):
        checks.append(engine_check(engine))
    if weights:
        needed = sum(weights.values()) + _PROCESS_OVERHEAD * len(backends)
        checks.append(memory_check(needed, _available_memory() if available is None else available))
    return checks


# -- state store and log directory ----------------------------------------------------------------


def _state_checks(config: FabricConfig) -> list[Check]:
    if config.state == "memory":
        return []
    from aifabric.config.show import redact_url
    from aifabric.errors import StateStoreError
    from aifabric.state import check_state

    shown = redact_url(config.state)
    try:
        check_state(config)
    except StateStoreError as exc:
        return [Check("state store", Verdict.FAIL, f"{shown}: {exc}", "pip install 'aifabric[redis]'")]
    return [Check("state store", Verdict.PASS, f"{shown}: the redis client is installed (not connected)")]


def log_dir_check(directory: Path) -> Check:
    """Whether the service can write its logs in `directory`, or create it."""
    name = "log dir"
    if directory.exists():
        if not directory.is_dir():
            return Check(name, Verdict.FAIL, f"{directory} exists and is not a directory", "")
        if os.access(directory, os.W_OK | os.X_OK):
            return Check(name, Verdict.PASS, f"{directory} is writable")
        return Check(
            name,
            Verdict.FAIL,
            f"{directory} is not writable by this user",
            f"give the service's user write access: `chown USER {directory}`, or change the log dir",
        )
    parent = directory.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if os.access(parent, os.W_OK | os.X_OK):
        return Check(name, Verdict.PASS, f"{directory} does not exist yet and will be created")
    return Check(
        name,
        Verdict.FAIL,
        f"{directory} does not exist and this user cannot create it ({parent} is not writable)",
        f"install -d -m 0750 -o USER {directory}",
    )


def _log_dir_checks(config: FabricConfig) -> list[Check]:
    """The log dir `aifabric up` writes each local backend's log to (monitoring.log_dir, else its default)."""
    from aifabric.local.launch import local_backends

    if config.monitoring.log_dir:
        directory = Path(config.monitoring.log_dir).expanduser()
    elif local_backends(config):
        from aifabric.local.launch import default_log_dir

        directory = default_log_dir(config)
    else:
        return []
    return [log_dir_check(Path(os.path.abspath(directory)))]


# -- probes (only with --probe) ---------------------------------------------------------------------


def _probe_checks(config: FabricConfig, timeout: float | None) -> list[Check]:
    from aifabric.core import exit_codes
    from aifabric.health.checker import probe_backends
    from aifabric.health.report import backend_status

    healths = asyncio.run(probe_backends(config, list(config.backends), timeout))
    checks = []
    for name, health in healths.items():
        status = backend_status(health)
        verdict = {exit_codes.OK: Verdict.PASS, exit_codes.ATTENTION: Verdict.WARN}.get(status, Verdict.FAIL)
        summary = f"{health.state}: {health.reason}"
        fix = ""
        if verdict is Verdict.FAIL:
            fix = (
                "see `aifabric health " + name + "`; start the server, or correct its url in the fabric file"
            )
            if config.backends[name].local is not None:
                verdict, fix = Verdict.WARN, "a local backend: `aifabric up` starts it"
        checks.append(Check(f"backend {name}", verdict, summary, fix, tuple(health.mismatches)))
    return checks


# -- what the file says where ----------------------------------------------------------------------


def _compose(source: str) -> yaml.Node | None:
    try:
        return yaml.compose(Path(source).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _scalars(source: str) -> list[str]:
    """Every scalar (keys and values) of the file, in order."""
    out: list[str] = []

    def walk(node: yaml.Node | None) -> None:
        if isinstance(node, yaml.ScalarNode):
            out.append(str(node.value))
        elif isinstance(node, yaml.SequenceNode):
            for child in node.value:
                walk(child)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                walk(key)
                walk(value)

    walk(_compose(source))
    return out


def _key_lines(source: str) -> dict[str, int]:
    """Line of every mapping key in the file, by dotted path (`hosts.motoko.address` -> 7)."""
    root = _compose(source)
    out: dict[str, int] = {}

    def walk(node: yaml.Node | None, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                out[path] = key.start_mark.line + 1
                walk(value, path)

    walk(root, "")
    return out
