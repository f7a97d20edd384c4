"""The checks "backend NAME" (only with --probe): the health checker's probes, as `aifabric health`."""

from __future__ import annotations

import asyncio

from aifabric.config.schema import FabricConfig
from aifabric.ops.doctor.report import Check, Verdict

__all__ = ["probe_checks"]


def probe_checks(config: FabricConfig, timeout: float | None) -> list[Check]:
    from aifabric.core import exit_codes
    from aifabric.health.checker import probe_backends
    from aifabric.health.report import backend_status

    healths = asyncio.run(probe_backends(config, list(config.backends), timeout))
    checks = []
    for name, health in healths.items():
        status = backend_status(health)
        verdict = {exit_codes.OK: Verdict.PASS, exit_codes.ATTENTION: Verdict.WARN}.get(status, Verdict.FAIL)
        summary = f"{health.state}: {health.reason}"
        fix = ""
        if verdict is Verdict.FAIL:
            fix = (
                "see `aifabric health " + name + "`; start the server, or correct its url in the fabric file"
            )
            if config.backends[name].local is not None:
                verdict, fix = Verdict.WARN, "a local backend: `aifabric up` starts it"
        checks.append(Check(f"backend {name}", verdict, summary, fix, tuple(health.mismatches)))
    return checks
