"""Targets for policy tests: real TargetState objects over real BackendHealth, no sockets."""

from __future__ import annotations

from collections.abc import Callable

from aifabric.config.schema import BackendConfig
from aifabric.core import BackendHealth, BackendState
from aifabric.routing.outlier import OutlierDetector
from aifabric.routing.target import TargetState

MakeTarget = Callable[..., TargetState]


def target_factory() -> MakeTarget:
    healths: dict[str, BackendHealth] = {}

    def make(
        backend: str,
        *,
        role: str = "chat-fast",
        model: str = "m",
        weight: float = 1.0,
        state: BackendState = BackendState.UP,
        kind: str = "vllm",
        served: tuple[str, ...] = (),
        outstanding: int = 0,
        latency: float = 0.0,
        max_concurrency: int | None = None,
    ) -> TargetState:
        health = healths.setdefault(backend, BackendHealth(backend))
        health.state = state
        if served:
            health.served_models = served
        cfg = BackendConfig(
            name=backend,
            kind=kind,  # type: ignore[arg-type]
            url=f"http://127.0.0.1:9/{backend}/v1",
            max_concurrency=max_concurrency,
        )
        t = TargetState(
            role=role,
            backend=cfg,
            model=model,
            health=health,
            detector=OutlierDetector(consecutive_failures=1, base_ejection=10.0),
            weight=weight,
        )
        t.outstanding = outstanding
        t.ewma_latency = latency
        return t

    return make
