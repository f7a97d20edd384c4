"""The checks of the local backends `aifabric up` runs: "model of BACKEND" (weights installed), "engine
ENGINE" (it imports, in a fresh interpreter; llama-server: the binary runs), "memory" (enough free
memory for the weights, each llama.cpp process's KV cache, and a process each)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from aifabric.config.schema import FabricConfig
from aifabric.errors import LocalBackendError
from aifabric.local.gguf import GgufError, kv_cache_bytes_per_token
from aifabric.ops.doctor.report import Check, Verdict

__all__ = ["engine_check", "local_checks", "memory_check", "quantizer_check"]


# What each engine needs to import, checked in a fresh interpreter: a broken native build (llama.cpp
# built for another CPU) may crash the process that imports it, and must not crash the doctor.
_ENGINE_IMPORTS = {
    "llama-cpp-python": (
        "import llama_cpp, llama_cpp.server.app",
        'pip install "$(scripts/llama-wheel.sh)[server]" (a build with portable CPU flags)',
    ),
    "aifabric-embed": ("import onnxruntime, tokenizers, numpy", "pip install 'aifabric[local]'"),
}
_PROCESS_OVERHEAD = 200 * 1024 * 1024  # a Python engine process beyond its weights (measured ~150 MB)


_REQUANTIZED_GROWTH = 8.5 / 4.5  # Q8_0's bits a weight over Q4_0's, the smallest source it re-encodes


def engine_check(engine: str, python: Sequence[str] = (sys.executable,), timeout: float = 120.0) -> Check:
    """Whether the interpreter (`python`: its command, the venv's by default) imports what `engine` needs;
    for llama-server, whether the binary `aifabric up` would start runs (`--version`)."""
    name = f"engine {engine}"
    if engine == "llama-server":
        from aifabric.local.launch import LLAMA_SERVER_FIX, find_llama_server

        binary = find_llama_server()
        if binary is None:
            where = Path(sys.executable).parent  # where find_llama_server looked
            return Check(
                name, Verdict.FAIL, f"llama-server is neither in {where} nor on PATH", LLAMA_SERVER_FIX
            )
        shown = str(binary)
        return _ran(
            name,
            [shown, "--version"],
            LLAMA_SERVER_FIX,
            timeout,
            ok=f"{shown} runs",
            crashed=f"{shown} crashed",
            failed=f"{shown} --version failed",
        )
    statement, fix = _ENGINE_IMPORTS[engine]
    shown = python[0]
    return _ran(
        name,
        [*python, "-c", statement],
        fix,
        timeout,
        ok=f"imports in {shown}",
        crashed="importing it crashed the interpreter",
        failed=f"does not import in {shown}",
    )


def quantizer_check(timeout: float = 60.0) -> Check:
    """`local.requantize` needs llama.cpp's llama-quantize (beside llama-server): whether it runs."""
    from aifabric.local.launch import find_llama_server
    from aifabric.local.requantize import find_quantizer

    fix = "run make up (it builds llama-quantize beside llama-server), or remove requantize from local:"
    found = find_quantizer(find_llama_server())
    if found is None:
        return Check("llama-quantize", Verdict.FAIL, "not beside llama-server, in the venv, nor on PATH", fix)
    # It prints its usage and exits 1 without arguments: what it says shows that it runs.
    try:
        proc = subprocess.run([str(found)], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("llama-quantize", Verdict.FAIL, f"{found} does not run: {exc}", fix)
    if proc.returncode < 0 or "usage" not in (proc.stdout + proc.stderr):
        return Check("llama-quantize", Verdict.FAIL, f"{found} does not run (exit {proc.returncode})", fix)
    return Check("llama-quantize", Verdict.PASS, f"{found} runs (local.requantize re-encodes with it)")


def _ran(
    name: str, argv: list[str], fix: str, timeout: float, *, ok: str, crashed: str, failed: str
) -> Check:
    """Run `argv` (an import, a --version): PASS when it exits 0; killed by a signal means a native
    build for another CPU."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Check(name, Verdict.FAIL, f"{argv[0]} took over {timeout:g} s", fix)
    except OSError as exc:
        return Check(name, Verdict.FAIL, f"cannot run {argv[0]}: {exc.strerror}", fix)
    if proc.returncode == 0:
        return Check(name, Verdict.PASS, ok)
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        return Check(
            name,
            Verdict.FAIL,
            f"{crashed} ({sig}): a native build that does not fit this CPU",
            f"reinstall it with portable CPU flags: {fix}",
        )
    last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
    return Check(name, Verdict.FAIL, f"{failed}: {last}", fix)


def memory_check(needed: int, available: int | None) -> Check:
    """Free memory against what the local models need (weights, KV caches, a process each): WARN if short."""
    mib = 1024 * 1024
    if available is None:
        return Check("memory", Verdict.SKIP, "MemAvailable is not readable from /proc/meminfo")
    summary = f"{available / mib:,.0f} MiB available, local models need about {needed / mib:,.0f} MiB"
    if available >= needed:
        return Check("memory", Verdict.PASS, summary)
    return Check(
        "memory",
        Verdict.WARN,
        summary + ": they may be killed by the OOM killer, or swap and answer slowly",
        "stop other processes, give the machine more memory, or use smaller models (fewer local backends)",
    )


def _available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def local_checks(config: FabricConfig, available: int | None) -> list[Check]:
    from aifabric.local.launch import local_backends
    from aifabric.local.models import resolve_model

    backends = local_backends(config)
    if not backends:
        return []
    lines = config.loaded.key_lines
    checks: list[Check] = []
    weights: dict[Path, int] = {}  # one file mmapped by several processes is in memory once
    kv_caches = 0
    for backend in backends:
        local = backend.local
        assert local is not None
        key = f"backends.{backend.name}.local.model"
        where = f" ({config.source}:{lines[key]})" if key in lines else ""
        try:
            model = resolve_model(local.model, local.engine)
        except LocalBackendError as exc:
            checks.append(
                Check(
                    f"model of {backend.name}",
                    Verdict.FAIL,
                    f"{exc}{where}",
                    f"install the package named above, or point {key} at an existing file",
                )
            )
            continue
        size = model.path.stat().st_size
        detail = f"{model.path} ({size / 1024 / 1024:,.0f} MiB)"
        if local.requantize is not None:
            # Served re-encoded (local.requantize): 8.5 bits a weight, from as few as 4.5; what is
            # 8-bit already stays as it is, so this bounds the copy from above.
            size = int(size * _REQUANTIZED_GROWTH)
            detail += f", served as {local.requantize.upper()} (at most ~{size / 1024 / 1024:,.0f} MiB)"
        weights[model.path.resolve()] = size
        if local.engine in ("llama-server", "llama-cpp-python") and model.path.suffix == ".gguf":
            # Each process holds its own KV cache: `context` tokens for each of its slots.
            tokens = local.context * ((local.parallel or 1) if local.engine == "llama-server" else 1)
            try:
                cache = kv_cache_bytes_per_token(model.path) * tokens
            except GgufError as exc:
                detail += f"; KV cache not estimated: {exc}"
            else:
                kv_caches += cache
                detail += f", KV cache {cache / 1024 / 1024:,.0f} MiB for {tokens:,} tokens"
        checks.append(Check(f"model of {backend.name}", Verdict.PASS, detail))
    for engine in dict.fromkeys(b.local.engine for b in backends if b.local is not None):
        checks.append(engine_check(engine))
    if any(b.local is not None and b.local.requantize is not None for b in backends):
        checks.append(quantizer_check())
    if weights:
        needed = sum(weights.values()) + kv_caches + _PROCESS_OVERHEAD * len(backends)
        checks.append(memory_check(needed, _available_memory() if available is None else available))
    return checks
