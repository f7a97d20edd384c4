"""A small estate for health tests: fabric configs pointing at fake backends on 127.0.0.1."""

from __future__ import annotations

from aifabric.config.schema import (
    BackendConfig,
    FabricConfig,
    HealthCheckConfig,
    HostConfig,
    RoleConfig,
    TargetConfig,
)

FAST = HealthCheckConfig(interval=0.05, timeout=1.0, healthy_threshold=1, unhealthy_threshold=1)


def estate(
    backends: dict[str, tuple[str, str, str]],
    *,
    roles: dict[str, tuple[str, str]] | None = None,
    asleep_hosts: tuple[str, ...] = (),
    health: HealthCheckConfig = FAST,
) -> FabricConfig:
    """`backends`: name -> (host, kind, url); `roles`: role -> (backend, model id)."""
    hosts = {
        host: HostConfig(name=host, address="127.0.0.1", always_on=host not in asleep_hosts)
        for host, _, _ in backends.values()
    }
    return FabricConfig(
        hosts=hosts,
        backends={
            name: BackendConfig(name=name, kind=kind, url=url, host=host, health=health)  # type: ignore[arg-type]
            for name, (host, kind, url) in backends.items()
        },
        roles={
            role: RoleConfig(name=role, kind="chat", targets=(TargetConfig(backend=b, model=m),))
            for role, (b, m) in (roles or {}).items()
        },
        source="<test>",
    )
