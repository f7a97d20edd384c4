"""Where past responses are kept for `previous_response_id`: a bounded store, in memory or in Redis.

    save(id, record)  after a response completes (unless the request said `store: false`)
    load(id)          the record, or None when the id is unknown, expired or evicted; the gateway
                      then answers 400 (never a silent empty history)

A record is opaque bytes to the store (the gateway's JSON: the conversation's items and the Response
object). Unlike the control-plane state of `state.base`, this store is on the data plane: it is called
by requests that use `previous_response_id` (a load) or store a response (a save), never by others.

    memory   this process; least recently used first out past `max_entries` or `max_bytes`, and
             every record expires `ttl` seconds after it was saved (clock injected)
    files    the workers of `aifabric serve --workers N` (`state: memory`): one file per response in
             the workers' private state directory (0700, files 0600), written whole then renamed;
             expired by modification time, the oldest pruned past `max_entries` or `max_bytes`
    redis    `state: redis://...`: shared by every replica, `SET ... PX ttl`, the key
             `<prefix>response:<id>`; Redis's own memory policy bounds it
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import importlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aifabric.config.show import redact_url
from aifabric.errors import StateStoreError
from aifabric.state.redis import DEFAULT_PREFIX, require_redis

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_TTL",
    "FileResponseStore",
    "MemoryResponseStore",
    "RedisResponseStore",
    "ResponseStore",
]

DEFAULT_TTL = 3600.0  # an agent's conversation is continued within minutes; a day-old id is an error
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class ResponseStore(abc.ABC):
    """Past responses by id. Methods may raise `StateStoreError` when a shared store is unreachable."""

    kind: str = "abstract"
    ttl: float = DEFAULT_TTL

    @abc.abstractmethod
    async def save(self, response_id: str, record: bytes) -> None:
        """Keep `record` under `response_id` for `ttl` seconds (or until evicted)."""

    @abc.abstractmethod
    async def load(self, response_id: str) -> bytes | None:
        """The record, or None when unknown, expired or evicted."""

    async def close(self) -> None:  # noqa: B027 - nothing to release unless a subclass holds connections
        """Release connections."""


class MemoryResponseStore(ResponseStore):
    kind = "memory"

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._records: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # oldest use first
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    async def save(self, response_id: str, record: bytes) -> None:
        if len(record) > self.max_bytes:
            return  # larger than the whole store: keeping it would evict everything else
        self._drop(response_id)
        self._records[response_id] = (self._clock() + self.ttl, record)
        self.bytes += len(record)
        while len(self._records) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._records)))

    async def load(self, response_id: str) -> bytes | None:
        entry = self._records.get(response_id)
        if entry is None:
            return None
        expires, record = entry
        if self._clock() >= expires:
            self._drop(response_id)
            return None
        self._records.move_to_end(response_id)
        return record

    def _drop(self, response_id: str) -> None:
        entry = self._records.pop(response_id, None)
        if entry is not None:
            self.bytes -= len(entry[1])


_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
_PRUNE_EVERY = 64  # saves between two scans of the directory


class FileResponseStore(ResponseStore):
    kind = "files"

    def __init__(
        self,
        directory: Path | str,
        *,
        ttl: float = DEFAULT_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock  # wall clock: file times are shared by the worker processes
        self._saves = 0
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateStoreError(f"cannot use {self.directory} for stored responses: {exc}") from exc

    def _path(self, response_id: str) -> Path | None:
        # Ids come from clients (previous_response_id): only plain names ever reach the file system.
        return self.directory / response_id if _SAFE_ID.fullmatch(response_id) else None

    async def save(self, response_id: str, record: bytes) -> None:
        path = self._path(response_id)
        if path is None or len(record) > self.max_bytes:
            return
        tmp = path.with_name(f".{response_id}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(record)
            os.replace(tmp, path)
        except OSError as exc:
            raise StateStoreError(f"cannot store a response in {self.directory}: {exc}") from exc
        self._saves += 1
        if self._saves % _PRUNE_EVERY == 0:
            await asyncio.to_thread(self.prune)

    async def load(self, response_id: str) -> bytes | None:
        path = self._path(response_id)
        if path is None:
            return None
        try:
            if path.stat().st_mtime + self.ttl <= self._clock():
                path.unlink(missing_ok=True)
                return None
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateStoreError(f"cannot read a stored response in {self.directory}: {exc}") from exc

    def prune(self) -> None:
        """Expired files out, then the oldest until within `max_entries` and `max_bytes`."""
        now = self._clock()
        files: list[tuple[float, int, Path]] = []
        for path in self.directory.iterdir():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if st.st_mtime + self.ttl <= now or (path.name.startswith(".") and st.st_mtime + 60 <= now):
                path.unlink(missing_ok=True)  # expired, or a temporary file a crash left behind
            elif not path.name.startswith("."):
                files.append((st.st_mtime, st.st_size, path))
        files.sort()
        total = sum(size for _, size, _ in files)
        while files and (len(files) > self.max_entries or total > self.max_bytes):
            _, size, path = files.pop(0)
            path.unlink(missing_ok=True)
            total -= size


class RedisResponseStore(ResponseStore):
    kind = "redis"

    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, ttl: float = DEFAULT_TTL, timeout: float = 1.0
    ) -> None:
        aioredis = require_redis()
        self.ttl = ttl
        self._shown = redact_url(url)
        self._prefix = prefix + "response:"
        self._client: Any = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._errors: tuple[type[BaseException], ...] = (
            importlib.import_module("redis.exceptions").RedisError,
            OSError,
            TimeoutError,
        )

    def _failed(self, doing: str, exc: BaseException) -> StateStoreError:
        return StateStoreError(
            f"the response store (redis {self._shown}) cannot {doing}: {type(exc).__name__}: {exc}"
        )

    async def save(self, response_id: str, record: bytes) -> None:
        try:
            await self._client.set(self._prefix + response_id, record, px=max(1, int(self.ttl * 1000)))
        except self._errors as exc:
            raise self._failed("save a response", exc) from exc

    async def load(self, response_id: str) -> bytes | None:
        try:
            raw = await self._client.get(self._prefix + response_id)
        except self._errors as exc:
            raise self._failed("load a response", exc) from exc
        return None if raw is None else bytes(raw)

    async def close(self) -> None:
        with contextlib.suppress(*self._errors):
            await self._client.aclose()
