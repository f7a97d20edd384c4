"""`aifabric doctor`: the runbook's "LiteLLM won't start" checklist, run as code.

    report = diagnose("fabric.yaml")          # or diagnose(None): the embedded default
    report.exit_code                          # 0: no FAIL, 1: something will stop the gateway

Each check ends PASS, WARN or FAIL (SKIP when it cannot run, e.g. while the fabric file does not load)
and, unless it passed, says the fix in words. What the runbook did by hand, and the check that does it:

    YAML syntax error           "fabric file": every problem with file:line and what to write instead
    missing secrets in .env     "secrets" (every ${VAR} resolves, and from where) and "env file"
                                (exists, not readable by others, has KEY=VALUE lines)
    port conflict (ss -tlnp)    "listen port": free, or the pid and command line holding it
    is the host online (ping)   "dns NAME": the host name resolves; nothing is sent to the host
    model not loaded            "model", "engine", "memory": local weights installed, engine imports,
                                enough free memory for them
    (slow gateway)              "compiled request path": the hot modules run compiled (mypyc), none
                                older than its source

Quiet on the network by design: a host is looked up in DNS, never contacted, unless `probe=True`,
which runs the health checker's probes (the same as `aifabric health`) against every backend.
Values of secrets are never read into the report: only names, paths and file modes.

One module per check (fabric_file, env_file, ports, state_store, dns, local, log_dir, native, probes); each
takes the loaded config (whose `loaded.key_lines` says where each key is written) and returns Checks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from aifabric.ops.doctor.dns import dns_checks, resolve
from aifabric.ops.doctor.env_file import env_file_checks
from aifabric.ops.doctor.fabric_file import load
from aifabric.ops.doctor.local import engine_check, local_checks, memory_check
from aifabric.ops.doctor.log_dir import log_dir_check, log_dir_checks
from aifabric.ops.doctor.native import native_check
from aifabric.ops.doctor.ports import port_check, port_checks
from aifabric.ops.doctor.probes import probe_checks
from aifabric.ops.doctor.report import Check, DoctorReport, Verdict
from aifabric.ops.doctor.state_store import state_checks

__all__ = [
    "Check",
    "DoctorReport",
    "Verdict",
    "diagnose",
    "engine_check",
    "log_dir_check",
    "memory_check",
    "port_check",
    "resolve",
]


def diagnose(
    path: str | os.PathLike[str] | None,
    *,
    environ: Mapping[str, str] | None = None,
    probe: bool = False,
    probe_timeout: float | None = None,
    dns_timeout: float = 5.0,
    available_memory: int | None = None,
) -> DoctorReport:
    """Run every check on the fabric file at `path` (None: the embedded default). Never raises for a
    failed check. `available_memory` (bytes) defaults to MemAvailable of /proc/meminfo."""
    if path is None:
        from aifabric.config.defaults import default_config_path

        path = default_config_path()
    source = str(path)
    environ = os.environ if environ is None else environ
    report = DoctorReport(source)
    config = load(source, environ, report)
    if config is None:
        report.checks.append(
            Check("other checks", Verdict.SKIP, "not run: they need a fabric file that loads")
        )
        return report
    report.checks.extend(env_file_checks(config))
    report.checks.extend(port_checks(config))
    report.checks.extend(state_checks(config))
    report.checks.extend(dns_checks(config, dns_timeout))
    report.checks.extend(local_checks(config, available_memory))
    report.checks.extend(log_dir_checks(config))
    report.checks.append(native_check())
    if probe:
        report.checks.extend(probe_checks(config, probe_timeout))
    else:
        report.checks.append(
            Check(
                "backend probes",
                Verdict.SKIP,
                "not run: nothing is sent to the backends without --probe (DNS lookups only)",
            )
        )
    return report
