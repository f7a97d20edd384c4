"""`required_extras` names real extras of the package, and each extra brings what the runtime imports."""

from __future__ import annotations

import importlib.metadata
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from aifabric.config.extras import Extra, install_hint
from aifabric.errors import StateStoreError
from aifabric.state.redis import require_redis

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# The top-level module the gateway imports when it needs each extra.
IMPORTED = {Extra.REDIS: "redis", Extra.OTEL: "opentelemetry", Extra.POSTGRES: "psycopg"}


def test_every_extra_is_an_optional_dependency_that_brings_the_module_serve_imports() -> None:
    optional = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    providers = importlib.metadata.packages_distributions()
    assert set(IMPORTED) == set(Extra)
    for extra in Extra:
        assert extra.value in optional, f"pyproject.toml has no [{extra}] extra"
        listed = {Requirement(r).name.lower() for r in optional[extra.value]}
        assert listed & {d.lower() for d in providers[IMPORTED[extra]]}, (extra, listed)


def test_serve_names_the_same_extra_when_its_package_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)  # as if not installed
    with pytest.raises(StateStoreError) as raised:
        require_redis()
    assert install_hint(Extra.REDIS) in str(raised.value)
    assert install_hint(Extra.REDIS) == "pip install 'aifabric[redis]'"
