"""Which modules of the request path run compiled (mypyc), and whether any is older than its source.

Every request runs through the modules in `COMPILED`: the HTTP server, the forwarder, routing,
admission and rate limits, the metrics. They are plain, fully typed Python (`mypy --strict`), and
setup.py has mypyc turn them into C extensions, which run the same code cheaper per request
(docs/performance.md has the figures). Their `.py` files stay the source of truth; without a C
compiler, or with `AIFABRIC_COMPILE=0`, the package runs them interpreted, only slower.

In a checkout installed in place (`make up`, `make test`) the extensions sit beside their sources,
and Python imports an extension before a `.py` of the same name: a source edited after the build
would not run. `check()` finds such a module so that `doctor`, the gateway's start and the test suite
say so rather than run yesterday's code; `make native` compiles again.

    python src/aifabric/native.py      # their source files, relative to the checkout (setup.py, make)
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COMPILED", "NativeStatus", "check", "is_stale", "sources"]

# The one list of compiled modules (setup.py and the Makefile read it from here).
COMPILED = (
    "aifabric.http.client",
    "aifabric.http.server",
    "aifabric.gateway.admit",
    "aifabric.gateway.app",
    "aifabric.gateway.auth",
    "aifabric.gateway.body",
    "aifabric.gateway.forward",
    "aifabric.gateway.openai_routes",
    "aifabric.gateway.request_ids",
    "aifabric.gateway.stream_usage",
    "aifabric.observability.metrics",
    "aifabric.routing.outlier",
    "aifabric.routing.retry",
    "aifabric.routing.table",
    "aifabric.routing.target",
    "aifabric.tenancy.admission",
    "aifabric.tenancy.budget",
    "aifabric.tenancy.keyring",
    "aifabric.tenancy.ledger.record",
    "aifabric.tenancy.ledger.writer",
    "aifabric.tenancy.pricing",
    "aifabric.tenancy.principal",
    "aifabric.tenancy.ratelimit",
    "aifabric.tenancy.tokens",
)

_SRC = Path(__file__).resolve().parent.parent  # src/, where `aifabric/` is


def sources(root: Path = _SRC) -> list[Path]:
    """The source file of each compiled module under `root` (the directory that holds `aifabric/`)."""
    return [root.joinpath(*name.split(".")).with_suffix(".py") for name in COMPILED]


@dataclass(frozen=True)
class NativeStatus:
    compiled: tuple[str, ...]  # modules that run as extensions
    interpreted: tuple[str, ...]  # modules that run from their .py
    stale: tuple[str, ...]  # compiled, but their .py was changed after the build (run `make native`)

    @property
    def summary(self) -> str:
        if self.stale:
            return (
                f"{len(self.stale)} compiled module(s) older than their source "
                f"({', '.join(self.stale)}): run `make native`"
            )
        if not self.interpreted:
            return f"request path compiled ({len(self.compiled)} modules, mypyc)"
        if not self.compiled:
            return "request path interpreted (installed without a C compiler, or with AIFABRIC_COMPILE=0)"
        return f"request path partly compiled: {', '.join(self.interpreted)} interpreted"


def check() -> NativeStatus:
    """Where each module of `COMPILED` is loaded from (without importing it), and which are stale."""
    compiled: list[str] = []
    interpreted: list[str] = []
    stale: list[str] = []
    for name in COMPILED:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        if origin is None or origin.suffix == ".py":
            interpreted.append(name)
            continue
        compiled.append(name)
        if is_stale(name, origin):
            stale.append(name)
    return NativeStatus(tuple(compiled), tuple(interpreted), tuple(stale))


def is_stale(name: str, extension: Path) -> bool:
    """Whether the source beside `extension` (module `name` compiled) was changed after the build.

    Each module's extension is a small shim, copied with its old time when only the code changed; the
    code is in one shared library beside `aifabric/` (`<hash>__mypyc.<suffix>`), linked each build."""
    root = extension.parents[name.count(".")]
    built = max((p.stat().st_mtime for p in root.glob("*__mypyc.*")), default=0.0)
    source = extension.parent / (name.rpartition(".")[2] + ".py")
    return source.exists() and source.stat().st_mtime > max(extension.stat().st_mtime, built)


if __name__ == "__main__":  # no aifabric import: setup.py and make run it before anything is installed
    print("\n".join(str(path.relative_to(_SRC.parent)) for path in sources()))
