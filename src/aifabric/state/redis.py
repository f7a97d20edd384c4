"""State shared by gateway replicas on several machines, in Redis (`state: redis://HOST:6379/0`).

    <prefix>lease            the probe lease: SET NX PX ttl, renewed by its holder only (a Lua script
                             compares and renews in one step, so two replicas never both hold it)
    <prefix>health           "<version>\\n<json>", written only while the writer holds the lease (the
                             same script checks it), expiring after a while so an abandoned
                             deployment's health does not linger
    <prefix>health:version   the counter behind <version>
    <prefix>ejections        hash: target -> "<until> <count>"; the later `until` wins; the hash expires
                             when its last ejection is over
    <prefix>config           string: the latest config reload announcement (`aifabric config reload`)
    <prefix>members          hash: holder -> "<seen> <record>", renewed every round by each live
                             replica (fields older than 10 minutes are removed by readers)
    <prefix>stops            hash: backend -> json [reason, until], renewed every round by the gateway
                             that stopped it; the hash expires a while after its last renewal

The prefix is `aifabric:` unless the URL says otherwise (`redis://host/0?prefix=team-a:`), so several
fabrics can share one Redis. Every call has a short timeout and raises `StateStoreError` when Redis
cannot be reached: the sync loop then keeps the gateway running on its own probes.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from aifabric.config.extras import Extra, install_hint
from aifabric.config.show import redact_url
from aifabric.errors import StateStoreError
from aifabric.state.base import Ejection, HealthSnapshot, StateStore

__all__ = ["RedisStore", "require_redis", "split_state_url"]

DEFAULT_PREFIX = "aifabric:"
_FORGET_MEMBER = 600  # seconds: a replica not seen for this long is removed from <prefix>members

# KEYS: lease. ARGV: holder, ttl ms. Take a free lease, or renew our own; 1 when we hold it.
_LEAD = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: holder. Delete the lease only if it is still ours.
_RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: lease, version counter, health. ARGV: holder, json, keep ms. Fenced by the lease.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local v = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[3], v .. '\\n' .. ARGV[2], 'PX', ARGV[3])
return v
"""

# KEYS: ejections. ARGV: target, until, count, ms until it ends. The later `until` wins.
_EJECT = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local u = tonumber(string.match(cur, '^(%S+)'))
  if u and u >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
