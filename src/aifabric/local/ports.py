"""Is a TCP port free, and if not, which process holds it.

Checked before a local backend starts, so "address already in use" becomes "port 8000 is held by pid
1234 (python -m http.server 8000)" instead of a crash loop. Linux only for the holder: it reads the
listening sockets from /proc/net/tcp{,6} and finds the process whose fd table has that socket's inode.
A process we may not inspect (another user's, without root) is reported as unknown rather than guessed.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "PortHolder",
    "TcpSocket",
    "describe_port_holder",
    "find_port_holder",
    "port_in_use",
    "port_in_use_message",
    "tcp_sockets",
]

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


@dataclass(frozen=True)
class PortHolder:
    pid: int
    cmdline: str


def port_in_use(host: str, port: int) -> bool:
    """Whether binding `host:port` would fail because something already listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as servers set it: a port in TIME_WAIT after a restart counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


class TcpSocket(NamedTuple):
    local_port: int
    remote_port: int
    state: str  # /proc/net/tcp's `st` column, hex: "0A" is listening
    inode: str


def tcp_sockets(proc: Path = Path("/proc")) -> Iterator[TcpSocket]:
    """Every TCP socket of this network namespace, IPv4 and IPv6, from /proc/net/tcp{,6}."""
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 10:
                local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
                yield TcpSocket(local, remote, fields[3], fields[9])


def _listening_inodes(port: int, proc: Path) -> set[str]:
    return {s.inode for s in tcp_sockets(proc) if s.state == _LISTEN and s.local_port == port}


def find_port_holder(port: int, *, proc: Path = Path("/proc")) -> PortHolder | None:
    """The process listening on TCP `port` (any address), or None if none or not visible to us."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link in targets:
                return PortHolder(pid=int(entry.name), cmdline=_cmdline(entry))
    return None


def _cmdline(entry: Path) -> str:
    try:
        raw = (entry / "cmdline").read_bytes()
    except OSError:
        return "?"
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    return text or f"[{(entry / 'comm').read_text().strip()}]"


def describe_port_holder(port: int) -> str | None:
    """Who holds TCP `port`, for a message: "pid 1234 (python -m http.server 8000)", or None if unknown."""
    holder = find_port_holder(port)
    if holder is None:
        return None
    cmd = holder.cmdline if len(holder.cmdline) <= 120 else holder.cmdline[:117] + "..."
    return f"pid {holder.pid} ({cmd})"


def port_in_use_message(host: str, port: int) -> str:
    """A sentence for the operator: the port is taken, and by whom."""
    holder = describe_port_holder(port)
    who = holder or "another process (not visible to this user)"
    return f"port {port} on {host} is already in use by {who}"
