"""Waking sleeping hosts: Wake-on-LAN magic packets or an operator's command, rate-limited per host.

A host with `always_on: false` may have `wake: {mac, broadcast, port}` or `wake: {command}`. When a
request needs a role whose targets are all asleep, the gateway asks `PowerManager.wake_for` (from the
data plane; it never waits there): each asleep host with a `wake:` is woken once per
`wake.min_interval`, an INFO alert says who woke what, and the host's backends are probed every
second until they serve (or `max(retry.wake_wait, 2 min)` passes), so requests route back to it as
soon as it is up instead of at the next probe interval. `aifabric wake HOST` asks the running gateway
(`POST /admin/hosts/HOST/wake`, `wake_by_hand`: the same send, alert and probing, at once); with no
gateway to ask it uses `wake_host` directly, and no alert is raised.

    asleep ──request, wake due──> waking (packet sent / command run) ──probe ok──> up
                                   └── nothing for a while: asleep again; the next request wakes again
                                       once min_interval has passed
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from aifabric.config.schema import FabricConfig, HostConfig, WakeConfig
from aifabric.core import BackendHealth, BackendState
from aifabric.errors import CommandError

__all__ = ["BY_HAND", "PowerManager", "WakeEvent", "WakeLimiter", "magic_packet", "wake_host"]

log = logging.getLogger("aifabric.power")

_COMMAND_TIMEOUT = 30.0
_FAST_PROBE_EVERY = 1.0
_FAST_PROBE_FOR = 120.0

BY_HAND = "by hand (aifabric wake)"  # who woke the host, when an operator asked the gateway to


def magic_packet(mac: str) -> bytes:
    """The Wake-on-LAN magic packet: six 0xFF bytes, then the MAC address sixteen times."""
    digits = mac.replace(":", "").replace("-", "")
    raw = bytes.fromhex(digits)
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return b"\xff" * 6 + raw * 16


def _send_packet(wake: WakeConfig) -> None:
    assert wake.mac is not None
    packet = magic_packet(wake.mac)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.sendto(packet, (wake.broadcast, wake.port))


async def wake_host(host: HostConfig) -> str:
    """Send the host's wake (packet or command) once; what was done, in words. Raises CommandError."""
    wake = host.wake
    if wake is None:
        raise CommandError(
            f"host {host.name!r} has no wake: section; add wake: {{mac: ..., broadcast: ...}} or "
            "wake: {command: ...} to it in the fabric file"
        )
    if wake.mac is not None:
        try:
            _send_packet(wake)
        except OSError as exc:
            raise CommandError(
                f"could not send the magic packet for {host.name} to {wake.broadcast}:{wake.port}: {exc}"
            ) from None
        return f"magic packet for {wake.mac} sent to {wake.broadcast}:{wake.port}"
    assert wake.command is not None
    proc = await asyncio.create_subprocess_shell(
        wake.command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(_COMMAND_TIMEOUT):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CommandError(
            f"the wake command of {host.name} did not finish within {_COMMAND_TIMEOUT:g} s"
        ) from None
    if proc.returncode != 0:
        tail = out.decode("utf-8", "replace").strip()[-300:]
        raise CommandError(f"the wake command of {host.name} exited with {proc.returncode}: {tail}")
    return "wake command run"


class WakeLimiter:
    """At most one wake per host per its `min_interval`. Pure: the caller passes the time."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, host: HostConfig, now: float) -> bool:
        """True (and remembered) when the host may be woken now."""
        assert host.wake is not None
        last = self._last.get(host.name)
        if last is not None and now - last < host.wake.min_interval:
            return False
        self._last[host.name] = now
        return True

    def note(self, host: HostConfig, now: float) -> None:
        """A wake sent now whatever was due (by hand): the next request's wake waits min_interval."""
        self._last[host.name] = now

    def last(self, host: str) -> float | None:
        return self._last.get(host)


@dataclass(frozen=True, slots=True)
class WakeEvent:
    """One wake the gateway made: for the INFO alert and the status view."""

    host: str
    how: str
    why: str  # what it was for, after the host's name: "for a request for role X", or BY_HAND
    ok: bool


class PowerManager:
    """Wakes the hosts that requests need (see the module docstring)."""

    def __init__(
        self,
        config: FabricConfig,
        healths: Callable[[], dict[str, BackendHealth]],
        probe: Callable[[str], Awaitable[object]],
        *,
        on_wake: Callable[[WakeEvent], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._healths = healths
        self._probe = probe
        self._on_wake = on_wake
        self._clock = clock
        self.limiter = WakeLimiter()
        self.woken: dict[str, WakeEvent] = {}  # the latest wake of each host
        self._tasks: set[asyncio.Task[None]] = set()

    def update_config(self, config: FabricConfig) -> None:
        self.config = config

    def asleep_hosts(self, backends: Iterable[str]) -> list[HostConfig] | None:
        """The wakeable hosts of `backends` when every one of them is asleep; None when any is not."""
        healths = self._healths()
        hosts: dict[str, HostConfig] = {}
        for name in backends:
            health = healths.get(name)
            backend = self.config.backends.get(name)
            if health is None or backend is None or health.state is not BackendState.ASLEEP:
                return None
            host = self.config.hosts.get(backend.host or "")
            if host is not None and host.wake is not None:
                hosts[host.name] = host
        return list(hosts.values())

    def wake_for(self, backends: Iterable[str], why: str) -> float:
        """From the data plane: wake the hosts of `backends` if all are asleep (each at most once per
        min_interval, in the background); how long a request may be held for them (0: not asleep).
        `why` follows the host's name in the alert: "for a request for role X"."""
        hosts = self.asleep_hosts(backends)
        if not hosts:
            return 0.0
        now = self._clock()
        for host in hosts:
            if self.limiter.due(host, now):
                self._background(self._wake(host, why))
        return self.config.retry.wake_wait

    async def wake_by_hand(self, host: HostConfig) -> WakeEvent:
        """An operator's wake (`aifabric wake HOST` through the gateway): sent now, whatever the rate
        limit, announced like the gateway's own (the INFO alert names BY_HAND); then the host's
        backends are probed every second in the background until they serve."""
        self.limiter.note(host, self._clock())
        event = await self._send(host, BY_HAND)
        if event.ok:
            self._background(self._probe_until_up(host))
        return event

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._tasks.discard)

    async def _wake(self, host: HostConfig, why: str) -> None:
        event = await self._send(host, why)
        if event.ok:
            await self._probe_until_up(host)

    async def _send(self, host: HostConfig, why: str) -> WakeEvent:
        """The packet or the command, once; the event remembered, logged and announced."""
        try:
            how = await wake_host(host)
            ok = True
        except CommandError as exc:
            how, ok = str(exc), False
        event = WakeEvent(host.name, how, why, ok)
        self.woken[host.name] = event
        if ok:
            log.info("woke host %s %s (%s)", host.name, why, how)
        else:
            log.warning("could not wake host %s %s: %s", host.name, why, how)
        if self._on_wake is not None:
            await self._on_wake(event)
        return event

    async def _probe_until_up(self, host: HostConfig) -> None:
        """Probe the host's backends every second until each serves: requests route back at once."""
        names = [n for n, b in self.config.backends.items() if b.host == host.name]
        until = self._clock() + max(self.config.retry.wake_wait, _FAST_PROBE_FOR)
        while names and self._clock() < until:
            await asyncio.sleep(_FAST_PROBE_EVERY)
            for name in list(names):
                await self._probe(name)
                health = self._healths().get(name)
                if health is not None and health.routable:
                    names.remove(name)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):  # closing: nobody waits for it
                await task
