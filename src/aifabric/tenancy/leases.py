"""A key's requests in flight, counted across the workers of one `aifabric serve --workers N`.

`keys create --concurrency C` holds for the whole gateway, not C per worker: each request of such a
key takes one of C slots, a file lock on `<state dir>/conc-<key digest>-<slot>.lock`, and gives it
back when it ends. The kernel's locks make this exact across the workers and crash-safe (a killed
worker's locks are released with its process), and cheap: one non-blocking `flock` per request of a
key with a concurrency limit (each worker keeps its slot files open), nothing for the others.

Replicas on Redis still split a key's concurrency between them (each its share, see
`gateway.app`): only the workers of one machine share these locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path

__all__ = ["FileLeases"]


class FileLeases:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fds: dict[tuple[str, int], int] = {}  # (key, slot) -> this process's open slot file
        self._held: set[tuple[str, int]] = set()
        self._digests: dict[str, str] = {}

    def acquire(self, name: str, limit: int) -> int | None:
        """A free slot of the `limit` of key `name` (now held by this process), or None when all are
        taken by requests in flight in any worker. OSError when the state directory is unusable."""
        for slot in range(limit):
            ident = (name, slot)
            if ident in self._held:
                continue  # a lock this process holds would be granted to it again
            fd = self._fds.get(ident)
            if fd is None:
                fd = self._fds[ident] = self._open(self._path(name, slot))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            self._held.add(ident)
            return slot
        return None

    def release(self, name: str, slot: int) -> None:
        ident = (name, slot)
        if ident in self._held:
            self._held.discard(ident)
            fd = self._fds.get(ident)
            if fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        self._held.clear()

    def _open(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:  # the state directory was removed under the running gateway
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def _path(self, name: str, slot: int) -> Path:
        digest = self._digests.get(name)
        if digest is None:  # a key's name may hold any character: the file is named by a digest
            digest = self._digests[name] = hashlib.sha256(name.encode()).hexdigest()[:16]
        return self.directory / f"conc-{digest}-{slot}.lock"
