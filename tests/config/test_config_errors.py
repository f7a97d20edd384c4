"""Every mistake in a fabric file is reported with the file, the line, and what to write instead."""

from __future__ import annotations

from pathlib import Path

from config_support import BASE, Problems, line_of

from aifabric.errors import ConfigProblem


def only(problems: list[ConfigProblem]) -> ConfigProblem:
    assert len(problems) == 1, "\n".join(map(str, problems))
    problem = problems[0]
    assert Path(problem.file).name == "fabric.yaml"
    return problem


def test_bad_yaml_names_the_parsers_line(problems: Problems) -> None:
    text = BASE.replace("    kind: embeddings", "    kind: embeddings: general")
    problem = only(problems(text))
    assert problem.line == line_of(text, "kind: embeddings: general")
    assert "not valid YAML" in problem.message
    assert "quote the value" in problem.fix


def test_tabs_in_yaml(problems: Problems) -> None:
    text = BASE.replace("  chat-deep:\n    kind: chat", "  chat-deep:\n\tkind: chat")
    problem = only(problems(text))
    assert problem.line == line_of(text, "\tkind: chat")
    assert "spaces" in problem.fix


def test_unknown_key_suggests_the_right_one(problems: Problems) -> None:
    text = BASE.replace(
        "    targets: [{backend: box-vllm, model: llama}]", "    target: [{backend: box-vllm}]"
    )
    problem = only(problems(text))
    assert problem.line == line_of(text, "target: [")
    assert "unknown key 'target' in roles.chat-deep" in problem.message
    assert problem.fix == "did you mean 'targets'?"


def test_unknown_top_level_key(problems: Problems) -> None:
    text = BASE + "monitorig: {interval: 5m}\n"
    problem = only(problems(text))
    assert problem.line == line_of(text, "monitorig")
    assert problem.fix == "did you mean 'monitoring'?"


def test_wrong_type(problems: Problems) -> None:
    text = BASE + 'gateway:\n  port: "abc"\n'
    problem = only(problems(text))
    assert problem.line == line_of(text, 'port: "abc"')
    assert problem.message == "gateway.port must be a whole number from 0 to 65535, found 'abc'"
    assert "whole number" in problem.fix


def test_role_without_targets(problems: Problems) -> None:
    text = BASE.replace("    targets: [{backend: box-vllm, model: llama}]\n", "")
    problem = only(problems(text))
    assert problem.line == line_of(text, "chat-deep:") + 1  # where the role's mapping starts
    assert problem.message == "roles.chat-deep has no 'targets'"
    assert problem.fix == "add targets: [{backend: BACKEND, model: MODEL_ID}] to roles.chat-deep"


def test_role_with_an_empty_target_list(problems: Problems) -> None:
    text = BASE.replace("targets: [{backend: box-vllm, model: llama}]", "targets: []")
    problem = only(problems(text))
    assert problem.line == line_of(text, "targets: []")
    assert "has no targets" in problem.message
    assert "{backend: BACKEND, model: MODEL_ID}" in problem.fix


def test_backend_without_url(problems: Problems) -> None:
    text = BASE.replace(', url: "http://box.example:8080/v1"', "")
    problem = only(problems(text))
    assert problem.line == line_of(text, "box-embed: {")
    assert problem.message == "backends.box-embed has no 'url'"
    assert "url: http://HOST:PORT/v1" in problem.fix


def test_backend_without_kind(problems: Problems) -> None:
    text = BASE.replace("kind: tei, ", "")
    problem = only(problems(text))
    assert problem.line == line_of(text, "box-embed: {")
    assert problem.message == "backends.box-embed has no 'kind'"
    assert "kind: vllm | llamacpp" in problem.fix


def test_unknown_backend_kind_lists_the_valid_ones(problems: Problems) -> None:
    text = BASE.replace("kind: vllm", "kind: vlm")
    problem = only(problems(text))
    assert problem.line == line_of(text, "kind: vlm")
    assert (
        "'vlm', which is not one of: vllm, llamacpp, llama-cpp-python, ollama, tei, openai" in problem.message
    )
    assert problem.fix == "did you mean 'vllm'?"


def test_target_naming_a_missing_backend_lists_the_existing_ones(problems: Problems) -> None:
    text = BASE.replace("{backend: box-vllm, model: llama}", "{backend: box-vlm, model: llama}")
    problem = only(problems(text))
    assert problem.line == line_of(text, "box-vlm")
    assert problem.message == ("role 'chat-deep' targets backend 'box-vlm', which is not defined in backends")
    assert problem.fix == "did you mean 'box-vllm'? (backends defined: box-vllm, box-embed)"


def test_backend_naming_a_missing_host(problems: Problems) -> None:
    text = BASE.replace("box-embed: {host: box,", "box-embed: {host: gpu2,")
    problem = only(problems(text))
    assert problem.line == line_of(text, "host: gpu2")
    assert problem.message == "backend 'box-embed' is on host 'gpu2', which is not defined in hosts"
    assert problem.fix.startswith("hosts defined: box")


def test_alias_to_a_missing_role(problems: Problems) -> None:
    text = BASE + "  local/reasoner: chat-deeep\n"
    problem = only(problems(text))
    assert problem.line == line_of(text, "local/reasoner")
    assert problem.message == "alias 'local/reasoner' points to 'chat-deeep', which is not defined in roles"
    assert problem.fix.startswith("did you mean 'chat-deep'?")


def test_alias_that_shadows_a_role(problems: Problems) -> None:
    text = BASE + "  chat-deep: chat-fast\n"
    problem = only(problems(text))
    assert problem.line == line_of(text, "  chat-deep: chat-fast")
    assert "alias 'chat-deep' has the name of a role" in problem.message
    assert "remove the alias" in problem.fix


