"""State shared by the worker processes of one gateway on one machine: a private directory of files.

    <dir>/lease             flock(LOCK_EX) held by the worker that probes. The kernel drops it when that
                            process exits or dies, so a crashed leader is replaced at the next round with
                            no ttl to wait out; the file names the holder, for people reading it.
    <dir>/health.json       the leader's latest health, replaced atomically (write a temporary file,
                            rename it over): a reader sees the old or the new file, never half of one.
    <dir>/ejections.json    target -> [until, count], merged under flock(<dir>/ejections.lock).
    <dir>/stops.json        backend -> [reason, until], changed under flock(<dir>/stops.lock).
    <dir>/config            the latest config reload announcement, replaced whole (rename).
    <dir>/members/<id>      one file per live worker: [seen, record], replaced whole every round;
                            a worker that died leaves a file nobody renews (ignored, then removed).

The directory is `$XDG_RUNTIME_DIR/aifabric/<port>` (a per-user tmpfs) or `/tmp/aifabric-<uid>/<port>`,
mode 0700, so the workers of one `aifabric serve --port P --workers N` find each other by the port they
share. Readers stat before they read: a round where nothing changed costs one stat per file.

Each gateway process opens its own store after the fork: flock belongs to an open file description,
and one inherited across fork would be held by every worker at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from aifabric.core.paths import runtime_dir
from aifabric.errors import StateStoreError
from aifabric.state.base import Ejection, HealthSnapshot, StateStore

__all__ = ["LocalStore", "default_state_dir"]

_FORGET_MEMBER = 600.0  # seconds a dead worker's member file stays before a reader removes it
_FileKey = tuple[int, int, int]  # inode, mtime_ns, size: a renamed-in file always has a new inode


def default_state_dir(port: int) -> Path:
    """Where the workers listening on `port` keep their shared state (in the runtime directory, beside
    the local embeddings servers' sockets)."""
    return runtime_dir() / str(port)


class LocalStore(StateStore):
    kind = "local"

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            owner = self.directory.stat().st_uid
        except OSError as exc:
            raise StateStoreError(f"cannot use {self.directory} for the workers' state: {exc}") from exc
        if owner != os.getuid():
            # Another user could feed this gateway false health: refuse rather than trust it.
            raise StateStoreError(
                f"{self.directory} belongs to another user (uid {owner}); remove it or set XDG_RUNTIME_DIR"
            )
        self._lease_fd: int | None = None
        self._lease_holder: str | None = None
        self._version = 0
        self._health_key: _FileKey | None = None
        self._health: HealthSnapshot | None = None
        self._ejections_key: _FileKey | None = None
        self._ejections: dict[str, Ejection] = {}

    def describe(self) -> str:
        return f"local ({self.directory})"

    # -- lease -----------------------------------------------------------------------------------

    async def try_lead(self, holder: str, ttl: float) -> bool:
        # `ttl` is not needed here: the kernel releases the lock of a process that is gone.
        if self._lease_fd is not None:
            return self._lease_holder == holder
        with _translated("take the probe lease"):
            fd = os.open(self.directory / "lease", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder}\n".encode(), 0)
        self._lease_fd, self._lease_holder = fd, holder
        return True

    async def resign(self, holder: str) -> None:
        if self._lease_fd is not None and self._lease_holder == holder:
            self._release()

    def _release(self) -> None:
        fd, self._lease_fd, self._lease_holder = self._lease_fd, None, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- health ----------------------------------------------------------------------------------

    async def publish_health(self, holder: str, backends: Mapping[str, dict[str, Any]], now: float) -> bool:
        if self._lease_fd is None or self._lease_holder != holder:
            return False
        self._version += 1
        body = {
            "version": f"{os.getpid()}-{time.time_ns()}-{self._version}",
            "published_at": now,
            "holder": holder,
            "backends": dict(backends),
        }
        with _translated("publish health"):
            self._write("health.json", orjson.dumps(body))
        return True

    async def read_health(self) -> HealthSnapshot | None:
        path = self.directory / "health.json"
        with _translated("read health"):
            key = _file_key(path)
            if key is None or key == self._health_key:
                return self._health if key is not None else None
            data = _load(path)
        try:
            snapshot = HealthSnapshot(
                str(data["version"]), float(data["published_at"]), str(data["holder"]), dict(data["backends"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateStoreError(f"unreadable {path}: {exc}") from exc
        self._health_key, self._health = key, snapshot
        return snapshot

    # -- ejections -------------------------------------------------------------------------------

    async def publish_ejection(self, target: str, until: float, count: int) -> None:
        path = self.directory / "ejections.json"
        with _translated("publish an ejection"), self._locked("ejections.lock"):
            current = _parse_ejections(_load(path) if path.exists() else {})
            now = time.time()
            merged = {k: e for k, e in current.items() if e.until > now}
            previous = merged.get(target)
            if previous is not None and previous.until >= until:
                return
            merged[target] = Ejection(until, count)
            self._write("ejections.json", orjson.dumps({k: [e.until, e.count] for k, e in merged.items()}))

    async def read_ejections(self, now: float) -> dict[str, Ejection]:
        path = self.directory / "ejections.json"
        with _translated("read ejections"):
            key = _file_key(path)
            if key is None:
                self._ejections_key, self._ejections = None, {}
            elif key != self._ejections_key:
                self._ejections_key, self._ejections = key, _parse_ejections(_load(path))
        return {k: e for k, e in self._ejections.items() if e.until > now}

    # -- stops -----------------------------------------------------------------------------------

    async def publish_stop(self, backend: str, why: str, until: float) -> None:
        self._update_stops(lambda stops: stops.__setitem__(backend, [why, until]), "publish a stop")

    async def clear_stop(self, backend: str) -> None:
        self._update_stops(lambda stops: stops.pop(backend, None), "clear a stop")

    async def read_stops(self, now: float) -> dict[str, str]:
        path = self.directory / "stops.json"
        with _translated("read stops"):
            data = _load(path) if path.exists() else {}
        return {name: why for name, (why, until) in _parse_stops(data).items() if until > now}

    def _update_stops(self, change: Callable[[dict[str, Any]], object], doing: str) -> None:
        path = self.directory / "stops.json"
        with _translated(doing), self._locked("stops.lock"):
            now = time.time()
            current = _parse_stops(_load(path) if path.exists() else {})
            stops: dict[str, Any] = {n: [why, until] for n, (why, until) in current.items() if until > now}
            change(stops)
            self._write("stops.json", orjson.dumps(stops))

    # -- config reloads ----------------------------------------------------------------------------

    async def publish_config(self, announcement: str) -> None:
        with _translated("announce a config reload"):
            self._write("config", announcement.encode())

    async def read_config(self) -> str | None:
        with _translated("read the config announcement"):
            try:
                return (self.directory / "config").read_bytes().decode(errors="replace")
            except FileNotFoundError:
                return None

    # -- members ---------------------------------------------------------------------------------

    def _member_path(self, holder: str) -> Path:
        return self.directory / "members" / hashlib.sha256(holder.encode()).hexdigest()[:16]

    async def publish_member(self, holder: str, record: str, now: float) -> None:
        with _translated("say this worker is alive"):
            (self.directory / "members").mkdir(mode=0o700, exist_ok=True)
            self._write(f"members/{self._member_path(holder).name}", orjson.dumps([now, holder, record]))

    async def read_members(self, since: float) -> dict[str, str]:
        out: dict[str, str] = {}
        with _translated("read the live workers"):
            try:
                paths = list((self.directory / "members").iterdir())
            except FileNotFoundError:
                return out
            for path in paths:
                if path.name.startswith("."):
                    continue
                try:
                    seen, holder, record = orjson.loads(path.read_bytes())
                except (FileNotFoundError, orjson.JSONDecodeError, ValueError, TypeError):
                    continue
                if float(seen) >= since:
                    out[str(holder)] = str(record)
                elif float(seen) < since - _FORGET_MEMBER:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()  # a worker long gone (an earlier run on this port)
        return out

    async def leave(self, holder: str) -> None:
        with _translated("leave the workers"), contextlib.suppress(FileNotFoundError):
            self._member_path(holder).unlink()

    # -- files -----------------------------------------------------------------------------------

    async def close(self) -> None:
        self._release()

    def _write(self, name: str, data: bytes) -> None:
        target = self.directory / name
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        # Held for one read-merge-write of a small file: a blocking lock never waits long.
        fd = os.open(self.directory / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _file_key(path: Path) -> _FileKey | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _load(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise StateStoreError(f"unreadable {path}: {exc}") from exc


def _parse_ejections(data: Any) -> dict[str, Ejection]:
    out: dict[str, Ejection] = {}
    if not isinstance(data, dict):
        return out
    for key, value in data.items():
        with contextlib.suppress(TypeError, ValueError, IndexError):
            out[str(key)] = Ejection(float(value[0]), int(value[1]))
    return out


def _parse_stops(data: Any) -> dict[str, tuple[str, float]]:
    out: dict[str, tuple[str, float]] = {}
    if not isinstance(data, dict):
        return out
    for key, value in data.items():
        with contextlib.suppress(TypeError, ValueError, IndexError):
            out[str(key)] = (str(value[0]), float(value[1]))
    return out


@contextlib.contextmanager
def _translated(doing: str) -> Iterator[None]:
    """OSError (a full disk, a directory removed under us) as the one error callers handle."""
    try:
        yield
    except OSError as exc:
        raise StateStoreError(f"workers' state: cannot {doing}: {exc}") from exc
