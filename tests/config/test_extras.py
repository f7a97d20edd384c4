"""`required_extras` names real extras of the package, and each extra brings what the runtime imports."""

from __future__ import annotations

import importlib.metadata
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from aifabric.config.extras import Extra, install_hint, required_extras
from aifabric.config.load import load_config_text
from aifabric.config.schema import FabricConfig
from aifabric.errors import ConfigError, StateStoreError

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# The top-level module the gateway imports when it needs each extra.
IMPORTED = {Extra.REDIS: "redis", Extra.OTEL: "opentelemetry", Extra.POSTGRES: "psycopg"}
BASE = """\
backends: {b: {kind: vllm, url: "http://127.0.0.1:1/v1"}}
roles: {chat: {kind: chat, targets: [{backend: b, model: m}]}}
"""
NO_LEDGER = 'usage: "off"\n'  # no SQLite file made by the checks


def test_every_extra_is_an_optional_dependency_that_brings_the_module_serve_imports() -> None:
    optional = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    providers = importlib.metadata.packages_distributions()
    assert set(IMPORTED) == set(Extra)
    for extra in Extra:
        assert extra.value in optional, f"pyproject.toml has no [{extra}] extra"
        listed = {Requirement(r).name.lower() for r in optional[extra.value]}
        assert listed & {d.lower() for d in providers[IMPORTED[extra]]}, (extra, listed)


def _serve_checks(config: FabricConfig) -> str:
    """What serving `config` raises at start (the state store, the tracer, the usage ledger), as text."""
    from aifabric.gateway.app import _tracer
    from aifabric.state.factory import check_state
    from aifabric.tenancy.ledger import ledger_opener

    def tracer() -> None:
        made = _tracer(config)
        if made is not None:
            made.shutdown()  # its exporter thread

    messages = []
    for check in (lambda: check_state(config), tracer, ledger_opener(config)):
        try:
            if check is not None:
                check()
        except (StateStoreError, ConfigError) as exc:
            messages.append(str(exc))
    return "\n".join(messages)


@pytest.mark.parametrize(
    ("section", "missing"),
    [
        (NO_LEDGER + "state: redis://127.0.0.1:1/0", ("redis", "redis.asyncio")),
        (
            NO_LEDGER + "tracing: {endpoint: http://127.0.0.1:1}",
            ("opentelemetry", "aifabric.observability.tracing"),
        ),
        ("usage: postgresql://aifabric@127.0.0.1:1/usage", ("psycopg",)),
    ],
)
def test_serve_asks_for_exactly_the_extra_required_extras_names(
    monkeypatch: pytest.MonkeyPatch, section: str, missing: tuple[str, ...]
) -> None:
    """Without its extra's package, serving the file fails with that extra's install hint, and
    `required_extras` (what the image installs) names that extra; with nothing missing, no such error."""
    config = load_config_text(f"{BASE}{section}\n", "f.yaml", environ={})
    (extra,) = required_extras(config)
    assert install_hint(extra) not in _serve_checks(config)
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    assert install_hint(extra) in _serve_checks(config)
    assert required_extras(load_config_text(BASE + NO_LEDGER, "f.yaml", environ={})) == ()
