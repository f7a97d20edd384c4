"""The cores this process may run on (its CPU affinity, else every core): how many threads a local
engine uses when the fabric file does not say (`local.threads`), for the launcher and for the
embeddings server started without `--threads`."""

from __future__ import annotations

import os

__all__ = ["default_threads"]


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
