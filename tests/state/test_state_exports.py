"""The public names of aifabric.state: pinned, so a rename is a deliberate change."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

EXPORTS = {
    "aifabric.state": {
        "Ejection",
        "HealthSnapshot",
        "LocalStore",
        "MemoryStore",
        "RedisStore",
        "StateStore",
        "StateSync",
        "check_state",
        "default_state_dir",
        "open_response_store",
        "open_store",
        "open_sync",
    },
    "aifabric.state.base": {"Ejection", "HealthSnapshot", "StateStore"},
    "aifabric.state.snapshot": {"apply_health_record", "health_record", "to_epoch", "to_local"},
    "aifabric.state.sync": {"DEFAULT_INTERVAL", "StateSync", "new_holder_id"},
    "aifabric.state.factory": {"check_state", "open_response_store", "open_store", "open_sync"},
    "aifabric.state.responses": {
        "DEFAULT_MAX_BYTES",
        "DEFAULT_MAX_ENTRIES",
        "DEFAULT_TTL",
        "FileResponseStore",
        "MemoryResponseStore",
        "RedisResponseStore",
        "ResponseStore",
    },
    "aifabric.state.local": {"LocalStore", "default_state_dir"},
    "aifabric.state.memory": {"MemoryStore"},
    "aifabric.state.redis": {"RedisStore", "require_redis", "split_state_url"},
}


@pytest.mark.parametrize("module", sorted(EXPORTS))
def test_exported_names(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == EXPORTS[module]
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} is exported but missing"


def test_the_gateway_runs_without_the_redis_client_installed() -> None:
    """`state: memory` users need not install redis: nothing imports it until a redis:// state asks."""
    code = (
        "import sys; sys.modules['redis'] = None\n"  # as if it were not installed
        "import aifabric.state, aifabric.gateway.app, aifabric.cli.serve\n"
        "from aifabric.config.schema import FabricConfig\n"
        "aifabric.state.check_state(FabricConfig())\n"
        "print('ok')"
    )
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
