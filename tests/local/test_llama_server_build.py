"""scripts/llama-server.sh, as `make` runs it once the binary is built: from the cache, at once.

The build itself (7 minutes on 2 cores) runs once per machine, in `make install-dev` before any test;
what is checked here is what every later `make up` relies on: the script answers from the cache
without building, several at once agree, and the binary it names is the one linked into the venv
and runs on this CPU.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "llama-server.sh"


def run_script() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), sys.executable], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_built_llama_server_is_answered_from_the_cache_by_concurrent_runs() -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run_script(), range(4)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert all("building" not in r.stderr for r in results)  # nothing rebuilt
    dirs = {r.stdout.strip() for r in results}
    assert len(dirs) == 1
    built = Path(dirs.pop())
    assert built.name.startswith("llama.cpp-0.3.36-")  # keyed by the source version (and the flags)
    linked = Path(sys.executable).parent / "llama-server"
    assert linked.resolve() == (built / "llama-server").resolve()
    version = subprocess.run(
        [str(linked), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert version.returncode == 0 and "version:" in version.stderr  # runs here: portable CPU flags
