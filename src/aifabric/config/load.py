"""Load a fabric file: YAML -> `${VAR}` substitution -> typed, frozen `FabricConfig`, or a `ConfigError`
carrying every problem found, each with file, line and what to write instead.

    load_config("fabric.yaml")                       # env_file relative to the file's directory
    load_config_text(text, "fabric.yaml", environ={"OPENAI_API_KEY": "sk-..."})

YAML keys have the names of the fields in `config.schema`. This module reads the sections; the checks
across sections (a target naming a backend, fallback cycles, ...) are in `config.checks`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from aifabric.config import checks
from aifabric.config import nodes as n
from aifabric.config.env import EnvResolver
from aifabric.config.money import BUDGET_PERIODS, Price, parse_budget
from aifabric.config.nodes import INVALID, Field, Reader
from aifabric.config.schema import (
    BACKEND_KINDS,
    BALANCE_POLICIES,
    NATIVE_APIS,
    ROLE_KINDS,
    AlertSink,
    BackendConfig,
    ClientApi,
    DrillCommands,
    FabricConfig,
    GatewayConfig,
    HealthCheckConfig,
    HostConfig,
    LoadedFrom,
    LocalLaunch,
    MonitoringConfig,
    OverflowConfig,
    RequantizeType,
    RetryConfig,
    RoleConfig,
    RoleLimits,
    TargetConfig,
    TlsConfig,
    TracingConfig,
    WakeConfig,
    default_balance,
)
from aifabric.core.paths import local_socket
from aifabric.errors import ConfigError, ConfigProblem

__all__ = ["load_config", "load_config_text"]


def _literal(cls: type, name: str) -> tuple[str, ...]:
    """The allowed values of a `Literal[...]` field of a schema class, so the two never drift apart."""
    return tuple(typing.get_args(typing.get_type_hints(cls)[name]))


LOCAL_ENGINES = _literal(LocalLaunch, "engine")
REQUANTIZE: tuple[str, ...] = typing.get_args(RequantizeType)
SINK_KINDS = _literal(AlertSink, "kind")
SEVERITIES = _literal(AlertSink, "min_severity")
STATE_SCHEMES = ("redis", "rediss", "unix")
USAGE_SCHEMES = ("postgresql", "postgres", "sqlite")


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> FabricConfig:
    """Read and validate the fabric file at `path`. A relative `gateway.env_file` is taken relative to
    the file's directory. `environ` defaults to `os.environ`. Raises `ConfigError` with every problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [ConfigProblem(str(path), None, "the fabric file does not exist", "check the path")]
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            [ConfigProblem(str(path), None, "this is a directory", "name the fabric file itself")]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(str(path), None, f"cannot read the file: {exc.strerror}", "check its permissions")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigProblem(str(path), None, f"not UTF-8 text ({exc.reason})", "save the file as UTF-8")]
        ) from None
    return load_config_text(text, str(path), environ=environ, base_dir=file.parent)


def load_config_text(
    text: str,
    source: str = "<string>",
    *,
    environ: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> FabricConfig:
    """Validate fabric-file text; `source` names it in problems, `base_dir` anchors a relative env_file
    (default: the current directory). Raises `ConfigError` with every problem found."""
    root = _compose(text, source)
    environ = os.environ if environ is None else environ
    env = EnvResolver(environ)
    reader = Reader(source, env)
    env_file = _locate_env_file(root, environ, Path(base_dir) if base_dir is not None else Path.cwd())
    if env_file is not None:
        env.env_file, env.env_file_line = env_file
    config = _fabric(reader, root, source)
    checks.report_env(reader)
    if config is not None:
        checks.check_references(reader, config)
    if reader.problems or config is None:
        raise ConfigError(sorted(reader.problems, key=lambda p: (p.file != source, p.line or 0)))
    return config


# -- YAML ------------------------------------------------------------------------------------------

_YAML_FIXES = (
    ("\\t", "indent with spaces: YAML does not allow tabs"),
    ("mapping values are not allowed", "quote the value: an unquoted ': ' starts a mapping"),
    ("could not find expected ':'", "write `key: value`, and check the indentation of this line"),
    ("expected <block end>", "check the indentation: this line is out of line with its siblings"),
    ("found undefined alias", "define the anchor (&name) before using it (*name)"),
    ("expected a single document", "keep one document in the file: remove the extra `---`"),
    ("found unexpected end of stream", "close the quote or bracket opened here"),
)


def _compose(text: str, source: str) -> yaml.Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "not valid YAML"
        context = f" ({exc.context} on line {exc.context_mark.line + 1})" if exc.context_mark else ""
        fix = next((f for key, f in _YAML_FIXES if key in problem), "check indentation and quoting here")
        if exc.context_mark and exc.context and "flow" in exc.context:
            bracket = "{ ... }" if "mapping" in exc.context else "[ ... ]"
            fix = f"close the {bracket} opened on line {exc.context_mark.line + 1}, commas between entries"
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigProblem(source, line, f"not valid YAML: {problem}{context}", fix)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(source, None, f"not valid YAML: {exc}", "")]) from None
    if root is None:
        raise ConfigError(
            [
                ConfigProblem(
                    source, None, "the fabric file is empty", "describe the roles (see docs/configuration.md)"
                )
            ]
        )
    return root


