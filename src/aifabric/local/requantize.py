"""A GGUF's weights re-encoded for llama.cpp's batched CPU kernels (`local.requantize: q8_0`).

Why: llama.cpp's CPU backend multiplies a batch of tokens (several requests decoded together, a
prompt) by Q8_0 weights with a tiled matrix kernel, but by Q4_1 weights one dot product per row and
token. The bundled SmolLM2 GGUF is Q4_1: measured here (2 cores, llama-server `--parallel 8`), the
same weights re-encoded as Q8_0 decode 8 concurrent requests 33-41% faster in all and read a long
prompt 50% faster, one request about as fast and 4 concurrent ~7% slower (a step of a few streams is
bound by reading the weights, which Q8_0 makes 1.5x bigger). docs/local.md has the figures.

What: llama.cpp's own `llama-quantize --allow-requantize SRC DST Q8_0`, built beside llama-server by
`scripts/llama-server.sh`. Q8_0 keeps every weight of a 4-bit block with 8 bits and one scale, so the
model is the same but for a rounding far below the 4-bit one (the file grows from 94 to 145 MB). It
takes under a second for SmolLM2 and is done once: the result is cached under
`$XDG_CACHE_HOME/aifabric/models`, keyed by the source file (path, size, modification time), the type
and the llama.cpp build, and written atomically (two `up` at once both write, one file wins whole).
A GGUF already of the asked type is served as it is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from aifabric.config.schema import RequantizeType
from aifabric.errors import LocalBackendError
from aifabric.local.gguf import GgufError, read_metadata

__all__ = ["REQUANTIZE_TYPES", "find_quantizer", "requantized"]

# `local.requantize` -> (llama-quantize's type name, llama.cpp's `general.file_type` of such a file).
# Only 8-bit: re-encoding 4-bit weights in 8 bits loses nothing worth naming; other types would.
REQUANTIZE_TYPES: Final[dict[RequantizeType, tuple[str, int]]] = {"q8_0": ("Q8_0", 7)}

_FILE_TYPE = "general.file_type"


def find_quantizer(server: Path | None) -> Path | None:
    """llama.cpp's `llama-quantize`: beside the llama-server in use (the build `make` made has both),
    beside this interpreter, or on PATH."""
    candidates = []
    if server is not None:
        candidates.append(server.resolve().parent / "llama-quantize")
    candidates.append(Path(sys.executable).parent / "llama-quantize")
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("llama-quantize")
    return Path(found) if found else None


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aifabric" / "models"


def requantized(
    backend: str,
    source: Path,
    kind: RequantizeType,
    quantizer: Path | None,
    *,
    cache: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> Path:
    """The GGUF to serve for `source` with `local.requantize: kind`: `source` itself when it is of
    that type already, else its re-encoded copy (made now when not cached). LocalBackendError, with
    the fix, when it cannot be made."""
    type_name, file_type = REQUANTIZE_TYPES[kind]
    try:
        meta = read_metadata(source, frozenset({_FILE_TYPE}))
    except GgufError as exc:
        raise LocalBackendError(f"backend {backend!r}: {exc}") from None
    if meta.get(_FILE_TYPE) == file_type:
        return source
    if quantizer is None:
        raise LocalBackendError(
            f"backend {backend!r} has requantize: {kind}, but llama.cpp's llama-quantize is neither "
            f"beside llama-server, in {Path(sys.executable).parent} nor on PATH; run: make up (it builds "
            "both), or remove requantize from its local: section"
        )
    stat = source.stat()
    ident = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{type_name}|{quantizer.resolve()}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:12]
    directory = cache or default_cache()
    target = directory / f"{source.stem}.{type_name}-{key}.gguf"
    if target.is_file():
        return target
    if say is not None:
        say(
            f"{backend}: re-encoding {source.name} as {type_name} for batched decoding "
            f"(once; cached in {directory})"
        )
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".requantize-", suffix=".gguf")
    os.close(fd)
    try:
        threads = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        done = subprocess.run(
            [str(quantizer), "--allow-requantize", str(source), tmp, type_name, threads],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            last = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise LocalBackendError(
                f"backend {backend!r}: llama-quantize could not re-encode {source} as {type_name} "
                f"(exit {done.returncode}):\n{last}\nremove requantize from its local: section to serve "
                "the file as it is"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
