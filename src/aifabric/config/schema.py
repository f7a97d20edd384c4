"""The fabric file as typed, defaulted, frozen objects.

Validation lives in `config.load` (which knows file names and line numbers); these classes only say
what a valid fabric looks like and what each setting defaults to. Durations are seconds as floats.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from aifabric.config.money import Budget, Price

__all__ = [
    "BACKEND_KINDS",
    "BALANCE_POLICIES",
    "LOAD_SIGNAL_KINDS",
    "NATIVE_APIS",
    "ROLE_KINDS",
    "AlertSink",
    "BackendConfig",
    "BackendKind",
    "BalancePolicy",
    "ClientApi",
    "DrillCommands",
    "FabricConfig",
    "GatewayConfig",
    "HealthCheckConfig",
    "HostConfig",
    "LoadedFrom",
    "LocalEngine",
    "LocalLaunch",
    "MonitoringConfig",
    "OverflowConfig",
    "RetryConfig",
    "RoleConfig",
    "RoleKind",
    "RoleLimits",
    "Secret",
    "TargetConfig",
    "TlsConfig",
    "TracingConfig",
    "WakeConfig",
    "default_balance",
]

# The closed sets of names a fabric file may use, each written once: the Literal types the schema's
# fields carry, and the tuples the loader validates against (and `backends` / `routing.balance` key on).
BackendKind = Literal["vllm", "llamacpp", "llama-cpp-python", "ollama", "tei", "openai", "aifabric-embed"]
RoleKind = Literal["chat", "embeddings", "completions", "rerank", "transcription"]
BalancePolicy = Literal["p2c", "least_outstanding", "least_load"]

BACKEND_KINDS: tuple[str, ...] = typing.get_args(BackendKind)
ROLE_KINDS: tuple[str, ...] = typing.get_args(RoleKind)
BALANCE_POLICIES: tuple[str, ...] = typing.get_args(BalancePolicy)
# The kinds whose probe reads the engine's own load (vLLM's /metrics, llama-server's /slots and /metrics):
# a role with a target on one of them balances with `least_load` unless its `balance:` says otherwise.
LOAD_SIGNAL_KINDS: frozenset[str] = frozenset({"vllm", "llamacpp"})


def default_balance(role: RoleConfig, backends: Mapping[str, BackendConfig]) -> BalancePolicy:
    """`balance:` as written, else `least_load` when a target's backend reports its load, else `p2c`."""
    if role.balance is not None:
        return role.balance
    for tc in role.targets:
        backend = backends.get(tc.backend)
        if backend is not None and backend.kind in LOAD_SIGNAL_KINDS:
            return "least_load"
    return "p2c"


class ClientApi(enum.StrEnum):
    """The closed set of client APIs the gateway serves. A request's API is fixed by its route; a
    backend serves some of them natively (its kind's default, or `apis:` in the fabric file), and the
    gateway translates the others to chat completions and back (`gateway.dialects`)."""

    CHAT = "chat"  # POST /v1/chat/completions: every chat backend; the translation target
    COMPLETIONS = "completions"  # POST /v1/completions
    EMBEDDINGS = "embeddings"  # POST /v1/embeddings
    RESPONSES = "responses"  # POST /v1/responses (OpenAI Responses API)
    INPUT_TOKENS = "input_tokens"  # POST /v1/responses/input_tokens
    MESSAGES = "messages"  # POST /v1/messages (Anthropic Messages API)
    COUNT_TOKENS = "count_tokens"  # POST /v1/messages/count_tokens
    RERANK = "rerank"  # POST /v1/rerank in the backend's own route and shape
    TRANSCRIPTION = "transcription"  # POST /v1/audio/transcriptions


# What `apis: [...]` of a backend may name: the APIs a backend may or may not serve natively. The
# OpenAI three are not listed: a role's kind says which of them its backends serve.
NATIVE_APIS = (
    ClientApi.RESPONSES,
    ClientApi.INPUT_TOKENS,
    ClientApi.MESSAGES,
    ClientApi.COUNT_TOKENS,
    ClientApi.RERANK,
    ClientApi.TRANSCRIPTION,
)


