"""Where key records live: a SQLite file (default) or the Redis of `state:` shared by replicas.

    keys: sqlite:///var/lib/aifabric/keys.db     one machine (every worker reads the same file)
    keys: redis://HOST:6379/0                    replicas; the default when `state:` is Redis

Both keep a version counter that every write bumps. A running gateway reads only the counter, once a
second (one indexed SELECT, or one Redis GET), and reloads every record when it moved: so a new,
changed or revoked key holds on every worker and replica within a couple of seconds, without a reload
of the fabric file. The interface is synchronous: the CLI calls it directly, the gateway from a thread.

    <prefix>keys            hash: name -> record JSON (Redis)
    <prefix>keys:version    the counter (Redis)
    keys(name, data), meta(version)   tables (SQLite, WAL mode so readers never wait for a writer)
"""

from __future__ import annotations

import abc
import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from aifabric.config.extras import Extra, install_hint
from aifabric.config.schema import FabricConfig
from aifabric.config.show import redact_url
from aifabric.core.paths import data_dir
from aifabric.core.sqlite_setup import with_setup_retries
from aifabric.errors import StateStoreError
from aifabric.tenancy.keys import KeyRecord

__all__ = ["KeyStore", "RedisKeyStore", "SqliteKeyStore", "default_keys_path", "keys_url", "open_key_store"]


def default_keys_path() -> Path:
    """`$XDG_DATA_HOME/aifabric/keys.db` (`~/.local/share/aifabric/keys.db`): durable, per user."""
    return data_dir() / "keys.db"


def keys_url(config: FabricConfig) -> str:
    """The effective store: `keys:` as written, else the Redis of `state:`, else the default file."""
    if config.keys:
        return config.keys
    if config.state != "memory":
        return config.state
    return "sqlite://" + str(default_keys_path())


