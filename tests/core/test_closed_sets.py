"""Each closed set of aifabric is defined once; these tests pin its members and that every user of it
agrees with the one definition (a new member added in one place only fails here)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import orjson
import pytest

import aifabric
import aifabric.backends
from aifabric.backends._errors import normalize_error_body
from aifabric.backends.base import BackendAdapter, RequestField, adapter_for
from aifabric.config.schema import (
    BACKEND_KINDS,
    BALANCE_POLICIES,
    LOAD_SIGNAL_KINDS,
    NATIVE_APIS,
    ROLE_KINDS,
    ClientApi,
    RoleConfig,
)
from aifabric.core import (
    OPENAI_ERROR_TYPES,
    BackendState,
    FailureClass,
    Outcome,
    exit_codes,
    openai_error_type,
)
from aifabric.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    ProblemKind,
    Unauthorized,
)
from aifabric.gateway.dialects.messages import ANTHROPIC_ERROR_TYPES
from aifabric.gateway.errors import status_error
from aifabric.routing.balance import POLICIES

SRC = Path(aifabric.__file__).parent


def test_failure_classes() -> None:
    assert {str(f) for f in FailureClass} == {
        "connect",
        "timeout",
        "loading",
        "overloaded",
        "upstream_5xx",
        "model_not_found",
        "client_error",
        "auth",
    }
    assert [f for f in FailureClass if not f.retryable] == [FailureClass.CLIENT_ERROR]


def test_attempt_outcomes_beside_the_failure_classes() -> None:
    """The `outcome` label of aifabric_upstream_attempts_total: a failure class, or one of these."""
    assert {str(o) for o in Outcome} == {"ok", "route_missing"}
    assert not {str(o) for o in Outcome} & {str(f) for f in FailureClass}
    # Nowhere else is an outcome spelled: metrics and tracing read the enum.
    for module in ("observability/metrics.py", "observability/tracing.py", "gateway/forward.py"):
        text = (SRC / module).read_text()
        assert '"route_missing"' not in text and "'route_missing'" not in text, module


def test_config_problem_kinds() -> None:
    """The doctor groups a fabric file's problems by kind: the file itself, or its environment."""
    assert {str(k) for k in ProblemKind} == {"file", "env"}


def test_backend_states() -> None:
    assert {str(s) for s in BackendState} == {"unknown", "loading", "up", "degraded", "down", "asleep"}


def test_backend_kinds_each_have_one_adapter_module() -> None:
    assert BACKEND_KINDS == (
        "vllm",
        "llamacpp",
        "llama-cpp-python",
        "ollama",
        "tei",
        "openai",
        "aifabric-embed",
    )
    modules = {m.name for m in pkgutil.iter_modules(aifabric.backends.__path__) if not m.name.startswith("_")}
    assert modules - {"base"} == {kind.replace("-", "_") for kind in BACKEND_KINDS}
    for kind in BACKEND_KINDS:
        adapter = adapter_for(kind)
        assert isinstance(adapter, BackendAdapter)
        assert adapter.kind == kind
    with pytest.raises(ValueError, match="unknown backend kind 'triton'"):
        adapter_for("triton")


def test_balance_policies_and_role_kinds() -> None:
    assert BALANCE_POLICIES == ("p2c", "least_outstanding", "least_load")
    assert set(POLICIES) == set(BALANCE_POLICIES)
    # Unset: resolved per role by default_balance (least_load where a target reports load, else p2c).
    assert RoleConfig.__dataclass_fields__["balance"].default is None
    assert ROLE_KINDS == ("chat", "embeddings", "completions", "rerank", "transcription")


def test_client_apis_and_what_backends_may_declare() -> None:
    assert [str(a) for a in ClientApi] == [
        "chat",
        "completions",
        "embeddings",
        "responses",
        "input_tokens",
        "messages",
        "count_tokens",
        "rerank",
        "transcription",
    ]
    assert set(NATIVE_APIS) == set(ClientApi) - {ClientApi.CHAT, ClientApi.COMPLETIONS, ClientApi.EMBEDDINGS}
    for kind in BACKEND_KINDS:  # a kind declares only APIs of the one set, and may declare of them
        adapter = adapter_for(kind)
        assert adapter.native_apis <= set(NATIVE_APIS), kind
        assert adapter.translated_streams <= adapter.native_apis, kind
        assert set(adapter.unhonoured) <= adapter.native_apis, kind  # only a native route can ignore


