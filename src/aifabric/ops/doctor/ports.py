"""The checks "listen port" and "port of BACKEND": free, or the pid and command line holding it."""

from __future__ import annotations

import errno
import itertools
from urllib.parse import urlsplit

from aifabric.config.schema import FabricConfig
from aifabric.ops.doctor.report import Check, Verdict

__all__ = ["port_check", "port_checks"]


def port_checks(config: FabricConfig) -> list[Check]:
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
    words = holder.cmdline.split()
    if "aifabric.local.embed_server" in words:
        # The embeddings server of a running `aifabric up`: its supervisor would restart it if killed,
        # and it has no /status of its own.
        fix = (
            "the embeddings server of an `aifabric up` already running on this machine "
            f"(`aifabric status` shows it); stop that `aifabric up` first (Ctrl-C), or change {key}"
        )
    elif _is_gateway(words):
        fix = (
            f"aifabric already runs there (see `aifabric status --url http://127.0.0.1:{port}`); "
            f"stop it first (`systemctl stop aifabric` or `kill {holder.pid}`), or change {key}"
        )
    return Check(name, Verdict.FAIL, f"port {port} on {host} is in use by pid {holder.pid} ({cmd})", fix)


def _is_gateway(words: list[str]) -> bool:
    """Whether a command line is `aifabric up` or `aifabric serve` (not merely a path with the name)."""
    for word, following in itertools.pairwise(words):
        if word.rsplit("/", 1)[-1] == "aifabric" and following in ("up", "serve"):
            return True
    return False