class KeyStore(abc.ABC):
    """Every method may raise StateStoreError when the store cannot be reached."""

    kind = "abstract"

    @abc.abstractmethod
    def version(self) -> str:
        """Changes whenever any record changes; cheap."""

    @abc.abstractmethod
    def load(self) -> list[KeyRecord]:
        """Every record, revoked ones included."""

    @abc.abstractmethod
    def get(self, name: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    def put(self, record: KeyRecord, *, create: bool = False) -> bool:
        """Write the record and bump the version; with `create`, False (nothing written) when the
        name is taken."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def describe(self) -> str:
        return self.kind


class SqliteKeyStore(KeyStore):
    kind = "sqlite"

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        """With `create` off (a gateway), a missing file is an empty store until someone makes it."""
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        if create:
            self._connect(create=True)

    def _connect(self, *, create: bool = False) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if not create and not self.path.exists():
            return None
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Replicas, workers and `aifabric keys` may open the same new file at once (core.sqlite_setup).
            db = with_setup_retries(self._setup)
        except (OSError, sqlite3.Error) as exc:
            raise StateStoreError(f"cannot open the key store {self.path}: {exc}") from exc
        self._db = db
        return db

    def _setup(self) -> sqlite3.Connection:
        # check_same_thread off: the gateway polls from worker threads, one call at a time.
        db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
        try:
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)  # hashes only, but nobody else's business
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS keys (name TEXT PRIMARY KEY, data TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY, version INTEGER)")
            db.execute("INSERT OR IGNORE INTO meta (id, version) VALUES (1, 0)")
        except BaseException:
            db.close()
            raise
        return db

    def version(self) -> str:
        db = self._connect()
        if db is None:
            return "absent"
        try:
            row = db.execute("SELECT version FROM meta WHERE id = 1").fetchone()
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot read the key store {self.path}: {exc}") from exc
        return str(row[0] if row else 0)

    def load(self) -> list[KeyRecord]:
        db = self._connect()
        if db is None:
            return []
        try:
            rows = db.execute("SELECT data FROM keys ORDER BY name").fetchall()
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot read the key store {self.path}: {exc}") from exc
        return [KeyRecord.from_json(orjson.loads(row[0])) for row in rows]

    def get(self, name: str) -> KeyRecord | None:
        db = self._connect()
        if db is None:
            return None
        try:
            row = db.execute("SELECT data FROM keys WHERE name = ?", (name,)).fetchone()
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot read the key store {self.path}: {exc}") from exc
        return KeyRecord.from_json(orjson.loads(row[0])) if row else None

    def put(self, record: KeyRecord, *, create: bool = False) -> bool:
        data = orjson.dumps(record.to_json()).decode()
        verb = "INSERT OR IGNORE" if create else "INSERT OR REPLACE"
        db = self._connect(create=True)
        assert db is not None
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                cursor = db.execute(f"{verb} INTO keys (name, data) VALUES (?, ?)", (record.name, data))
                written = cursor.rowcount > 0
                if written:
                    db.execute("UPDATE meta SET version = version + 1 WHERE id = 1")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot write the key store {self.path}: {exc}") from exc
        return written

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def describe(self) -> str:
        return f"sqlite {self.path}"


class RedisKeyStore(KeyStore):
    kind = "redis"

    def __init__(self, url: str) -> None:
        from aifabric.state.redis import DEFAULT_PREFIX, split_state_url

        try:
            import redis
        except ImportError as exc:
            raise StateStoreError(
                f"keys in Redis need the redis package: {install_hint(Extra.REDIS)}"
            ) from exc
        clean, ours = split_state_url(url)
        prefix = ours.get("prefix", DEFAULT_PREFIX)
        self._hash = prefix + "keys"
        self._version = prefix + "keys:version"
        self._where = redact_url(clean)
        try:
            self._redis: Any = redis.Redis.from_url(clean, socket_timeout=1.0, socket_connect_timeout=1.0)
        except ValueError as exc:
            raise StateStoreError(f"keys: {self._where} is not a Redis URL: {exc}") from exc
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def version(self) -> str:
        try:
            value = self._redis.get(self._version)
        except self._errors as exc:
            raise StateStoreError(f"cannot reach the key store at {self._where}: {exc}") from exc
        return value.decode() if value else "0"

    def load(self) -> list[KeyRecord]:
        try:
            values = self._redis.hvals(self._hash)
        except self._errors as exc:
            raise StateStoreError(f"cannot reach the key store at {self._where}: {exc}") from exc
        return sorted((KeyRecord.from_json(orjson.loads(v)) for v in values), key=lambda r: r.name)

    def get(self, name: str) -> KeyRecord | None:
        try:
            value = self._redis.hget(self._hash, name)
        except self._errors as exc:
            raise StateStoreError(f"cannot reach the key store at {self._where}: {exc}") from exc
        return KeyRecord.from_json(orjson.loads(value)) if value else None

    def put(self, record: KeyRecord, *, create: bool = False) -> bool:
        data = orjson.dumps(record.to_json())
        try:
            if create:
                written = bool(self._redis.hsetnx(self._hash, record.name, data))
            else:
                self._redis.hset(self._hash, record.name, data)
                written = True
            if written:
                self._redis.incr(self._version)
        except self._errors as exc:
            raise StateStoreError(f"cannot reach the key store at {self._where}: {exc}") from exc
        return written

    def close(self) -> None:
        with contextlib.suppress(*self._errors):
            self._redis.close()

    def describe(self) -> str:
        return f"redis {self._where}"


def open_key_store(config: FabricConfig, *, create: bool = True) -> KeyStore:
    """The store the fabric file names (see `keys_url`); a relative sqlite path is taken relative to
    the fabric file. Without `create`, a SQLite file is not made until a key is written."""
    url = keys_url(config)
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = Path(url[len("sqlite://") :])
        if not path.is_absolute() and not config.source.startswith("<"):
            path = Path(config.source).resolve().parent / path
        return SqliteKeyStore(path, create=create)
    return RedisKeyStore(url)
