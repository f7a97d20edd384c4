"""The connection cap the process's open-files limit allows.

Each client connection is one descriptor, and one that is being forwarded holds a second (its upstream
connection, pooled); the process also needs some for itself (listening sockets, epoll, log and state
files, probes). A `gateway.max_connections` above what the descriptors allow is no cap at all: the crowd
runs the process out of descriptors first, `accept` fails with EMFILE, and a normal request is reset
instead of getting the cap's 503. So at start the soft limit is raised to the hard one (as most servers
do; systemd's default soft limit is 1,024), and the cap is lowered to half of what remains after a
reserve: every capped connection can then forward at once.
"""

from __future__ import annotations

import logging
import resource

__all__ = ["RESERVED_FILES", "connection_cap", "raise_open_files_limit"]

log = logging.getLogger("aifabric.http")

RESERVED_FILES = 64  # descriptors kept for the process itself, beyond two per capped connection


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (when allowed); the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # e.g. above the kernel's nr_open: keep the soft limit
            pass
    return soft


def connection_cap(configured: int, open_files: int | None = None) -> int:
    """`configured` (gateway.max_connections), lowered to what `open_files` descriptors allow (the raised
    soft limit when not given): logged at INFO when lower, at WARNING when under half of it."""
    limit = raise_open_files_limit() if open_files is None else open_files
    if limit == resource.RLIM_INFINITY:
        return configured
    allowed = max(1, (limit - RESERVED_FILES) // 2)
    if allowed >= configured:
        return configured
    log.log(
        logging.WARNING if allowed < configured / 2 else logging.INFO,
        "gateway.max_connections is %d, but the open-files limit (%d) allows %d connections (two "
        "descriptors each: the client's and its upstream connection, %d kept for the process): the "
        "cap is %d; raise the limit (ulimit -n, LimitNOFILE=) for more",
        configured,
        limit,
        allowed,
        RESERVED_FILES,
        allowed,
    )
    return allowed