class Secret:
    """A value that must never be shown: repr/str redact it; `.reveal()` is the one way in."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class TlsConfig:
    """TLS on the gateway's listener: PEM files of its certificate (chain) and private key."""

    cert: str
    key: str


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[Secret, ...] = ()
    # Keys for the operator views (/health, /status, /metrics, /alerts, /ui, /admin/*): with any key
    # configured those need one of these; an admin key is also accepted where an API key is.
    admin_keys: tuple[Secret, ...] = ()
    tls: TlsConfig | None = None
    # The listener's bounds against clients that send slowly, too much, or too many connections.
    max_connections: int = 10_000
    max_buffered_bytes: int = 256 * 1024 * 1024  # request bodies read and not yet answered, all clients
    head_timeout: float = 10.0  # a request's head must arrive within this
    body_timeout: float = 30.0  # a request's whole body must arrive within this of its head
    env_file: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    workers: int = 1
    access_log: bool = False  # one JSON line per API request (off: nothing is formatted on the hot path)
    watch: bool = False  # reload when the fabric file or its env file changes (polled, every 2 s)
    # Bounded waits of the data plane; see RetryConfig for what happens within them.
    connect_timeout: float = 3.0
    # Stored Responses-API conversations (previous_response_id): how long each stays, and, in memory
    # or in the workers' files, how many bytes they may take in all (Redis bounds its own).
    responses_ttl: float = 3600.0
    responses_max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class RetryConfig:
    """How one request is allowed to spend its time across candidates."""

    deadline: float = 600.0  # overall, for the whole request, all attempts included
    try_timeout: float = 300.0  # one attempt, until the response headers (first byte for streams)
    max_attempts: int = 4
    backoff_base: float = 0.05
    backoff_max: float = 2.0
    max_retry_after: float = 10.0  # honour an upstream Retry-After up to this long
    warmup_wait: float = 60.0  # hold a request while every candidate is still loading
    stream_idle_timeout: float = 120.0  # mid-stream, this long without a byte from the backend ends it
    # Hold a request this long for a sleeping host being woken, when no fallback can serve it (0: no hold).
    wake_wait: float = 0.0


@dataclass(frozen=True)
class HealthCheckConfig:
    interval: float = 10.0
    timeout: float = 3.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 2
    # Passive outlier detection (ejection on real request failures).
    consecutive_failures: int = 3
    base_ejection: float = 10.0
    max_ejection: float = 300.0


@dataclass(frozen=True)
class WakeConfig:
    """How to wake a host that may be off (health.power): a Wake-on-LAN magic packet, or a command."""

    mac: str | None = None  # "aa:bb:cc:dd:ee:ff": the magic packet's target
    broadcast: str = "255.255.255.255"  # where the packet is sent (the host's subnet broadcast)
    port: int = 9  # UDP port (9, "discard", is the convention; some NICs listen on 7)
    command: str | None = None  # run by the shell instead: a smart plug, IPMI, `ssh router etherwake ...`
    min_interval: float = 60.0  # at most one wake of the host this often, however many requests ask


@dataclass(frozen=True)
class HostConfig:
    name: str
    address: str
    always_on: bool = True
    wake: WakeConfig | None = None


# The programs `aifabric up` can run for a backend (local.launch turns each into a command line).
LocalEngine = Literal["llama-server", "llama-cpp-python", "aifabric-embed"]
# The types `local.requantize` re-encodes a GGUF's weights to (local.requantize).
RequantizeType = Literal["q8_0"]


@dataclass(frozen=True)
class LocalLaunch:
    """A backend that `aifabric up` starts and supervises on this machine."""

    engine: LocalEngine
    model: str  # a path, or a bundled model name (see local.models)
    port: int
    threads: int | None = None
    context: int = 2048  # tokens one request may use (prompt and answer)
    parallel: int | None = None  # llama-server: requests decoded together (slots), each with `context`
    # llama-server: serve the GGUF re-encoded as this type (local.requantize: batched kernels).
    requantize: RequantizeType | None = None
    alias: str | None = None
    extra_args: tuple[str, ...] = ()
    # Models on demand (like llama-swap): not started with `up` but by the first request that needs it;
    # stopped again after `idle_stop` unused; `exclusive` members of a `group` run one at a time.
    start: Literal["always", "on_demand"] = "always"
    idle_stop: float | None = None
    group: str | None = None
    exclusive: bool = False

    @property
    def on_demand(self) -> bool:
        """Whether it may be stopped while the gateway runs (not started yet, idle_stop, or swapped out
        of its exclusive group) and is then started again by the next request that needs it."""
        return self.start == "on_demand" or self.idle_stop is not None or self.exclusive


@dataclass(frozen=True)
class DrillCommands:
    """How `aifabric drill --backend NAME --config FILE` fails and restores a remote backend."""

    fail: str  # e.g. "ssh wintermute podman stop vllm"
    restore: str  # e.g. "ssh wintermute podman start vllm"


