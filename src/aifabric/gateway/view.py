"""What the operator routes read of the running gateway: a small interface instead of the `Gateway`.

`OpsRoutes` and `AdminRoutes` take a `GatewayView` (the `Gateway` is one), so they do not import
`gateway.app` and the app does not import back into itself through them; a test can hand them a
stand-in. Each member is read on every request, never cached: reload swaps the table, config and auth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aifabric.config.schema import FabricConfig
from aifabric.gateway.auth import Authenticator
from aifabric.gateway.operator_access import OperatorAccess
from aifabric.observability.merged import SharedMetrics
from aifabric.observability.metrics import GatewayMetrics
from aifabric.routing.table import RoutingTable
from aifabric.tenancy.budget import BudgetTracker
from aifabric.tenancy.ledger import Ledger

__all__ = ["GatewayView"]


class GatewayView(Protocol):
    @property
    def config(self) -> FabricConfig: ...

    @property
    def table(self) -> RoutingTable: ...

    @property
    def auth(self) -> Authenticator: ...

    @property
    def operator(self) -> OperatorAccess: ...

    @property
    def metrics(self) -> GatewayMetrics: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def ledger(self) -> Ledger | None: ...

    @property
    def budgets(self) -> BudgetTracker: ...

    @property
    def shared_metrics(self) -> SharedMetrics | None: ...

    def exposition(self, open_fds: bool = False) -> str:
        """This process's own Prometheus exposition."""
        ...

    def tenancy_view(self) -> dict[str, object]:
        """Where keys and rate-limit counters live, and whether they can be reached."""
        ...
