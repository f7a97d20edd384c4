"""What the command line of `aifabric serve` / `aifabric up` sets over the fabric file, in one place.

    overrides = Overrides(access_log=True, workers=2)
    config = overrides.apply(load_config(path))     # at start
    reload_from_file(gateway, path, adapt=overrides.apply)   # on every reload: SIGHUP, HTTP, watch

Applied to the configuration a command starts with AND to every configuration a reload reads, so a
reload of an unchanged file neither drops them (`serve --access-log` keeps logging) nor reports them as
changes (`workers: 2 -> 1`). `workers` is always the number of processes running: a reload cannot fork
or stop workers, and the gateway reads it to know its share of limits and that its workers share state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from aifabric.config.schema import FabricConfig

__all__ = ["Overrides"]


@dataclass(frozen=True)
class Overrides:
    access_log: bool = False  # --access-log: on whatever the file says (the flag cannot turn it off)
    workers: int | None = None  # the worker processes running (serve --workers, else the file's at start)
    local_port_base: int | None = None  # up --local-port-base: the local backends' ports

    def apply(self, config: FabricConfig) -> FabricConfig:
        """`config` with the command line's settings over it (may raise ConfigError)."""
        gateway = config.gateway
        if self.access_log and not gateway.access_log:
            gateway = dataclasses.replace(gateway, access_log=True)
        if self.workers is not None and gateway.workers != self.workers:
            gateway = dataclasses.replace(gateway, workers=self.workers)
        if gateway is not config.gateway:
            config = dataclasses.replace(config, gateway=gateway)
        if self.local_port_base is not None:
            from aifabric.local.launch import with_local_ports

            config = with_local_ports(config, self.local_port_base)
        return config