def _locate_env_file(root: yaml.Node, environ: Mapping[str, str], base: Path) -> tuple[Path, int] | None:
    """Where `gateway.env_file` points, found before the walk: every other `${VAR}` may need it. Its
    own references resolve from the environment only; the walk reports them if they do not."""
    node = n.child(n.child(root, "gateway"), "env_file")
    if not isinstance(node, yaml.ScalarNode) or not isinstance(node.value, str) or not node.value:
        return None
    value = EnvResolver(environ).substitute(node.value, "gateway.env_file", None)
    if not value:
        return None
    return base / Path(value).expanduser(), n.line_of(node)


# -- sections --------------------------------------------------------------------------------------

Builder = Callable[[Reader, yaml.Node, str], Any]


def _section(fields: Mapping[str, Field], build: Callable[..., Any]) -> n.Converter:
    def convert(r: Reader, node: yaml.Node, path: str) -> Any:
        if n.is_null(node):
            return None  # `local: null`, `health:` with nothing: the section's defaults
        values = r.mapping(node, path, fields)
        return INVALID if values is None else build(**values)

    return convert


_RETRY = {
    "deadline": Field(n.duration(positive=True)),
    "try_timeout": Field(n.duration(positive=True)),
    "max_attempts": Field(n.integer(1)),
    "backoff_base": Field(n.duration()),
    "backoff_max": Field(n.duration()),
    "max_retry_after": Field(n.duration()),
    "warmup_wait": Field(n.duration()),
    "stream_idle_timeout": Field(n.duration(positive=True)),
    "wake_wait": Field(n.duration()),
}

_HEALTH = {
    "interval": Field(n.duration(positive=True)),
    "timeout": Field(n.duration(positive=True)),
    "healthy_threshold": Field(n.integer(1)),
    "unhealthy_threshold": Field(n.integer(1)),
    "consecutive_failures": Field(n.integer(1)),
    "base_ejection": Field(n.duration()),
    "max_ejection": Field(n.duration()),
}

_LOCAL = {
    "engine": Field(n.choice(LOCAL_ENGINES), required=True),
    "model": Field(n.text, required=True),
    "port": Field(n.integer(1, 65535), required=True),
    "threads": Field(n.integer(1)),
    "context": Field(n.integer(1)),
    "parallel": Field(n.integer(1, 256)),
    "requantize": Field(n.choice(REQUANTIZE)),
    "alias": Field(n.text),
    "extra_args": Field(n.list_of(n.text)),
    "start": Field(n.choice(("always", "on_demand"))),
    "idle_stop": Field(n.duration(positive=True)),
    "group": Field(n.text),
    "exclusive": Field(n.boolean),
}


def _local(r: Reader, node: yaml.Node, path: str) -> Any:
    if n.is_null(node):
        return None
    values = r.mapping(node, path, _LOCAL)
    if values is None:
        return INVALID
    if values.get("exclusive") and not values.get("group"):
        r.problem(
            r.lines.get(f"{path}.exclusive"),
            f"{path}.exclusive needs a group: the backends it excludes are those of its group",
            "add group: NAME (the same on every backend that shares the GPU), or remove exclusive:",
        )
        return INVALID
    return LocalLaunch(**values)


def _api_key(r: Reader, node: yaml.Node, path: str) -> Any:
    key = n.secret(r, node, path)
    if key is not None and key is not INVALID and not key:
        # An empty key would let `Authorization: Bearer ` (nothing after it) in.
        r.problem(r.lines[path], f"{path} is empty", "write the key, or remove it from the list")
        return INVALID
    return key


