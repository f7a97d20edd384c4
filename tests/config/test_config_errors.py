"""Every mistake in a fabric file is reported with the file, the line, and what to write instead.

Most mistakes are one row of CASES: the small valid fabric (config_support.BASE) broken one way, and the
one problem it must produce: where (the line of a snippet), what (the message), the fix, and its kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from config_support import BASE, Problems, line_of

from aifabric.errors import ConfigProblem, ProblemKind


class Whole(str):
    """An expected message or fix that must match exactly (a plain str need only be contained)."""

    __slots__ = ()


@dataclass(frozen=True)
class Case:
    id: str
    text: str  # the broken fabric file
    line: int | None  # the problem's line (None: not asserted)
    message: str
    fix: str
    kind: ProblemKind = ProblemKind.FILE
    environ: tuple[tuple[str, str], ...] = ()


def case(
    id: str,
    text: str,
    at: str | None,
    message: str,
    fix: str,
    *,
    below: int = 0,
    kind: ProblemKind = ProblemKind.FILE,
    environ: dict[str, str] | None = None,
) -> Case:
    """A row: `at` is a snippet of the line the problem must name (`below` lines further down)."""
    line = None if at is None else line_of(text, at) + below
    return Case(id, text, line, message, fix, kind, tuple((environ or {}).items()))


def with_fallback(role_targets: str, fallbacks: str) -> str:
    """BASE with `fallbacks:` added to the role whose targets line is `role_targets`."""
    return BASE.replace(
        f"    targets: [{role_targets}]\n", f"    targets: [{role_targets}]\n    fallbacks: {fallbacks}\n"
    )


QWEN, LLAMA, BGE = (
    "{backend: box-vllm, model: qwen}",
    "{backend: box-vllm, model: llama}",
    "{backend: box-embed, model: bge}",
)
CYCLE = with_fallback(LLAMA, "[chat-fast]").replace(
    f"    targets: [{QWEN}]\n", f"    targets: [{QWEN}]\n    fallbacks: [chat-deep]\n"
)
NO_TARGETS = BASE.replace(f"    targets: [{LLAMA}]\n", "")
SECRET_BACKEND = BASE.replace(
    'kind: tei, url: "http://box.example:8080/v1"',
    'kind: openai, url: "https://x/v1", api_key: "${EMBED_KEY}"',
)

VLLM_LINE = 'box-vllm: {host: box, kind: vllm, url: "http://box.example:8000/v1"}'


def unix_socket(value: str, url: str = "http://box.example:8000/v1") -> str:
    """BASE with box-vllm reached through `unix_socket: value` (its url `url`)."""
    return BASE.replace(
        VLLM_LINE, f'box-vllm: {{host: box, kind: vllm, url: "{url}",\n    unix_socket: {value}}}'
    )


CASES = [
    case(
        "unix_socket is an absolute path",
        unix_socket("run/vllm.sock"),
        "unix_socket: run/vllm.sock",
        "backends.box-vllm.unix_socket is 'run/vllm.sock': a Unix socket is given by its absolute path",
        "write the full path, e.g. unix_socket: /run/vllm/vllm.sock",
    ),
    case(
        "unix_socket fits in sun_path",
        unix_socket("/run/" + "x" * 103 + ".sock"),
        "unix_socket: /run/",
        "backends.box-vllm.unix_socket is 113 bytes long: the path of a Unix socket is at most 107",
        "choose a shorter path, e.g. under /run or /tmp",
    ),
    case(
        "unix_socket speaks plain http",
        unix_socket("/run/vllm.sock", url="https://box.example:8000/v1"),
        "unix_socket: /run/vllm.sock",
        "backends.box-vllm.unix_socket is set with an https url: the gateway speaks plain HTTP on a Unix "
        "socket",
        "write url: http://... (the socket is on this machine), or remove unix_socket",
    ),
    case(
        "unix_socket on a local llama-server",
        BASE.replace(
            VLLM_LINE,
            "box-vllm: {host: box, kind: llamacpp, unix_socket: /run/x.sock,\n"
            "    local: {engine: llama-server, model: m, port: 8101}}",
        ),
        "unix_socket: /run/x.sock",
        "backends.box-vllm.unix_socket: `aifabric up` serves only its embeddings server (engine "
        "aifabric-embed) on a Unix socket, and this backend runs llama-server",
        "remove unix_socket (the gateway reaches it over TCP on its port)",
    ),
    case(
        "exclusive needs a group",
        BASE.replace(
            'box-embed: {host: box, kind: tei, url: "http://box.example:8080/v1"}',
            'box-embed: {host: box, kind: tei, url: "http://box.example:8080/v1",\n'
            "    local: {engine: aifabric-embed, model: m, port: 8101, exclusive: true}}",
        ),
        "exclusive: true",
        "backends.box-embed.local.exclusive needs a group",
        "add group: NAME",
    ),
    case(
        "sleep_when_idle is vLLM's",
        BASE.replace(
            'kind: tei, url: "http://box.example:8080/v1"',
            'kind: tei, url: "http://box.example:8080/v1", sleep_when_idle: 5m',
        ),
        "sleep_when_idle: 5m",
        "backends.box-embed.sleep_when_idle is vLLM's sleep mode, but the backend is of kind tei",
        "remove sleep_when_idle:",
    ),
    case(
        "wake on a host that is always on",
        BASE.replace(
            "box: {address: box.example, always_on: true}",
            'box: {address: box.example, wake: {command: "x"}}',
        ),
        "wake: {command",
        "hosts.box has wake: but is always on",
        "add always_on: false to the host, or remove wake:",
    ),
    case(
        "wake needs a mac or a command",
        BASE.replace("always_on: true}", "always_on: false, wake: {port: 9}}"),
        "wake: {port: 9}",
        "hosts.box.wake needs exactly one of mac: or command:",
        "wake: {mac:",
    ),
    case(
        "wake mac is checked",
        BASE.replace("always_on: true}", 'always_on: false, wake: {mac: "aa:bb:cc"}}'),
        'mac: "aa:bb:cc"',
        "hosts.box.wake.mac must be a MAC address, found 'aa:bb:cc'",
        'mac: "aa:bb:cc:dd:ee:ff"',
    ),
    case(
        "overflow without fallbacks has nowhere to go",
        BASE.replace(
            f"    targets: [{QWEN}]\n", f"    targets: [{QWEN}]\n    overflow: {{queue_depth: 4}}\n"
        ),
        "overflow: {queue_depth: 4}",
        "role 'chat-fast' has overflow: but no fallbacks",
        "add fallbacks: [ROLE]",
    ),
    case(
        "overflow with no bound would never overflow",
        with_fallback(QWEN, "[chat-deep]").replace(
            "    fallbacks: [chat-deep]\n", "    fallbacks: [chat-deep]\n    overflow: {}\n"
        ),
        "overflow: {}",
        "roles.chat-fast.overflow sets no bound",
        "queue_depth: 4",
    ),
    case(
        "overflow queue depth is a count",
        with_fallback(QWEN, "[chat-deep]").replace(
            "    fallbacks: [chat-deep]\n", "    fallbacks: [chat-deep]\n    overflow: {queue_depth: lots}\n"
        ),
        "overflow: {queue_depth: lots}",
        "roles.chat-fast.overflow.queue_depth must be a whole number of at least 1",
        "write a whole number of at least 1",
    ),
    case(
        "bad yaml names the parser's line",
        BASE.replace("    kind: embeddings", "    kind: embeddings: general"),
        "kind: embeddings: general",
        "not valid YAML",
        "quote the value",
    ),
    case(
        "tabs in yaml",
        BASE.replace("  chat-deep:\n    kind: chat", "  chat-deep:\n\tkind: chat"),
        "\tkind: chat",
        "",
        "spaces",
    ),
    case(
        "unknown key suggests the right one",
        BASE.replace(f"    targets: [{LLAMA}]", "    target: [{backend: box-vllm}]"),
        "target: [",
        "unknown key 'target' in roles.chat-deep",
        Whole("did you mean 'targets'?"),
    ),
    case(
        "unknown top-level key",
        BASE + "monitorig: {interval: 5m}\n",
        "monitorig",
        "",
        Whole("did you mean 'monitoring'?"),
    ),
    case(
        "wrong type",
        BASE + 'gateway:\n  port: "abc"\n',
        'port: "abc"',
        Whole("gateway.port must be a whole number from 0 to 65535, found 'abc'"),
        "whole number",
    ),
    case(
        "role without targets",
        NO_TARGETS,
        "chat-deep:",
        Whole("roles.chat-deep has no 'targets'"),
        Whole("add targets: [{backend: BACKEND, model: MODEL_ID}] to roles.chat-deep"),
        below=1,  # where the role's mapping starts
    ),
    case(
        "role with an empty target list",
        BASE.replace(f"targets: [{LLAMA}]", "targets: []"),
        "targets: []",
        "has no targets",
        "{backend: BACKEND, model: MODEL_ID}",
    ),
    case(
        "backend without url",
        BASE.replace(', url: "http://box.example:8080/v1"', ""),
        "box-embed: {",
        Whole("backends.box-embed has no 'url'"),
        "url: http://HOST:PORT/v1",
    ),
    case(
        "backend without kind",
        BASE.replace("kind: tei, ", ""),
        "box-embed: {",
        Whole("backends.box-embed has no 'kind'"),
        "kind: vllm | llamacpp",
    ),
    case(
        "unknown backend kind lists the valid ones",
        BASE.replace("kind: vllm", "kind: vlm"),
        "kind: vlm",
        "'vlm', which is not one of: vllm, llamacpp, llama-cpp-python, ollama, tei, openai",
        Whole("did you mean 'vllm'?"),
    ),
    case(
        "a target naming a missing backend lists the existing ones",
        BASE.replace(LLAMA, "{backend: box-vlm, model: llama}"),
        "box-vlm",
        Whole("role 'chat-deep' targets backend 'box-vlm', which is not defined in backends"),
        Whole("did you mean 'box-vllm'? (backends defined: box-vllm, box-embed)"),
    ),
    case(
        "a backend naming a missing host",
        BASE.replace("box-embed: {host: box,", "box-embed: {host: gpu2,"),
        "host: gpu2",
        Whole("backend 'box-embed' is on host 'gpu2', which is not defined in hosts"),
        "hosts defined: box",
    ),
    case(
        "an alias to a missing role",
        BASE + "  local/reasoner: chat-deeep\n",
        "local/reasoner",
        Whole("alias 'local/reasoner' points to 'chat-deeep', which is not defined in roles"),
        "did you mean 'chat-deep'?",
    ),
    case(
        "an alias that shadows a role",
        BASE + "  chat-deep: chat-fast\n",
        "  chat-deep: chat-fast",
        "alias 'chat-deep' has the name of a role",
        "remove the alias",
    ),
    case(
        "a fallback naming a missing role",
        with_fallback(QWEN, "[openai/strong]"),
        "fallbacks: [openai/strong]",
        Whole("role 'chat-fast' falls back to 'openai/strong', which is not defined in roles"),
        Whole("roles defined: chat-fast, chat-deep, embed"),
    ),
    case(
        "a fallback naming an alias",
        with_fallback(LLAMA, "[local/chat]"),
        "fallbacks: [local/chat]",
        "",
        Whole("write the role it points to: 'chat-fast'"),
    ),
    case(
        "a fallback cycle is shown",
        CYCLE,
        "fallbacks: [chat-deep]",
        Whole("fallback cycle: chat-fast -> chat-deep -> chat-fast"),
        "'chat-deep' from the fallbacks of 'chat-fast'",
    ),
    case(
        "a role falling back to itself is a cycle",
        with_fallback(BGE, "[embed]"),
        None,
        Whole("fallback cycle: embed -> embed"),
        "",
    ),
    case(
        "an embeddings role falling back to a chat role",
        with_fallback(BGE, "[chat-fast]"),
        "fallbacks: [chat-fast]",
        Whole(
            "role 'embed' (kind embeddings) falls back to 'chat-fast' (kind chat): "
            "a fallback must serve the same kind of request"
        ),
        Whole("remove 'chat-fast' from its fallbacks"),
    ),
    case(
        "an unresolved variable without an env file",
        SECRET_BACKEND,
        "${EMBED_KEY}",
        Whole(
            "${EMBED_KEY} in backends.box-embed.api_key is not set: "
            "not in the environment, and no gateway.env_file is set"
        ),
        "export EMBED_KEY=",
        kind=ProblemKind.ENV,
    ),
    case(
        "an empty variable is not a silent empty string",
        BASE + 'gateway:\n  api_keys: ["${MASTER_KEY}"]\n',
        "${MASTER_KEY}",
        Whole("${MASTER_KEY} in gateway.api_keys[0] is set but empty"),
        "${MASTER_KEY:-default}",
        kind=ProblemKind.ENV,
        environ={"MASTER_KEY": ""},
    ),
    case(
        "a duration that does not parse",
        BASE + "monitoring:\n  interval: 5 minutes\n",
        "interval: 5 minutes",
        Whole("monitoring.interval must be a duration, found '5 minutes'"),
        Whole("write a duration like 250ms, 30s, 5m, 1h or 1h30m"),
    ),
    case(
        "a duplicate key",
        t := BASE + "  local/chat: chat-deep\n",
        "local/chat: chat-deep",
        f"(first on line {line_of(t, 'local/chat: chat-fast')})",
        "remove one",
    ),
    case(
        "an empty gateway api key is refused",
        BASE + 'gateway:\n  api_keys: ["good-key", ""]\n',
        "api_keys",
        Whole("gateway.api_keys[1] is empty"),
        "",
    ),
]


def expect(expected: str, actual: str) -> None:
    if isinstance(expected, Whole):
        assert actual == expected
    else:
        assert expected in actual, f"{expected!r} not in {actual!r}"


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_one_mistake_one_located_problem_with_its_fix(c: Case, problems: Problems) -> None:
    problem = only(problems(c.text, environ=dict(c.environ)))
    if c.line is not None:
        assert problem.line == c.line
    expect(c.message, problem.message)
    expect(c.fix, problem.fix)
    assert problem.kind is c.kind


def test_an_unresolved_variable_says_how_to_set_it(problems: Problems) -> None:
    """Both ways out are named: the environment, or an env file."""
    problem = only(problems(SECRET_BACKEND))
    assert "gateway.env_file" in problem.fix


def only(problems: list[ConfigProblem]) -> ConfigProblem:
    assert len(problems) == 1, "\n".join(map(str, problems))
    problem = problems[0]
    assert Path(problem.file).name == "fabric.yaml"
    return problem


def test_unresolved_variable_names_the_env_file_consulted(problems: Problems, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SOMETHING_ELSE=1\n")
    text = BASE + 'gateway:\n  env_file: .env\n  api_keys: ["${MASTER_KEY}"]\n'
    problem = only(problems(text))
    assert problem.line == line_of(text, "${MASTER_KEY}")
    env_file = tmp_path / ".env"
    assert problem.message == (
        "${MASTER_KEY} in gateway.api_keys[0] is not set: "
        f"not in the environment nor in env_file {env_file}"
    )
    assert problem.fix == f"add MASTER_KEY=... to {env_file}, or export MASTER_KEY in the environment"


def test_missing_env_file_when_a_reference_needs_it(problems: Problems, tmp_path: Path) -> None:
    text = BASE + 'gateway:\n  env_file: secrets/.env\n  api_keys: ["${MASTER_KEY}", "${SECOND_KEY}"]\n'
    problem = only(problems(text, environ={"SECOND_KEY": "set"}))
    assert problem.line == line_of(text, "env_file: secrets/.env")
    missing = tmp_path / "secrets" / ".env"
    assert f"env_file {missing} does not exist" in problem.message
    assert "${MASTER_KEY} (gateway.api_keys[0], line" in problem.message
    assert "SECOND_KEY" not in problem.message  # that one came from the environment
    assert f"create {missing} with MASTER_KEY=..." in problem.fix


def test_env_file_syntax_error_points_into_the_env_file(problems: Problems, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# secrets\nMASTER_KEY=abc\nthis line is wrong\n")
    text = BASE + 'gateway:\n  env_file: .env\n  api_keys: ["${MASTER_KEY}"]\n'
    [problem] = problems(text)  # located in the env file, not fabric.yaml
    assert problem.file == str(tmp_path / ".env")
    assert problem.line == 3
    assert "KEY=VALUE" in problem.fix
    assert problem.kind is ProblemKind.ENV


def test_every_problem_is_reported_not_just_the_first(problems: Problems) -> None:
    text = (
        BASE.replace("kind: vllm", "kind: vlm")
        .replace("{backend: box-embed, model: bge}", "{backend: nowhere, model: bge}")
        .replace("local/chat: chat-fast", "local/chat: chat-fst")
        + "gateway: {port: abc}\nmonitoring: {interval: soon}\n"
    )
    found = problems(text)
    assert [p.line for p in found] == sorted(
        [
            line_of(text, "kind: vlm"),
            line_of(text, "backend: nowhere"),
            line_of(text, "chat-fst"),
            line_of(text, "port: abc"),
            line_of(text, "interval: soon"),
        ]
    )


def test_problems_never_quote_a_substituted_value_or_an_env_file_line(
    problems: Problems, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("KEY=ok\nsk-bare-secret-line-9d2f\n")
    text = BASE + 'gateway:\n  env_file: .env\n  port: ${PORT_SECRET}\n  api_keys: ["${KEY}"]\n'
    found = problems(text, environ={"PORT_SECRET": "sk-not-a-port-77ab"})
    shown = "\n".join(map(str, found))
    assert "gateway.port must be a whole number from 0 to 65535, found '${PORT_SECRET}'" in shown
    assert f"{tmp_path / '.env'}:2: env file: expected KEY=VALUE" in shown
    assert "sk-not-a-port-77ab" not in shown
    assert "sk-bare-secret-line-9d2f" not in shown


def test_parallel_slots_on_an_engine_that_serves_one_request_at_a_time(problems: Problems) -> None:
    text = BASE.replace(
        "backends:\n",
        "backends:\n"
        "  local-chat:\n"
        "    kind: llama-cpp-python\n"
        "    local: {engine: llama-cpp-python, model: m.gguf, port: 8101,\n"
        "            parallel: 4}\n",
    )
    problem = only(problems(text))
    assert problem.line == line_of(text, "parallel: 4")
    assert "local.parallel applies to the llama-server engine only" in problem.message
    assert problem.fix == "remove parallel, or use engine: llama-server"


def test_requantize_on_another_engine_and_an_unknown_type(problems: Problems) -> None:
    text = BASE.replace(
        "backends:\n",
        "backends:\n"
        "  local-chat:\n"
        "    kind: llama-cpp-python\n"
        "    local: {engine: llama-cpp-python, model: m.gguf, port: 8101,\n"
        "            requantize: q8_0}\n",
    )
    problem = only(problems(text))
    assert problem.line == line_of(text, "requantize: q8_0")
    assert "local.requantize applies to the llama-server engine only" in problem.message
    assert problem.fix == "remove requantize, or use engine: llama-server"

    text = BASE.replace(
        "backends:\n",
        "backends:\n"
        "  local-chat:\n"
        "    kind: llamacpp\n"
        "    local: {engine: llama-server, model: m.gguf, port: 8101,\n"
        "            requantize: q4_0}\n",
    )
    problem = only(problems(text))
    assert problem.line == line_of(text, "requantize: q4_0")
    assert "q8_0" in problem.message + (problem.fix or ""), problem
