"""`aifabric ...` as an operator runs it: another process, its exit status and output as a shell sees them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

__all__ = ["aifabric"]


def aifabric(
    *argv: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m aifabric ARGV` to its end; `env` is added to this process's environment. Stdin is
    closed, and a command that wrongly starts serving (or waits) is caught by the timeout."""
    return subprocess.run(
        [sys.executable, "-m", "aifabric", *argv],
        env=None if env is None else {**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
