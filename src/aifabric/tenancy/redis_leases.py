"""A key's requests in flight, counted by every gateway process on one Redis (`state: redis://...`).

`keys create --concurrency C` holds for all the replicas together and their workers: each request of
such a key takes a lease, a member of one sorted set per key, before it is forwarded, and gives it
back when its answer is over.

    <prefix>conc:<digest of the key's name>   sorted set: lease -> when it expires (Redis's clock, ms)

Taking a lease is one script run on Redis (one round trip, only for keys with a concurrency limit):
it drops the expired leases, counts the live ones and adds one if fewer than C are live. Leases carry
an expiry so that a replica that dies, or loses Redis, cannot hold its slots for ever: the process
renews its own leases every `ttl / 3`, so a live request keeps its slot however long it streams,
and a dead process's slots come free within `ttl`. Expiries are read from Redis's own clock (`TIME`
in the scripts): the replicas' clocks may disagree. Giving a lease back is one `ZREM`, not awaited by
the request; if it cannot reach Redis the lease expires.

When Redis cannot be reached, `acquire` raises and the admission falls back to this process's share
of the limit (tenancy.admission); `run` keeps trying, and says when the leases are shared again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from typing import Any

from aifabric.errors import StateStoreError

__all__ = ["LEASE_TTL", "RedisLeases"]

log = logging.getLogger("aifabric.tenancy")

LEASE_TTL = 30.0  # seconds a lease outlives its process (renewed every third of it while held)

# KEYS[1] the key's set; ARGV: limit, ttl ms, lease. 1 when taken, 0 when C leases are live.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1] the key's set; ARGV: ttl ms, leases... Extends the leases still there (XX: one given back
# meanwhile stays given back).
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


class RedisLeases:
    """Leases of keys' concurrency limits on Redis; `run` renews this process's while it serves."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        ttl: float = LEASE_TTL,
        timeout: float = 1.0,
    ) -> None:
        from aifabric.state.redis import DEFAULT_PREFIX, require_redis, split_state_url, unreachable_errors

        aioredis = require_redis()
        clean, ours = split_state_url(url)
        self._prefix = ours.get("prefix", DEFAULT_PREFIX) + "conc:"
        try:
            self._redis: Any = aioredis.Redis.from_url(
                clean, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        except ValueError as exc:
            raise StateStoreError(f"state: not a Redis URL: {exc}") from exc
        self.errors = unreachable_errors()
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._ttl_ms = max(1, int(ttl * 1000))
        self._timeout = timeout
        self._me = f"{socket.gethostname()}/{os.getpid()}/{os.urandom(3).hex()}"
        self._serial = 0
        self._digests: dict[str, str] = {}
        self.held: dict[str, set[str]] = {}  # key name -> this process's leases of it
        self._releasing: set[asyncio.Task[None]] = set()
        self.reachable = True
        self.error = ""

    def _set(self, name: str) -> str:
        digest = self._digests.get(name)
        if digest is None:  # a key's name may hold any character: the set is named by a digest
            digest = self._digests[name] = hashlib.sha256(name.encode()).hexdigest()[:16]
        return self._prefix + digest

    async def acquire(self, name: str, limit: int) -> str | None:
        """A lease of key `name` (now held by this process), or None when `limit` requests of it are in
        flight in all the processes together. StateStoreError when Redis cannot be reached."""
        self._serial += 1
        lease = f"{self._me}:{self._serial}"
        try:
            async with asyncio.timeout(self._timeout):
                taken = await self._acquire(keys=[self._set(name)], args=[limit, self._ttl_ms, lease])
        except self.errors as exc:
            self._lost(exc)
            raise StateStoreError(f"cannot take a concurrency lease on Redis: {self.error}") from exc
        except asyncio.CancelledError:
            # The client went away during the round trip: the script may have added the lease, which
            # no one would renew or give back. Remove it (a no-op if it was not added).
            self._forget(name, lease)
            raise
        if not taken:
            return None
        self.held.setdefault(name, set()).add(lease)
        return lease

    def release(self, name: str, lease: str) -> None:
        """Give `lease` back (a request is over); not awaited: if Redis is away, it expires."""
        leases = self.held.get(name)
        if leases is None or lease not in leases:
            return
        leases.discard(lease)
        if not leases:
            del self.held[name]
        self._forget(name, lease)

    def _forget(self, name: str, lease: str) -> None:
        """Remove `lease` from Redis without waiting for it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the gateway's loop (it is shutting down): the lease expires
            return
        task = loop.create_task(self._zrem(name, lease))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _zrem(self, name: str, lease: str) -> None:
        with contextlib.suppress(*self.errors):
            async with asyncio.timeout(self._timeout):
                await self._redis.zrem(self._set(name), lease)

    async def renew(self) -> None:
        """Extend this process's leases (every key it holds some of), and find out whether Redis can
        be reached again (when it holds none). Never raises for Redis."""
        try:
            async with asyncio.timeout(self._timeout):
                if self.held:
                    pipe = self._redis.pipeline(transaction=False)
                    for name, leases in list(self.held.items()):
                        await self._renew(keys=[self._set(name)], args=[self._ttl_ms, *leases], client=pipe)
                    await pipe.execute()
                else:
                    await self._redis.ping()
        except self.errors as exc:
            self._lost(exc)
            return
        if not self.reachable:
            log.warning("concurrency limits are shared again (redis reachable)")
        self.reachable = True
        self.error = ""

    def _lost(self, exc: BaseException) -> None:
        if self.reachable:
            log.warning(
                "concurrency limits are not shared (redis unreachable: %s): each gateway process now "
                "allows its share of a key's requests in flight",
                exc,
            )
        self.reachable = False
        self.error = str(exc) or type(exc).__name__

    async def run(self, stop: asyncio.Event) -> None:
        """Renew every third of the leases' lifetime (every second while Redis is away, to notice
        its return soon) until `stop`."""
        while not stop.is_set():
            interval = self._ttl_ms / 3000 if self.reachable else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if not stop.is_set():
                await self.renew()

    def status(self) -> dict[str, object]:
        return {"shared": self.kind, "reachable": self.reachable, "error": self.error}

    async def close(self) -> None:
        """Give back every lease still held (a clean shutdown), and close the connections."""
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
        for name, leases in list(self.held.items()):
            for lease in leases:
                await self._zrem(name, lease)
        self.held.clear()
        with contextlib.suppress(*self.errors):
            await self._redis.aclose()
