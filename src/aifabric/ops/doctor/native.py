"""Whether the gateway's request path runs compiled, and none of it older than its source
(aifabric.native): an interpreted install works, slower; a stale compiled module runs old code."""

from __future__ import annotations

from aifabric.native import NativeStatus, check
from aifabric.ops.doctor.report import Check, Verdict

__all__ = ["native_check"]

NAME = "compiled request path"


def native_check(status: NativeStatus | None = None) -> Check:
    status = check() if status is None else status
    if status.stale:
        return Check(
            NAME,
            Verdict.FAIL,
            status.summary,
            "run make native (or pip install . again): the gateway would run the code of the last build",
        )
    if status.interpreted:
        return Check(
            NAME,
            Verdict.WARN,
            status.summary,
            "install with a C compiler (make up, or pip install . with gcc present) for the compiled "
            "request path: the same behaviour, less CPU per request",
        )
    return Check(NAME, Verdict.PASS, status.summary)