"""


def require_redis() -> ModuleType:
    """The `redis` package, or a StateStoreError that says how to install it."""
    try:
        return importlib.import_module("redis.asyncio")
    except ImportError as exc:
        raise StateStoreError(
            f"state: redis://... needs the Redis client: {install_hint(Extra.REDIS)} "
            "(or set state: memory for a single gateway)"
        ) from exc


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """What a Redis call raises when Redis cannot be reached or answered (the client's errors, the
    socket's, a timeout): each user of the shared state falls back on these, and only these."""
    return (importlib.import_module("redis.exceptions").RedisError, OSError, TimeoutError)


def split_state_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL Redis is given, and aifabric's own query parameters (`prefix`, `interval`) taken out
    of it (the Redis client would reject them)."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("prefix", "interval"):
            ours[key] = value
        else:
            theirs.append((key, value))
    rebuilt = urlunsplit(parts._replace(query=urlencode(theirs)))
    # urlunsplit writes `unix:/path` for a scheme it does not know to have a netloc; the synchronous
    # Redis client accepts only `unix:///path`.
    if url.startswith(f"{parts.scheme}://") and not rebuilt.startswith(f"{parts.scheme}://"):
        rebuilt = f"{parts.scheme}://" + rebuilt[len(parts.scheme) + 1 :]
    return rebuilt, ours


class RedisStore(StateStore):
    kind = "redis"

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = 1.0) -> None:
        aioredis = require_redis()
        retry_mod = importlib.import_module("redis.asyncio.retry")
        backoff = importlib.import_module("redis.backoff")
        self._shown = redact_url(url)
        self.prefix = prefix
        # One quick retry (a pooled connection gone stale after a Redis restart), no backoff: the sync
        # loop's next round is the real retry, and a round must not stall on a dead Redis.
        self._client: Any = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=retry_mod.Retry(backoff.NoBackoff(), 1),
        )
        self._errors = unreachable_errors()
        self._lead = self._client.register_script(_LEAD)
        self._resign = self._client.register_script(_RESIGN)
        self._publish = self._client.register_script(_PUBLISH)
        self._eject = self._client.register_script(_EJECT)
        self._k_lease = prefix + "lease"
        self._k_version = prefix + "health:version"
        self._k_health = prefix + "health"
        self._k_ejections = prefix + "ejections"
        self._k_stops = prefix + "stops"
        self._k_config = prefix + "config"
        self._k_members = prefix + "members"

    def describe(self) -> str:
        return f"redis ({self._shown}, prefix {self.prefix!r})"

    def _failed(self, doing: str, exc: BaseException) -> StateStoreError:
        return StateStoreError(f"{self.describe()}: cannot {doing}: {type(exc).__name__}: {exc}")

    async def _call(self, doing: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except self._errors as exc:
            raise self._failed(doing, exc) from exc

    async def try_lead(self, holder: str, ttl: float) -> bool:
        ms = max(1, int(ttl * 1000))
        return bool(await self._call("take the probe lease", self._lead, [self._k_lease], [holder, ms]))

    async def resign(self, holder: str) -> None:
        await self._call("release the probe lease", self._resign, [self._k_lease], [holder])

    async def publish_health(self, holder: str, backends: Mapping[str, dict[str, Any]], now: float) -> bool:
        body = orjson.dumps({"published_at": now, "holder": holder, "backends": dict(backends)})
        keep_ms = 10 * 60 * 1000  # long enough for any sync interval, short enough not to linger
        keys = [self._k_lease, self._k_version, self._k_health]
        return bool(await self._call("publish health", self._publish, keys, [holder, body, keep_ms]))

    async def read_health(self) -> HealthSnapshot | None:
        try:
            raw = await self._client.get(self._k_health)
        except self._errors as exc:
            raise self._failed("read health", exc) from exc
        if raw is None:
            return None
        version, _, body = bytes(raw).partition(b"\n")
        try:
            data = orjson.loads(body)
            return HealthSnapshot(
                version.decode(), float(data["published_at"]), str(data["holder"]), dict(data["backends"])
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StateStoreError(f"{self.describe()}: unreadable health: {exc}") from exc

    async def publish_ejection(self, target: str, until: float, count: int) -> None:
        remaining_ms = max(1000, int((until - time.time()) * 1000) + 60_000)
        args = [target, repr(until), count, remaining_ms]
        await self._call("publish an ejection", self._eject, [self._k_ejections], args)

    async def read_ejections(self, now: float) -> dict[str, Ejection]:
        try:
            raw = await self._client.hgetall(self._k_ejections)
        except self._errors as exc:
            raise self._failed("read ejections", exc) from exc
        out: dict[str, Ejection] = {}
        for key, value in raw.items():
            try:
                until_text, count_text = bytes(value).decode().split()
                ejection = Ejection(float(until_text), int(count_text))
            except ValueError:
                continue
            if ejection.until > now:
                out[bytes(key).decode()] = ejection
        return out

    async def publish_stop(self, backend: str, why: str, until: float) -> None:
        keep_ms = max(1000, int((until - time.time()) * 1000) + 60_000)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._k_stops, backend, orjson.dumps([why, until]))
                pipe.pexpire(self._k_stops, keep_ms)
                await pipe.execute()
        except self._errors as exc:
            raise self._failed("publish a stop", exc) from exc

    async def clear_stop(self, backend: str) -> None:
        try:
            await self._client.hdel(self._k_stops, backend)
        except self._errors as exc:
            raise self._failed("clear a stop", exc) from exc

    async def read_stops(self, now: float) -> dict[str, str]:
        try:
            raw = await self._client.hgetall(self._k_stops)
        except self._errors as exc:
            raise self._failed("read stops", exc) from exc
        out: dict[str, str] = {}
        for key, value in raw.items():
            try:
                why, until = orjson.loads(value)
                if float(until) > now:
                    out[bytes(key).decode()] = str(why)
            except (orjson.JSONDecodeError, TypeError, ValueError):
                continue
        return out

    async def publish_config(self, announcement: str) -> None:
        try:
            await self._client.set(self._k_config, announcement.encode(), ex=7 * 24 * 3600)
        except self._errors as exc:
            raise self._failed("announce a config reload", exc) from exc

    async def read_config(self) -> str | None:
        try:
            raw = await self._client.get(self._k_config)
        except self._errors as exc:
            raise self._failed("read the config announcement", exc) from exc
        return None if raw is None else bytes(raw).decode(errors="replace")

    async def publish_member(self, holder: str, record: str, now: float) -> None:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._k_members, holder, f"{now!r} {record}")
                pipe.expire(self._k_members, _FORGET_MEMBER)
                await pipe.execute()
        except self._errors as exc:
            raise self._failed("say this replica is alive", exc) from exc

    async def read_members(self, since: float) -> dict[str, str]:
        try:
            raw = await self._client.hgetall(self._k_members)
        except self._errors as exc:
            raise self._failed("read the live replicas", exc) from exc
        out: dict[str, str] = {}
        gone: list[bytes] = []
        for key, value in raw.items():
            seen_text, _, record = bytes(value).decode(errors="replace").partition(" ")
            try:
                seen = float(seen_text)
            except ValueError:
                continue
            if seen >= since:
                out[bytes(key).decode(errors="replace")] = record
            elif seen < since - _FORGET_MEMBER:
                gone.append(key)
        if gone:
            with contextlib.suppress(*self._errors):
                await self._client.hdel(self._k_members, *gone)
        return out

    async def leave(self, holder: str) -> None:
        try:
            await self._client.hdel(self._k_members, holder)
        except self._errors as exc:
            raise self._failed("leave the replicas", exc) from exc

    async def close(self) -> None:
        # Closing the connections to a Redis that is gone: nothing is left to release.
        with contextlib.suppress(*self._errors):
            await self._client.aclose()