def test_fallback_naming_a_missing_role(problems: Problems) -> None:
    text = BASE.replace(
        "    targets: [{backend: box-vllm, model: qwen}]\n",
        "    targets: [{backend: box-vllm, model: qwen}]\n    fallbacks: [openai/strong]\n",
    )
    problem = only(problems(text))
    assert problem.line == line_of(text, "fallbacks: [openai/strong]")
    assert problem.message == "role 'chat-fast' falls back to 'openai/strong', which is not defined in roles"
    assert problem.fix == "roles defined: chat-fast, chat-deep, embed"


def test_fallback_naming_an_alias(problems: Problems) -> None:
    text = BASE.replace(
        "    targets: [{backend: box-vllm, model: llama}]\n",
        "    targets: [{backend: box-vllm, model: llama}]\n    fallbacks: [local/chat]\n",
    )
    problem = only(problems(text))
    assert problem.line == line_of(text, "fallbacks: [local/chat]")
    assert problem.fix == "write the role it points to: 'chat-fast'"


def test_fallback_cycle_is_shown(problems: Problems) -> None:
    text = BASE.replace(
        "    targets: [{backend: box-vllm, model: qwen}]\n",
        "    targets: [{backend: box-vllm, model: qwen}]\n    fallbacks: [chat-deep]\n",
    ).replace(
        "    targets: [{backend: box-vllm, model: llama}]\n",
        "    targets: [{backend: box-vllm, model: llama}]\n    fallbacks: [chat-fast]\n",
    )
    problem = only(problems(text))
    assert problem.message == "fallback cycle: chat-fast -> chat-deep -> chat-fast"
    assert problem.line == line_of(text, "fallbacks: [chat-deep]")
    assert "'chat-deep' from the fallbacks of 'chat-fast'" in problem.fix


def test_role_falling_back_to_itself_is_a_cycle(problems: Problems) -> None:
    text = BASE.replace(
        "    targets: [{backend: box-embed, model: bge}]\n",
        "    targets: [{backend: box-embed, model: bge}]\n    fallbacks: [embed]\n",
    )
    problem = only(problems(text))
    assert problem.message == "fallback cycle: embed -> embed"


def test_embeddings_role_falling_back_to_a_chat_role(problems: Problems) -> None:
    text = BASE.replace(
        "    targets: [{backend: box-embed, model: bge}]\n",
        "    targets: [{backend: box-embed, model: bge}]\n    fallbacks: [chat-fast]\n",
    )
    problem = only(problems(text))
    assert problem.line == line_of(text, "fallbacks: [chat-fast]")
    assert problem.message == (
        "role 'embed' (kind embeddings) falls back to 'chat-fast' (kind chat): "
        "a fallback must serve the same kind of request"
    )
    assert problem.fix == "remove 'chat-fast' from its fallbacks"


def test_unresolved_variable_without_env_file(problems: Problems) -> None:
    text = BASE.replace(
        'kind: tei, url: "http://box.example:8080/v1"',
        'kind: openai, url: "https://x/v1", api_key: "${EMBED_KEY}"',
    )
    problem = only(problems(text))
    assert problem.line == line_of(text, "${EMBED_KEY}")
    assert problem.message == (
        "${EMBED_KEY} in backends.box-embed.api_key is not set: "
        "not in the environment, and no gateway.env_file is set"
    )
    assert "export EMBED_KEY=" in problem.fix
    assert "gateway.env_file" in problem.fix


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


def test_empty_variable_is_not_a_silent_empty_string(problems: Problems) -> None:
    text = BASE + 'gateway:\n  api_keys: ["${MASTER_KEY}"]\n'
    problem = only(problems(text, environ={"MASTER_KEY": ""}))
    assert problem.line == line_of(text, "${MASTER_KEY}")
    assert problem.message == "${MASTER_KEY} in gateway.api_keys[0] is set but empty"
    assert "${MASTER_KEY:-default}" in problem.fix


def test_env_file_syntax_error_points_into_the_env_file(problems: Problems, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# secrets\nMASTER_KEY=abc\nthis line is wrong\n")
    text = BASE + 'gateway:\n  env_file: .env\n  api_keys: ["${MASTER_KEY}"]\n'
    problem = only_env(problems(text))
    assert problem.file == str(tmp_path / ".env")
    assert problem.line == 3
    assert "KEY=VALUE" in problem.fix


def only_env(problems: list[ConfigProblem]) -> ConfigProblem:
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def test_duration_that_does_not_parse(problems: Problems) -> None:
    text = BASE + "monitoring:\n  interval: 5 minutes\n"
    problem = only(problems(text))
    assert problem.line == line_of(text, "interval: 5 minutes")
    assert problem.message == "monitoring.interval must be a duration, found '5 minutes'"
    assert problem.fix == "write a duration like 250ms, 30s, 5m, 1h or 1h30m"


def test_duplicate_key(problems: Problems) -> None:
    text = BASE + "  local/chat: chat-deep\n"
    problem = only(problems(text))
    assert problem.line == line_of(text, "local/chat: chat-deep")
    assert f"(first on line {line_of(text, 'local/chat: chat-fast')})" in problem.message
    assert "remove one" in problem.fix


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


def test_empty_gateway_api_key_is_refused(problems: Problems) -> None:
    text = BASE + 'gateway:\n  api_keys: ["good-key", ""]\n'
    problem = only(problems(text))
    assert problem.line == line_of(text, "api_keys")
    assert problem.message == "gateway.api_keys[1] is empty"