def _api_keys(r: Reader, node: yaml.Node, path: str) -> Any:
    # One key may be written without the brackets.
    if isinstance(node, yaml.ScalarNode):
        key = _api_key(r, node, path)
        return key if key is None or key is INVALID else (key,)
    return r.sequence(node, path, _api_key)


_TLS = {
    "cert": Field(n.text, required=True, example="/etc/aifabric/gateway.crt"),
    "key": Field(n.text, required=True, example="/etc/aifabric/gateway.key"),
}

_GATEWAY = {
    "host": Field(n.text),
    "port": Field(n.integer(0, 65535)),
    "api_keys": Field(_api_keys),
    "env_file": Field(n.text),
    "max_body_bytes": Field(n.size),
    "workers": Field(n.integer(1, 256)),
    "connect_timeout": Field(n.duration(positive=True)),
    "access_log": Field(n.boolean),
    "responses_ttl": Field(n.duration(positive=True)),
    "responses_max_bytes": Field(n.size),
    "watch": Field(n.boolean),
    "admin_keys": Field(_api_keys),
    "tls": Field(_section(_TLS, TlsConfig)),
    "max_connections": Field(n.integer(1)),
    "max_buffered_bytes": Field(n.size),
    "head_timeout": Field(n.duration(positive=True)),
    "body_timeout": Field(n.duration(positive=True)),
}

