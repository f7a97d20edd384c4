"""The check "state store": a shared state URL (redis://) has its client package installed."""

from __future__ import annotations

from aifabric.config.extras import Extra, install_hint
from aifabric.config.schema import FabricConfig
from aifabric.ops.doctor.report import Check, Verdict

__all__ = ["state_checks"]


def state_checks(config: FabricConfig) -> list[Check]:
    if config.state == "memory":
        return []
    from aifabric.config.show import redact_url
    from aifabric.errors import StateStoreError
    from aifabric.state import check_state

    shown = redact_url(config.state)
    try:
        check_state(config)
    except StateStoreError as exc:
        return [Check("state store", Verdict.FAIL, f"{shown}: {exc}", install_hint(Extra.REDIS))]
    return [Check("state store", Verdict.PASS, f"{shown}: the redis client is installed (not connected)")]