@dataclass(frozen=True)
class BackendConfig:
    name: str
    kind: BackendKind
    url: str  # base URL including /v1 (as written in the fabric file)
    host: str | None = None
    # Connections go to this Unix socket instead of the url's host and port (the url still gives the
    # path and the Host header): a server on this machine, cheaper than TCP over loopback for both.
    unix_socket: str | None = None
    api_key: Secret | None = None
    health: HealthCheckConfig = field(default_factory=HealthCheckConfig)
    local: LocalLaunch | None = None
    timeout: float | None = None  # per-try timeout override for this backend
    # vLLM with --enable-sleep-mode: POST /sleep after this long unused, POST /wake_up before the next request
    sleep_when_idle: float | None = None
    drill: DrillCommands | None = None  # the runbook's drill for a backend `aifabric up` does not run

    # The APIs it serves natively (`apis:`), replacing its kind's default set; None = the kind's.
    apis: tuple[ClientApi, ...] | None = None
    max_concurrency: int | None = None  # requests at once; more wait in a queue, interactive first
    max_queue: int = 100  # requests waiting for a place; beyond, the next candidate is tried
    budget: Budget | None = None  # over it, the backend drops out of routing until the period ends

    @property
    def idles(self) -> bool:
        """Whether the gateway tracks when it was last used: it sleeps or stops when idle."""
        return self.sleep_when_idle is not None or (
            self.local is not None and self.local.idle_stop is not None
        )


@dataclass(frozen=True)
class TargetConfig:
    backend: str
    model: str
    weight: float = 1.0
    price: Price = field(default_factory=Price)  # per million tokens; 0 when not written (local models)


@dataclass(frozen=True)
class RoleLimits:
    """What every key together may ask of one role (`roles.X.limits`), per gateway fabric."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (estimated at admission, see docs/tenancy.md)


@dataclass(frozen=True)
class OverflowConfig:
    """When a role sends requests to its fallbacks although its own targets are healthy: every one of
    them is saturated by this measure (either bound reached is enough; unset bounds are not checked)."""

    queue_depth: int | None = None  # requests queued at the engine (estimated) on each target
    estimated_wait: float | None = None  # seconds a new request would wait for a free slot


@dataclass(frozen=True)
class RoleConfig:
    name: str
    kind: RoleKind
    targets: tuple[TargetConfig, ...]
    fallbacks: tuple[str, ...] = ()
    description: str = ""
    # None: `least_load` when a target's backend reports its load (vLLM, llama-server), else `p2c`.
    balance: BalancePolicy | None = None
    overflow: OverflowConfig | None = None
    # Session affinity (routing.affinity): one conversation's requests go to the same target.
    affinity: bool = True
    limits: RoleLimits = field(default_factory=RoleLimits)


@dataclass(frozen=True)
class AlertSink:
    kind: Literal["log", "webhook", "file", "command"]
    target: str = ""  # URL, path or command, by kind
    min_severity: Literal["info", "warning", "critical"] = "info"


@dataclass(frozen=True)
class MonitoringConfig:
    interval: float = 300.0
    probe_interval: float = 10.0
    log_dir: str | None = None
    sinks: tuple[AlertSink, ...] = ()


@dataclass(frozen=True)
class LoadedFrom:
    """Facts the loader learnt about the file, not settings (`config show` leaves them out): where each
    key is written, for messages made after the load, and which `${VAR}` references the file uses."""

    key_lines: Mapping[str, int] = field(default_factory=dict)  # "hosts.motoko.address" -> 7
    env_references: Mapping[str, bool] = field(default_factory=dict)  # name -> a use has a default


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry traces over OTLP/HTTP (the `otel` extra); absent: nothing is imported or traced."""

    endpoint: str  # the collector's OTLP/HTTP base URL; spans go to ENDPOINT/v1/traces
    service_name: str = "aifabric"
    sample_ratio: float = 1.0  # of the traces that start here; a client's sampled flag is followed


@dataclass(frozen=True)
class FabricConfig:
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    hosts: dict[str, HostConfig] = field(default_factory=dict)
    backends: dict[str, BackendConfig] = field(default_factory=dict)
    roles: dict[str, RoleConfig] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    state: str = "memory"  # "memory" or a redis:// / unix:// URL shared by gateway replicas
    tracing: TracingConfig | None = None
    keys: str | None = None  # the key store: sqlite:///path or redis://...; None: see tenancy.keystore
    # The usage ledger: "" = SQLite beside the state (tenancy.ledger.default_ledger_path), a file
    # path or sqlite:///path, a postgresql:// URL shared by replicas, or "off".
    usage: str = ""
    source: str = "<embedded default>"
    loaded: LoadedFrom = field(default_factory=LoadedFrom, compare=False, repr=False)

    def resolve_role(self, name: str) -> RoleConfig | None:
        """The role a client's `model` names, through an alias if need be."""
        role = self.roles.get(name)
        if role is None and name in self.aliases:
            role = self.roles.get(self.aliases[name])
        return role