_WAKE = {
    "mac": Field(n.text),
    "broadcast": Field(n.text),
    "port": Field(n.integer(1, 65535)),
    "command": Field(n.text),
    "min_interval": Field(n.duration()),
}
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-]?)[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$")


def _wake(r: Reader, node: yaml.Node, path: str) -> Any:
    if n.is_null(node):
        return None
    values = r.mapping(node, path, _WAKE)
    if values is None:
        return INVALID
    line = r.lines.get(path)
    mac, command = values.get("mac"), values.get("command")
    if (mac is None) == (command is None):
        if f"{path}.mac" in r.lines or f"{path}.command" in r.lines:
            return INVALID  # a wrong one is already reported
        r.problem(
            line,
            f"{path} needs exactly one of mac: or command:",
            'write wake: {mac: "aa:bb:cc:dd:ee:ff", broadcast: 192.168.1.255} or wake: {command: "..."}',
        )
        return INVALID
    if mac is not None and not _MAC.match(mac):
        r.problem(
            r.lines.get(f"{path}.mac", line),
            f"{path}.mac must be a MAC address, found {mac!r}",
            'write six hex pairs: mac: "aa:bb:cc:dd:ee:ff"',
        )
        return INVALID
    return WakeConfig(**values)


_HOST = {
    "address": Field(n.text, required=True, example="HOSTNAME_OR_IP"),
    "always_on": Field(n.boolean),
    "wake": Field(_wake),
}


def _apis(r: Reader, node: yaml.Node, path: str) -> tuple[ClientApi, ...] | Any:
    """`apis: [responses, messages]`: the APIs the backend serves natively; `[]` means none, and
    nothing (null, as `config show` prints the default) means its kind's set."""
    if n.is_null(node):
        return None
    names = r.sequence(node, path, n.choice(tuple(NATIVE_APIS)))
    if not isinstance(names, tuple):
        return INVALID
    return tuple(dict.fromkeys(ClientApi(name) for name in names))


def _budget(r: Reader, node: yaml.Node, path: str) -> Any:
    s = r.scalar(node, path, "AMOUNT/PERIOD")
    if not isinstance(s, n.Scalar):
        return s
    try:
        return parse_budget(s.text)
    except ValueError as exc:
        return r.wrong(
            s,
            path,
            "AMOUNT/PERIOD",
            f"{exc}: write e.g. {path.rsplit('.', 1)[-1]}: 50/month (periods: {', '.join(BUDGET_PERIODS)})",
        )


_PRICE = {
    "input": Field(n.number(0)),
    "output": Field(n.number(0)),
}

_DRILL = {
    "fail": Field(n.text, required=True, example="ssh HOST podman stop vllm"),
    "restore": Field(n.text, required=True, example="ssh HOST podman start vllm"),
}

_BACKEND = {
    "host": Field(n.text),
    "kind": Field(n.choice(BACKEND_KINDS), required=True, example=" | ".join(BACKEND_KINDS)),
    "url": Field(n.url),
    "unix_socket": Field(n.text),
    "api_key": Field(n.secret),
    "timeout": Field(n.duration(positive=True)),
    "max_concurrency": Field(n.integer(1)),
    "max_queue": Field(n.integer(0)),
    "sleep_when_idle": Field(n.duration(positive=True)),
    "drill": Field(_section(_DRILL, DrillCommands)),
    "health": Field(_section(_HEALTH, HealthCheckConfig)),
    "local": Field(_local),
    "apis": Field(_apis),
    "budget": Field(_budget),
}

_TARGET = {
    "backend": Field(n.text, required=True, example="BACKEND (a name under backends:)"),
    "model": Field(n.text, required=True, example="MODEL_ID (the id the backend serves)"),
    "weight": Field(n.number(0, above=True)),
    "price": Field(_section(_PRICE, Price)),
}

_ROLE_LIMITS = {
    "rpm": Field(n.integer(1)),
    "tpm": Field(n.integer(1)),
}

_OVERFLOW = {
    "queue_depth": Field(n.integer(1)),  # requests waiting; 0 would overflow an idle role
    "estimated_wait": Field(n.duration()),
}


def _overflow(r: Reader, node: yaml.Node, path: str) -> Any:
    if n.is_null(node):
        return None
    values = r.mapping(node, path, _OVERFLOW)
    if values is None:
        return INVALID
    if not values and not any(f"{path}.{key}" in r.lines for key in _OVERFLOW):  # a wrong one is reported
        r.problem(
            r.lines[path],
            f"{path} sets no bound, so it would never overflow",
            "write overflow: {queue_depth: 4} or overflow: {estimated_wait: 10s}",
        )
        return INVALID
    if not values:
        return INVALID
    return OverflowConfig(**values)


_ROLE = {
    "kind": Field(n.choice(ROLE_KINDS), required=True, example=" | ".join(ROLE_KINDS)),
    "targets": Field(
        n.list_of(_section(_TARGET, TargetConfig)),
        required=True,
        example="[{backend: BACKEND, model: MODEL_ID}]",
    ),
    "fallbacks": Field(n.list_of(n.text)),
    "description": Field(n.text),
    "balance": Field(n.choice(BALANCE_POLICIES)),
    "limits": Field(_section(_ROLE_LIMITS, RoleLimits)),
    "overflow": Field(_overflow),
    "affinity": Field(n.boolean),
}

_SINK = {
    "kind": Field(n.choice(SINK_KINDS), required=True),
    "target": Field(n.text),
    "min_severity": Field(n.choice(SEVERITIES)),
}


def _sink(r: Reader, node: yaml.Node, path: str) -> Any:
    values = r.mapping(node, path, _SINK)
    if values is None:
        return INVALID
    if values["kind"] != "log" and not values.get("target"):
        what = {"webhook": "a URL", "file": "a file path", "command": "a command"}[values["kind"]]
        r.problem(r.lines[path], f"{path} (kind {values['kind']}) has no target", f"add target: {what}")
        return INVALID
    return AlertSink(**values)


_MONITORING = {
    "interval": Field(n.duration(positive=True)),
    "probe_interval": Field(n.duration(positive=True)),
    "log_dir": Field(n.text),
    "sinks": Field(n.list_of(_sink)),
}


def _named(r: Reader, node: yaml.Node, path: str, build: Builder) -> dict[str, Any]:
    """A mapping of names to entries (hosts, backends, roles); every name is declared even when its entry
    is wrong, so references to it are not reported twice."""
    declared = r.declared.setdefault(path, {})
    out: dict[str, Any] = {}
    for name, child, line in r.pairs(node, path, "a mapping of names to entries"):
        declared[name] = line
        value = build(r, child, f"{path}.{name}")
        if value is not INVALID and value is not None:
            out[name] = value
    return out


def _host(r: Reader, node: yaml.Node, path: str) -> Any:
    values = r.mapping(node, path, _HOST)
    if values is None:
        return INVALID
    if values.get("wake") is not None and values.get("always_on", True):
        r.problem(
            r.lines.get(f"{path}.wake"),
            f"{path} has wake: but is always on: the gateway wakes only hosts that may be off",
            "add always_on: false to the host, or remove wake:",
        )
        return INVALID
    return HostConfig(name=path.split(".", 1)[1], **values)


def _backend(r: Reader, node: yaml.Node, path: str) -> Any:
    values = r.mapping(node, path, _BACKEND)
    if values is None:
        return INVALID
    if "url" not in values:
        local = values.get("local")
        if local is None:
            if f"{path}.url" not in r.lines:  # not written at all (a wrong one is already reported)
                r.problem(
                    r.lines[path],
                    f"{path} has no 'url'",
                    "add url: http://HOST:PORT/v1 (the base URL of its OpenAI API)",
                )
            return INVALID
        values["url"] = f"http://127.0.0.1:{local.port}/v1"  # a local backend listens on loopback
    local = values.get("local")
    if local is not None and local.parallel is not None and local.engine != "llama-server":
        r.problem(
            r.lines[f"{path}.local.parallel"],
            f"{path}.local.parallel applies to the llama-server engine only (this one is {local.engine}, "
            "which serves one request at a time)",
            "remove parallel, or use engine: llama-server",
        )
        return INVALID
    if local is not None and local.requantize is not None and local.engine != "llama-server":
        r.problem(
            r.lines[f"{path}.local.requantize"],
            f"{path}.local.requantize applies to the llama-server engine only (this one is {local.engine})",
            "remove requantize, or use engine: llama-server",
        )
        return INVALID
    if not _unix_socket(r, path, values):
        return INVALID
    if values.get("sleep_when_idle") is not None and values["kind"] != "vllm":
        r.problem(
            r.lines.get(f"{path}.sleep_when_idle"),
            f"{path}.sleep_when_idle is vLLM's sleep mode, but the backend is of kind {values['kind']}",
            "remove sleep_when_idle: (only kind: vllm servers started with --enable-sleep-mode have it)",
        )
        return INVALID
    return BackendConfig(name=path.split(".", 1)[1], **values)


_SUN_PATH_MAX = 107  # bytes of a Unix socket's path (sun_path holds 108 with the final NUL)


def _unix_socket(r: Reader, path: str, values: dict[str, Any]) -> bool:
    """Check `unix_socket`; a local embeddings server gets one by default (core.paths.local_socket),
    which the gateway then uses instead of TCP over loopback."""
    local = values.get("local")
    socket_path = values.get("unix_socket")
    line = r.lines.get(f"{path}.unix_socket")
    if socket_path is None:
        if local is not None and local.engine == "aifabric-embed":
            values["unix_socket"] = local_socket(local.port)
        return True
    if local is not None and local.engine != "aifabric-embed":
        r.problem(
            line,
            f"{path}.unix_socket: `aifabric up` serves only its embeddings server (engine aifabric-embed) "
            f"on a Unix socket, and this backend runs {local.engine}",
            "remove unix_socket (the gateway reaches it over TCP on its port)",
        )
        return False
    if not socket_path.startswith("/"):
        r.problem(
            line,
            f"{path}.unix_socket is {socket_path!r}: a Unix socket is given by its absolute path",
            "write the full path, e.g. unix_socket: /run/vllm/vllm.sock",
        )
        return False
    size = len(os.fsencode(socket_path))
    if size > _SUN_PATH_MAX:
        r.problem(
            line,
            f"{path}.unix_socket is {size} bytes long: the path of a Unix socket is at most {_SUN_PATH_MAX}",
            "choose a shorter path, e.g. under /run or /tmp",
        )
        return False
    if urlsplit(values.get("url", "")).scheme == "https":
        r.problem(
            line,
            f"{path}.unix_socket is set with an https url: the gateway speaks plain HTTP on a Unix socket",
            "write url: http://... (the socket is on this machine), or remove unix_socket",
        )
        return False
    return True


def _role(r: Reader, node: yaml.Node, path: str) -> Any:
    values = r.mapping(node, path, _ROLE)
    if values is None:
        return INVALID
    if not values.get("targets"):
        r.problem(
            r.lines.get(f"{path}.targets", r.lines[path]),
            f"{path} has no targets",
            "add targets: [{backend: BACKEND, model: MODEL_ID}]",
        )
        return INVALID
    return RoleConfig(name=path.split(".", 1)[1], **values)


def _aliases(r: Reader, node: yaml.Node, path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    declared = r.declared.setdefault(path, {})
    for name, child, line in r.pairs(node, path, "a mapping of alias names to role names"):
        declared[name] = line
        role = n.text(r, child, f"{path}.{name}")
        if isinstance(role, str):
            out[name] = role
        elif role is None:
            r.problem(line, f"alias '{name}' names no role", f"write {name}: ROLE")
    return out


def _state(r: Reader, node: yaml.Node, path: str) -> Any:
    value = n.text(r, node, path)
    if not isinstance(value, str) or value == "memory":
        return value
    try:
        scheme = urlsplit(value).scheme
    except ValueError:
        scheme = ""
    if scheme not in STATE_SCHEMES:
        r.problem(
            r.lines[path],
            "state must be 'memory' or a redis://, rediss:// or unix:// URL",
            "write state: memory (one gateway) or state: redis://HOST:6379/0 (several replicas)",
        )
        return INVALID
    return value


_TRACING = {
    "endpoint": Field(n.url, required=True, example="http://127.0.0.1:4318"),
    "service_name": Field(n.text),
    "sample_ratio": Field(n.number(0.0, 1.0)),
}


def _keys(r: Reader, node: yaml.Node, path: str) -> Any:
    value = n.text(r, node, path)
    if not isinstance(value, str):
        return value
    try:
        scheme = urlsplit(value).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("sqlite", *STATE_SCHEMES) or value in ("sqlite://", "sqlite:///"):
        r.problem(
            r.lines[path],
            "keys must be a sqlite:///PATH or a redis://, rediss:// or unix:// URL",
            "write keys: sqlite:///var/lib/aifabric/keys.db (one machine) or keys: redis://HOST:6379/0",
        )
        return INVALID
    return value


def _usage(r: Reader, node: yaml.Node, path: str) -> Any:
    value = n.text(r, node, path)
    if not isinstance(value, str) or value in ("", "off") or "://" not in value:
        return value  # a file path for the SQLite ledger, or off
    try:
        scheme = urlsplit(value).scheme
    except ValueError:
        scheme = ""
    if scheme not in USAGE_SCHEMES:
        r.problem(
            r.lines[path],
            "usage must be a file path, sqlite:///PATH, a postgresql:// URL, or off",
            "write usage: postgresql://USER@HOST:5432/DB (replicas sharing one ledger), or leave it out "
            "(SQLite beside the state)",
        )
        return INVALID
    return value


_TOP: dict[str, Field] = {
    "gateway": Field(_section(_GATEWAY, GatewayConfig)),
    "hosts": Field(lambda r, node, path: _named(r, node, path, _host)),
    "backends": Field(lambda r, node, path: _named(r, node, path, _backend)),
    "roles": Field(
        lambda r, node, path: _named(r, node, path, _role),
        required=True,
        example="{chat-fast: {kind: chat, targets: [{backend: BACKEND, model: MODEL_ID}]}}",
    ),
    "aliases": Field(_aliases),
    "monitoring": Field(_section(_MONITORING, MonitoringConfig)),
    "retry": Field(_section(_RETRY, RetryConfig)),
    "state": Field(_state),
    "tracing": Field(_section(_TRACING, TracingConfig)),
    "keys": Field(_keys),
    "usage": Field(_usage),
}


def _fabric(r: Reader, root: yaml.Node, source: str) -> FabricConfig | None:
    if not isinstance(root, yaml.MappingNode):
        r.problem(
            n.line_of(root),
            f"the fabric file must be a mapping of sections, found {n.describe(root)}",
            "start with sections like gateway:, hosts:, backends:, roles:",
        )
        return None
    # Top-level `x-...` keys hold YAML anchors for reuse (`<<: *defaults`), as in compose files.
    fields = dict(_TOP)
    for key_node, _ in root.value:
        if isinstance(key_node, yaml.ScalarNode) and str(key_node.value).startswith("x-"):
            fields[str(key_node.value)] = Field(lambda r, node, path: None)
    values = r.mapping(root, "", fields)
    if values is None:
        return None
    values = {k: v for k, v in values.items() if k in _TOP}
    gateway = values.get("gateway", GatewayConfig())
    if gateway.env_file and r.env.env_file is not None:
        # Effective path: a relative env_file means relative to the fabric file, for whoever reads it next.
        gateway = dataclasses.replace(gateway, env_file=str(r.env.env_file))
    values["gateway"] = gateway
    backends = values.get("backends", {})
    values["roles"] = {  # the effective policy, so `config show` says which one a role balances with
        name: dataclasses.replace(role, balance=default_balance(role, backends))
        for name, role in values.get("roles", {}).items()
    }
    loaded = LoadedFrom(key_lines=dict(r.lines), env_references=dict(r.env.references))
    return FabricConfig(source=source, loaded=loaded, **values)
