"""The public names other modules build on: pinned, so a rename is a deliberate change."""

from __future__ import annotations

import importlib

import pytest

EXPORTS = {
    "aifabric.routing.outlier": {"OutlierDetector", "OutlierState"},
    "aifabric.routing.retry": {"Deadline", "backoff", "parse_retry_after", "retry_delay"},
    "aifabric.routing.target": {"EWMA_ALPHA", "AttemptGuard", "TargetState"},
    "aifabric.routing.balance": {
        "POLICIES",
        "Policy",
        "least_outstanding",
        "only_loading",
        "order_candidates",
        "order_plan",
        "p2c_latency",
        "split_tiers",
    },
    "aifabric.core": {
        "OPENAI_ERROR_TYPES",
        "ROUTABLE",
        "BackendHealth",
        "BackendState",
        "Dormancy",
        "FailureClass",
        "Outcome",
        "ProbeResult",
        "Transition",
        "openai_error_type",
    },
    "aifabric.health.checker": {"HealthChecker", "configured_models", "probe_backends", "probe_interval"},
    "aifabric.health.report": {
        "dormancy",
        "exit_status",
        "health_view",
        "TargetView",
        "render_table",
    },
    "aifabric.backends.base": {
        "BackendAdapter",
        "ProbeContext",
        "ProbeFailed",
        "ProbeHttp",
        "RequestField",
        "adapter_for",
        "check_models",
        "closest_model",
        "model_ids",
        "origin_of",
        "unix_routes",
    },
}


@pytest.mark.parametrize("module_name", sorted(EXPORTS))
def test_exported_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert set(module.__all__) == EXPORTS[module_name]
    for name in module.__all__:
        assert hasattr(module, name), name