def test_request_fields_a_native_route_may_ignore() -> None:
    assert [str(f) for f in RequestField] == ["text.format", "max_output_tokens"]


def test_anthropic_error_types() -> None:
    assert set(ANTHROPIC_ERROR_TYPES.values()) | {"api_error"} == {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "overloaded_error",
        "timeout_error",
        "api_error",
    }


def test_load_signal_kinds_are_the_kinds_whose_probe_reads_load() -> None:
    """One definition: the kinds that default to least_load are exactly those probing a load endpoint."""
    reading = {k for k in BACKEND_KINDS if {"/metrics", "/slots"} & set(adapter_for(k).probe_paths)}
    assert reading == LOAD_SIGNAL_KINDS == {"vllm", "llamacpp"}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 413, 422, 429, 431, 500, 502, 503])
def test_one_error_type_per_status_for_gateway_and_backends(status: int) -> None:
    """The listener's own errors and a backend's error without a usable `type` get the same word."""
    expected = OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    assert openai_error_type(status) == expected
    gateway = orjson.loads(status_error(status, "x").body)["error"]["type"]
    backend = normalize_error_body(status, b"", FailureClass.UPSTREAM_5XX)["type"]
    assert gateway == backend == expected


def test_404_is_invalid_request_error_as_openai_answers() -> None:
    assert openai_error_type(404) == "invalid_request_error"


@pytest.mark.parametrize(
    "error", [BadRequest, Unauthorized, Forbidden, ModelNotFound, NotFound, MethodNotAllowed, PayloadTooLarge]
)
def test_the_exception_tree_takes_its_types_from_the_table(error: type[ApiError]) -> None:
    """An unknown route is OpenAI's `invalid_request_error` like an unknown model, not `not_found_error`."""
    assert error("x").type == openai_error_type(error.status)


def test_exit_codes() -> None:
    assert (exit_codes.OK, exit_codes.ATTENTION, exit_codes.BROKEN, exit_codes.UNREACHABLE) == (0, 1, 2, 3)
    assert (exit_codes.FAILED, exit_codes.NOT_RUN, exit_codes.USAGE) == (1, 2, 2)
    assert exit_codes.INTERRUPTED == 130


def _module_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        targets += [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    names.add(name.id)
    return names


def test_no_module_defines_its_own_exit_codes_or_error_type_table() -> None:
    """Exit codes live in core.exit_codes, the status -> type table in core.openai_errors, only."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.parent.name in {"core", "testing"}:  # testing imitates other servers' own tables
            continue
        for name in _module_level_names(path):
            if name.startswith("EXIT_") or name in ("_TYPES", "_TYPE_BY_STATUS"):
                offenders.append(f"{path.relative_to(SRC)}: {name}")
    assert offenders == []


def _int_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return True
    return isinstance(node, ast.IfExp) and (_int_literal(node.body) or _int_literal(node.orelse))


def _literal_exit_status(node: ast.AST) -> str | None:
    """What in `node` spells an exit status as a number, or None."""
    if isinstance(node, ast.Return) and node.value is not None and _int_literal(node.value):
        return "return"
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name in ("exit", "_exit", "SystemExit") and node.args and _int_literal(node.args[0]):
        return name
    if name == "CommandError" and len(node.args) > 1 and _int_literal(node.args[1]):
        return name
    if any(k.arg == "exit_code" and _int_literal(k.value) for k in node.keywords):
        return "exit_code="
    return None


def test_commands_name_their_exit_statuses() -> None:
    """cli/ and ops/ say `exit_codes.USAGE`, never `2`: a number returned, raised or exited with is a
    second definition of what it means (every int a function there returns is an exit status)."""
    offenders = []
    for package in ("cli", "ops"):
        for path in sorted((SRC / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                what = _literal_exit_status(node)
                if what is not None:
                    offenders.append(f"{path.relative_to(SRC)}:{getattr(node, 'lineno', '?')}: {what}")
    assert offenders == []


def test_core_imports_nothing_else_of_the_project() -> None:
    for info in pkgutil.iter_modules(importlib.import_module("aifabric.core").__path__):
        tree = ast.parse((SRC / "core" / f"{info.name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aifabric."):
                assert node.module.startswith("aifabric.core"), (info.name, node.module)
