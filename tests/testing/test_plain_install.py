"""aifabric.testing is an opt-in part of the package: every module imports on a plain install, where
the dev-only packages (the official SDKs, httpx, pytest) are absent."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import textwrap

import aifabric.testing

DEV_ONLY = ("openai", "anthropic", "httpx", "pytest")

# Run in a fresh interpreter: a finder first on sys.meta_path refuses the dev-only packages, as a
# plain install would; then every module of aifabric.testing is imported, and each failure named.
_SCRIPT = textwrap.dedent(
    """
    import importlib, sys, traceback

    BLOCKED = set(sys.argv[1].split(","))

    class Absent:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (blocked: not on a plain install)")
            return None

    sys.meta_path.insert(0, Absent())
    failed = []
    for module in sys.argv[2:]:
        try:
            importlib.import_module(module)
        except Exception:
            failed.append(module + ": " + traceback.format_exc(limit=-2).strip())
    print("\\n".join(failed))
    sys.exit(1 if failed else 0)
    """
)


def import_without(blocked: tuple[str, ...], modules: list[str]) -> subprocess.CompletedProcess[str]:
    """Import `modules` in a fresh interpreter in which the `blocked` packages cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, ",".join(blocked), *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_testing_module_imports_without_dev_only_packages() -> None:
    modules = [f"aifabric.testing.{m.name}" for m in pkgutil.iter_modules(aifabric.testing.__path__)]
    assert "aifabric.testing.gateway" in modules and "aifabric.testing.fake_backend" in modules
    proc = import_without(DEV_ONLY, modules)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_blocker_would_catch_an_eager_import() -> None:
    """The check above can fail: a module that imports openai at import time is reported."""
    proc = import_without(("openai",), ["openai"])
    assert proc.returncode == 1
    assert "blocked: not on a plain install" in proc.stdout
