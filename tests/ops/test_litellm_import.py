"""`aifabric config import litellm` on LiteLLM's own example configs and on the runbook's estate: what
becomes of each part, that the fabric file loads, that no secret reaches it, and the exit statuses."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.config.load import load_config
from aifabric.config.schema import BACKEND_KINDS, ROLE_KINDS, ClientApi, FabricConfig
from aifabric.ops.litellm.providers import PROVIDERS
from aifabric.routing.table import RoutingTable

HERE = Path(__file__).parent / "litellm"
EXAMPLES = HERE / "examples"
ESTATE = HERE / "runbook_estate.yaml"

# Not valid YAML (exit 2), and only providers without a kind (exit 1, nothing written): tested below.
NOT_IMPORTABLE = ("hosted_litellm.yaml", "china_domestic_free_sources.yaml")
# Examples aifabric carries whole (exit 0): two Azure deployments whose tpm becomes the role's limit.
COMPLETE = ("azure_config_with_tpm.yaml",)

# Values for the variables an imported file reads from the environment, so that it can be loaded here.
PLACEHOLDERS = {
    "AZURE_API_BASE": "https://example-resource.openai.azure.com",
    "REDIS_HOST": "127.0.0.1",
    "REDIS_PORT": "6379",
}


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, console=Console(out, err))
    return code, out.getvalue(), err.getvalue()


def import_json(config: Path, out: Path, *extra: str) -> tuple[int, dict[str, object]]:
    code, printed, err = run(
        ["config", "import", "litellm", str(config), "--out", str(out), "--json", *extra]
    )
    assert err == ""
    return code, orjson.loads(printed)


def load_imported(out: Path, report: dict[str, object]) -> FabricConfig:
    """The written fabric file as `aifabric serve` would load it, the environment providing what it needs."""
    needs = report["needs_env"]
    assert isinstance(needs, list)
    return load_config(out, environ={name: PLACEHOLDERS.get(name, "placeholder-value") for name in needs})


def left_out(report: dict[str, object]) -> dict[int, str]:
    """line -> `key: why` of every part left out (several on one line joined by ` | `)."""
    items = report["left_out"]
    assert isinstance(items, list)
    out: dict[int, str] = {}
    for item in items:
        text = f"{item['key']}: {item['why']}"
        out[item["line"]] = f"{out[item['line']]} | {text}" if item["line"] in out else text
    return out


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in EXAMPLES.glob("*.yaml") if p.name not in NOT_IMPORTABLE),
)
def test_every_example_imports_into_a_file_that_loads_and_holds_no_literal_secret(
    tmp_path: Path, name: str
) -> None:
    source = EXAMPLES / name
    out = tmp_path / "fabric.yaml"
    code, report = import_json(source, out)
    # Each other example of LiteLLM's has something aifabric has no equivalent for.
    assert code == (0 if name in COMPLETE else 1)
    config = load_imported(out, report)
    assert set(config.roles) == set(report["roles"])  # type: ignore[arg-type]
    text = out.read_text()
    secrets = report["secrets"]
    assert isinstance(secrets, list)
    env_text = Path(str(report["env_file"])).read_text() if report["env_file"] else ""
    for secret in secrets:
        literal = env_text.split(f"{secret['name']}='", 1)[1].split("'", 1)[0]
        assert literal and literal not in text, f"the literal secret of line {secret['line']} is in the file"
    for line, what in left_out(report).items():
        assert line is not None and line > 0, what
    # The same input gives the same file, byte for byte.
    again = tmp_path / "again.yaml"
    import_json(source, again)
    assert again.read_text() == text.replace("fabric.env", "again.env")


def test_load_balancer_three_deployments_one_role_literal_keys_to_the_env_file(tmp_path: Path) -> None:
    out = tmp_path / "fabric.yaml"
    code, report = import_json(EXAMPLES / "load_balancer.yaml", out)
    assert code == 1
    config = load_imported(out, report)
    role = config.roles["gpt-3.5-turbo"]
    assert [(t.backend, t.model, t.weight) for t in role.targets] == [
        ("openai", "gpt-3.5-turbo", 3.0),  # rpm 3: the share simple-shuffle gives it
        ("openai-2", "gpt-3.5-turbo", 3.0),
        ("openrouter", "gpt-3.5-turbo", 1.0),
    ]
    # Two keys of one OpenAI account each: two backends at one URL.
    assert config.backends["openai"].url == config.backends["openai-2"].url == "https://api.openai.com/v1"
    assert config.backends["openrouter"].url == "https://openrouter.ai/api/v1"
    env_file = tmp_path / "fabric.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "FABRIC_OPENAI_API_KEY='sk-uj6F'" in env_file.read_text()
    assert "REDIS_PASSWORD='eYVX71'" in env_file.read_text()  # environment_variables, beside the keys
    assert config.backends["openai"].api_key is not None
    assert config.backends["openai"].api_key.reveal() == "sk-uj6F"  # read back through gateway.env_file
    text = out.read_text()
    assert "sk-uj6F" not in text and "sk-Imn" not in text and "eYVX71" not in text
    assert "unknown provider 'mistralai'" in left_out(report)[23]
    # The openrouter deployment sets no rpm or tpm: the role has no sum to take as its limit.
    assert role.limits.rpm is None and role.limits.tpm is None
    assert "rate limit" in left_out(report)[11]
    assert "(the deployment on line 18 sets no rpm)" in left_out(report)[11]


def test_ollama_aliases_share_one_backend_and_request_defaults_are_reported(tmp_path: Path) -> None:
    out = tmp_path / "fabric.yaml"
    code, report = import_json(EXAMPLES / "aliases_config.yaml", out)
    config = load_imported(out, report)
    assert list(config.backends) == ["localhost-ollama"]
    backend = config.backends["localhost-ollama"]
    assert (backend.kind, backend.url, backend.host) == ("ollama", "http://localhost:11434/v1", "localhost")
    assert {name: [t.model for t in r.targets] for name, r in config.roles.items()} == {
        "text-davinci-003": ["zephyr"],
        "gpt-4": ["llama2"],
        "gpt-3.5-turbo": ["llama2"],
    }
    assert code == 1
    assert left_out(report)[11].startswith("model_list[2].litellm_params.temperature: a request default")
    assert left_out(report)[12].startswith("model_list[2].litellm_params.max_tokens: a request default")


def test_azure_deployments_timeouts_and_what_has_no_equivalent(tmp_path: Path) -> None:
    out = tmp_path / "fabric.yaml"
    _, report = import_json(EXAMPLES / "azure_config.yaml", out)
    config = load_imported(out, report)
    team1 = config.backends[config.roles["gpt-4-team1"].targets[0].backend]
    assert team1.url == "https://openai-gpt-4-test-v-1.openai.azure.com/openai/v1"
    assert team1.kind == "openai" and team1.timeout == 5.0
    assert config.roles["gpt-4-team1"].targets[0].model == "chatgpt-v-2"  # the deployment name
    assert team1.api_key is not None and team1.api_key.reveal() == "placeholder-value"  # ${AZURE_API_KEY}
    assert "${AZURE_API_KEY}" in out.read_text()
    reported = left_out(report)
    # LiteLLM's stream_timeout (the streamed calls' read timeout): the gateway's stream idle timeout.
    assert 10 not in reported and config.retry.stream_idle_timeout == 0.5
    assert "retry:\n" in out.read_text() and "stream_idle_timeout: 0.5s" in out.read_text()
    assert reported[11].startswith("model_list[0].litellm_params.max_retries")
    assert "no retry count per backend or per role" in reported[11]
    notes = {n["line"]: n["why"] for n in report["notes"]}  # type: ignore[union-attr]
    assert "api-version" in notes[6]
    # One deployment per role: its tpm is the role's limit.
    assert config.roles["gpt-4-team1"].limits.tpm == 20_000 and config.roles["gpt-4-team1"].limits.rpm is None
    assert config.roles["gpt-4-team2"].limits.tpm == 100_000
    assert notes[8].startswith("carried as roles.gpt-4-team1.limits.tpm: 20000, the sum over the role's")
    assert 8 not in reported


def test_deployment_limits_become_the_roles_limit_when_every_deployment_sets_one(tmp_path: Path) -> None:
    out = tmp_path / "fabric.yaml"
    code, report = import_json(EXAMPLES / "azure_config_with_tpm.yaml", out)
    assert code == 0 and report["left_out"] == []
    config = load_imported(out, report)
    role = config.roles["gpt-3.5-turbo"]
    assert (role.limits.tpm, role.limits.rpm) == (160_000, None)  # 80_000 + 80_000
    assert [t.weight for t in role.targets] == [1.0, 1.0]  # equal shares: no weight written
    notes = {n["line"]: n["why"] for n in report["notes"]}  # type: ignore[union-attr]
    for line in (7, 13):
        assert notes[line].startswith("carried as roles.gpt-3.5-turbo.limits.tpm: 160000, the sum")
    # The fabric file says where the limit came from.
    (limit_line,) = [line for line in out.read_text().splitlines() if "tpm: 160000" in line]
    assert "# the sum of its deployments' tpm (lines 7, 13): LiteLLM limits each one" in limit_line
    # The human report says it too.
    code, printed, _ = run(
        ["config", "import", "litellm", str(EXAMPLES / "azure_config_with_tpm.yaml"), "--out", str(out)]
    )
    assert code == 0 and "carried as roles.gpt-3.5-turbo.limits.tpm: 160000" in printed


def test_embedding_mode_env_api_base_and_health_interval(tmp_path: Path) -> None:
    out = tmp_path / "fabric.yaml"
    _, report = import_json(EXAMPLES / "_health_check_test_config.yaml", out)
    config = load_imported(out, report)
    role = config.roles["text-embedding-ada-002"]
    assert role.kind == "embeddings"
    backend = config.backends[role.targets[0].backend]
    assert backend.url == "https://example-resource.openai.azure.com/openai/v1"  # ${AZURE_API_BASE}/openai/v1
    assert backend.health.interval == 300.0
    assert set(report["needs_env"]) == {"AZURE_API_BASE", "AZURE_API_KEY"}  # type: ignore[arg-type]


def test_reference_config_aliases_fallbacks_wildcards_and_providers_without_a_kind(tmp_path: Path) -> None:
    out = tmp_path / "fabric.yaml"
    _, report = import_json(EXAMPLES / "proxy_server_config.yaml", out)
    config = load_imported(out, report)
    assert config.aliases == {"my-special-fake-model-alias-name": "fake-openai-endpoint-3"}
    assert config.roles["gpt-instruct"].kind == "completions"
    assert config.roles["mistral-embed"].kind == "embeddings"
    assert config.state == "redis://:placeholder-value@127.0.0.1:6379/0"
    assert config.retry.max_attempts == 6 and config.retry.try_timeout == 600.0
    assert config.gateway.api_keys[0].reveal() == "sk-1234"  # the master key, from the env file
    assert "sk-1234" not in out.read_text()
    reported = left_out(report)
    assert "sagemaker" in reported[38]
    assert "image generation" in reported[55]
    assert "wildcard" in reported[94] and "wildcard" in reported[101]
    assert reported[123].startswith("litellm_settings.context_window_fallbacks: aifabric never fails over")
    assert reported[156].startswith("router_settings.routing_strategy: 'usage-based-routing-v2'")
    assert "dall-e-2" not in config.roles  # `model: azure/` names no model


def test_unknown_providers_are_reported_with_their_lines(tmp_path: Path) -> None:
    code, out, err = run(
        [
            "config",
            "import",
            "litellm",
            str(EXAMPLES / "china_domestic_free_sources.yaml"),
            "--out",
            str(tmp_path / "fabric.yaml"),
        ]
    )
    assert code == 1 and out == ""
    assert "no model_list entry could become a role; nothing written" in err
    assert (
        "line 23: model_list[0].litellm_params.model: 'sf-deepseek-r1' is left out: "
        "unknown provider 'siliconflow'" in err
    )
    assert (
        "line 40: model_list[2].litellm_params.model: 'glm-4-flash' is left out: unknown provider 'zhipu'"
        in err
    )
    assert not (tmp_path / "fabric.yaml").exists()


def test_guardrails_callbacks_and_cache_are_listed_by_line(tmp_path: Path) -> None:
    out = tmp_path / "fabric.yaml"
    code, report = import_json(EXAMPLES / "otel_test_config.yaml", out)
    config = load_imported(out, report)
    assert code == 1
    assert config.backends["localhost-openai"].url == "http://localhost:8000"  # as LiteLLM calls it
    reported = left_out(report)
    assert "provider 'cohere'" in reported[20]
    assert reported[32].startswith("litellm_settings.cache: response caching")
    assert reported[33].startswith("litellm_settings.callbacks:")
    assert reported[35].startswith("guardrails: guardrails")
    assert "tag-based routing" in reported[7]


# -- the runbook's estate --------------------------------------------------------------------------


def test_runbook_estate_becomes_the_platform_contract(tmp_path: Path) -> None:
    out = tmp_path / "fabric.yaml"
    code, report = import_json(ESTATE, out)
    config = load_imported(out, report)
    assert list(config.roles) == ["chat-fast", "chat-deep", "embeddings-general", "openai/strong"]
    assert config.aliases == {
        "local/chat": "chat-fast",
        "local/reasoner": "chat-deep",
        "local/embed": "embeddings-general",
    }
    assert config.roles["chat-fast"].fallbacks == ("openai/strong",)
    assert config.roles["chat-deep"].fallbacks == ("openai/strong",)
    assert config.roles["embeddings-general"].kind == "embeddings"
    assert {n: (b.kind, b.url, b.host) for n, b in config.backends.items()} == {
        "armitage-vllm": ("vllm", "http://armitage.pangolin-vega.ts.net:8000/v1", "armitage"),
        "wintermute-vllm": ("vllm", "http://wintermute.pangolin-vega.ts.net:8000/v1", "wintermute"),
        "motoko-vllm": ("vllm", "http://motoko.pangolin-vega.ts.net:8200/v1", "motoko"),
        "openai": ("openai", "https://api.openai.com/v1", None),
    }
    assert config.backends["armitage-vllm"].timeout == 120.0
    assert config.backends["armitage-vllm"].health.consecutive_failures == 3  # allowed_fails 2
    assert config.backends["armitage-vllm"].health.base_ejection == 30.0  # cooldown_time
    assert config.retry.max_attempts == 3 and config.retry.try_timeout == 600.0
    assert [k.reveal() for k in config.gateway.api_keys] == ["placeholder-value"]  # ${LITELLM_MASTER_KEY}
    assert set(report["needs_env"]) == {"LITELLM_MASTER_KEY", "OPENAI_API_KEY", "VLLM_API_KEY"}  # type: ignore[arg-type]
    assert report["secrets"] == [
        {"name": "FABRIC_MOTOKO_VLLM_API_KEY", "line": 20, "key": "model_list[2].litellm_params.api_key"}
    ]
    assert code == 1
    assert sorted(left_out(report)) == [43, 45, 49]  # drop_params, success_callback, database_url
    # Where each part came from, in the file itself.
    text = out.read_text()
    assert "chat-fast:" in text and "# model_name 'chat-fast': model_list entries on line 4" in text
    assert "- openai/strong  # line 35: router_settings.fallbacks" in text
    assert "#   line 43: litellm_settings.drop_params:" in text


def test_a_complete_import_exits_0(tmp_path: Path) -> None:
    source = tmp_path / "config.yaml"
    source.write_text(
        "model_list:\n"
        "  - model_name: chat\n"
        "    litellm_params: {model: hosted_vllm/qwen, api_base: 'http://box:8000'}\n"
        "router_settings:\n"
        "  num_retries: 1\n"
    )
    code, out, err = run(["config", "import", "litellm", str(source), "--out", str(tmp_path / "f.yaml")])
    assert (code, err) == (0, "")
    assert "wrote" in out and "left out" not in out
    config = load_config(tmp_path / "f.yaml", environ={})
    assert config.backends["box-vllm"].url == "http://box:8000/v1"  # vLLM's OpenAI API is under /v1
    assert not (tmp_path / "f.env").exists()  # no secret, no env file


# -- mapping rules ---------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_order_becomes_a_fallback_role_tried_before_the_fallbacks(tmp_path: Path) -> None:
    source = write(
        tmp_path,
        """\
model_list:
  - model_name: chat
    litellm_params: {model: hosted_vllm/big, api_base: "http://gpu:8000/v1", order: 1}
  - model_name: chat
    litellm_params: {model: ollama_chat/small, api_base: "http://laptop:11434", order: 2}
  - model_name: cloud
    litellm_params: {model: gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}
router_settings:
  fallbacks: [{chat: [cloud]}]
""",
    )
    _, report = import_json(source, tmp_path / "f.yaml")
    config = load_imported(tmp_path / "f.yaml", report)
    assert [t.model for t in config.roles["chat"].targets] == ["big"]
    assert [t.model for t in config.roles["chat/order-2"].targets] == ["small"]
    assert config.roles["chat"].fallbacks == ("chat/order-2", "cloud")


def test_mutual_fallbacks_keep_the_first_and_report_the_cycle(tmp_path: Path) -> None:
    source = write(
        tmp_path,
        """\
model_list:
  - model_name: a
    litellm_params: {model: hosted_vllm/a, api_base: "http://h:1/v1"}
  - model_name: b
    litellm_params: {model: hosted_vllm/b, api_base: "http://h:1/v1"}
  - model_name: e
    litellm_params: {model: hosted_vllm/bge-small, api_base: "http://h:1/v1"}
litellm_settings:
  fallbacks: [{a: [b, e]}, {b: [a]}]
  default_fallbacks: [b, nope]
""",
    )
    code, report = import_json(source, tmp_path / "f.yaml")
    config = load_imported(tmp_path / "f.yaml", report)
    assert list(config.backends) == ["h-vllm"]  # one api_base, one backend
    assert config.roles["a"].fallbacks == ("b",)
    assert config.roles["b"].fallbacks == ()
    assert config.roles["e"].kind == "embeddings"  # by its name
    reported = left_out(report)
    assert "'e' serves embeddings, 'a' chat" in reported[9]
    assert "'b' -> 'a' would close a cycle" in reported[9]
    assert (
        reported[10]
        == "litellm_settings.default_fallbacks: default fallback 'nope' is not a role of the import"
    )
    assert code == 1


def test_aliases_that_are_roles_or_name_nothing_are_reported(tmp_path: Path) -> None:
    source = write(
        tmp_path,
        """\
model_list:
  - model_name: a
    litellm_params: {model: hosted_vllm/a, api_base: "http://h:1/v1"}
router_settings:
  model_group_alias:
    a: a
    old: {model: a, hidden: true}
    gone: nothing
""",
    )
    _, report = import_json(source, tmp_path / "f.yaml")
    config = load_imported(tmp_path / "f.yaml", report)
    assert config.aliases == {"old": "a"}
    reported = left_out(report)
    assert "an alias may not have a role's name" in reported[6]
    assert "'nothing' is not a role of the import" in reported[8]


def test_keys_given_twice_and_sections_of_the_wrong_shape_are_reported(tmp_path: Path) -> None:
    source = write(
        tmp_path,
        """\
x-base: &base {model: hosted_vllm/a, api_base: "http://h:1/v1"}
model_list:
  - model_name: a
    litellm_params: {<<: *base, timeout: 5}
    model_info: [not, a, mapping]
router_settings:
  num_retries: 1
  num_retries: 2
  model_group_alias: [a]
general_settings: on
""",
    )
    _, report = import_json(source, tmp_path / "f.yaml")
    config = load_imported(tmp_path / "f.yaml", report)
    assert config.retry.max_attempts == 3  # the last one, as YAML (and so LiteLLM) has it
    assert config.backends["h-vllm"].timeout == 5.0  # merge keys work, and are no duplicates
    notes = {n["line"]: n["why"] for n in report["notes"]}  # type: ignore[union-attr]
    assert notes[7] == "given twice: LiteLLM keeps the one on line 8, so does the import"
    reported = left_out(report)
    assert reported[1].startswith("x-base: not a section")
    assert reported[5] == "model_list[0].model_info: not a mapping: ignored"
    assert reported[9] == "router_settings.model_group_alias: expected {alias: model_name, ...}"
    assert reported[10] == "general_settings: not a mapping of settings"


def test_literal_master_key_and_dollar_braces(tmp_path: Path) -> None:
    source = write(
        tmp_path,
        """\
model_list:
  - model_name: "odd: ${name}"
    litellm_params: {model: "openai/m", api_base: "http://h:1/v1", api_key: "k'ey\\"${X}"}
router_settings:
  model_group_alias: {"old ${name}": "odd: ${name}"}
general_settings:
  master_key: sk-master-literal-1
""",
    )
    code, report = import_json(source, tmp_path / "f.yaml")
    assert code == 0
    config = load_imported(tmp_path / "f.yaml", report)
    assert list(config.roles) == ["odd: ${name}"]
    assert config.aliases == {"old ${name}": "odd: ${name}"}  # written as $${: not read as a reference
    assert config.gateway.api_keys[0].reveal() == "sk-master-literal-1"
    backend = config.backends["h-openai"]
    assert backend.api_key is not None and backend.api_key.reveal() == "k'ey\"${X}"
    assert "sk-master-literal-1" not in (tmp_path / "f.yaml").read_text()


def test_an_existing_env_file_keeps_its_other_lines_and_becomes_0600(tmp_path: Path) -> None:
    env_file = tmp_path / "secrets.env"
    env_file.write_text("OPENAI_API_KEY=sk-kept\nFABRIC_MASTER_KEY=old\n")
    env_file.chmod(0o644)
    source = write(
        tmp_path,
        "model_list: [{model_name: c, litellm_params: {model: gpt-4o}}]\n"
        "general_settings: {master_key: new-master}\n",
    )
    code, _ = import_json(source, tmp_path / "f.yaml", "--env-file", str(env_file))
    assert code == 0
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_file.read_text().splitlines() == ["OPENAI_API_KEY=sk-kept", "FABRIC_MASTER_KEY='new-master'"]
    config = load_config(tmp_path / "f.yaml", environ={})
    assert config.backends["openai"].api_key.reveal() == "sk-kept"  # type: ignore[union-attr]
    assert config.gateway.api_keys[0].reveal() == "new-master"
    assert "env_file: secrets.env" in (tmp_path / "f.yaml").read_text()


def test_every_provider_maps_to_a_kind_aifabric_has() -> None:
    for provider in PROVIDERS.values():
        assert provider.kind in BACKEND_KINDS, provider.name
        assert provider.role_kind is None or provider.role_kind in ROLE_KINDS, provider.name


def test_report_names_secrets_by_variable_never_by_value(tmp_path: Path) -> None:
    _, printed, _ = run(
        [
            "config",
            "import",
            "litellm",
            str(EXAMPLES / "load_balancer.yaml"),
            "--out",
            str(tmp_path / "j.yaml"),
            "--json",
        ]
    )
    assert "sk-uj6F" not in printed and "eYVX71" not in printed
    assert orjson.loads(printed)["secrets"][0] == {
        "name": "FABRIC_OPENAI_API_KEY",
        "line": 9,
        "key": "model_list[0].litellm_params.api_key",
    }
    code, out, _ = run(
        [
            "config",
            "import",
            "litellm",
            str(EXAMPLES / "azure_config_with_tpm.yaml"),
            "--out",
            str(tmp_path / "f.yaml"),
        ]
    )
    assert code == 0
    assert "73g" not in out and "9kj" not in out
    assert "line 6: model_list[0].litellm_params.api_key: a literal secret, moved there as FABRIC_" in out


# -- cannot be read --------------------------------------------------------------------------------


def test_unreadable_files_exit_2_with_the_line(tmp_path: Path) -> None:
    code, out, err = run(
        [
            "config",
            "import",
            "litellm",
            str(EXAMPLES / "hosted_litellm.yaml"),
            "--out",
            str(tmp_path / "f.yaml"),
        ]
    )
    assert (code, out) == (2, "")
    assert err.strip() == (
        f"{EXAMPLES / 'hosted_litellm.yaml'}:9: not valid YAML: found unexpected end of stream "
        "(while scanning a quoted scalar on line 8)"
    )
    assert not (tmp_path / "f.yaml").exists()
    code, _, err = run(["config", "import", "litellm", str(tmp_path / "missing.yaml")])
    assert code == 2 and err.strip() == f"{tmp_path / 'missing.yaml'}: no such file"
    code, _, err = run(["config", "import", "litellm", str(ESTATE), "--out", str(ESTATE)])
    assert code == 2 and "that is the LiteLLM config itself" in err
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    code, _, err = run(["config", "import", "litellm", str(tmp_path / "list.yaml")])
    assert code == 2 and f"{tmp_path / 'list.yaml'}:1: a LiteLLM config is a mapping" in err


def test_the_installed_command_and_its_exit_statuses(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("aifabric")
    env = {**os.environ, "VLLM_API_KEY": "v", "OPENAI_API_KEY": "o", "LITELLM_MASTER_KEY": "m"}
    done = subprocess.run(
        [exe, "config", "import", "litellm", ESTATE, "--out", tmp_path / "fabric.yaml"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith(f"wrote {tmp_path / 'fabric.yaml'}: 4 backends, 4 roles, 3 aliases")
    valid = subprocess.run(
        [exe, "config", "validate", tmp_path / "fabric.yaml"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert (valid.returncode, valid.stdout) == (0, "ok: 3 hosts, 4 backends, 4 roles, 3 aliases\n")
    broken = subprocess.run(
        [exe, "config", "import", "litellm", tmp_path / "nothing.yaml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert broken.returncode == 2 and "no such file" in broken.stderr and "Traceback" not in broken.stderr


def test_rerank_and_transcription_models_become_roles_of_those_kinds(tmp_path: Path) -> None:
    source = write(
        tmp_path,
        """\
model_list:
  - model_name: reranker
    litellm_params: {model: hosted_vllm/BAAI/bge-reranker-base, api_base: "http://gpu:8000/v1"}
  - model_name: speech
    litellm_params: {model: openai/whisper-1, api_key: os.environ/OPENAI_API_KEY}
  - model_name: ranked
    litellm_params: {model: hosted_vllm/jina-small, api_base: "http://gpu:8000/v1"}
    model_info: {mode: rerank}
  - model_name: pictures
    litellm_params: {model: openai/dall-e-3, api_key: os.environ/OPENAI_API_KEY}
""",
    )
    code, out, _ = run(["config", "import", "litellm", str(source), "--out", str(tmp_path / "f.yaml")])
    config = load_config(tmp_path / "f.yaml", environ={"OPENAI_API_KEY": "sk-x"})
    assert {name: role.kind for name, role in config.roles.items()} == {
        "reranker": "rerank",
        "speech": "transcription",
        "ranked": "rerank",
    }
    assert "'reranker' becomes a rerank role: 'BAAI/bge-reranker-base' is a reranker by its name" in out
    assert "'speech' becomes a transcription role: 'whisper-1' is a speech-to-text model by its name" in out
    assert "'pictures' is left out: 'dall-e-3' is for image generation" in out
    assert code == 1  # dall-e has no role kind: reported, so the import is incomplete


def test_imported_clouds_serve_natively_what_their_docs_say_without_an_apis_line(tmp_path: Path) -> None:
    # Chat-only clouds get Responses and Messages translated; OpenAI and Azure's v1 API keep theirs.
    source = write(
        tmp_path,
        """\
model_list:
  - model_name: ds
    litellm_params: {model: deepseek/deepseek-chat, api_key: os.environ/DEEPSEEK_API_KEY}
  - model_name: mistral
    litellm_params: {model: mistral/mistral-small-latest, api_key: os.environ/MISTRAL_API_KEY}
  - model_name: gpt
    litellm_params: {model: gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}
  - model_name: az
    litellm_params: {model: azure/chatgpt-v-2, api_base: "https://res.openai.azure.com", api_key: k}
""",
    )
    _, report = import_json(source, tmp_path / "f.yaml")
    assert "apis:" not in (tmp_path / "f.yaml").read_text()
    config = load_imported(tmp_path / "f.yaml", report)
    table = RoutingTable.build(config)
    native = {
        role: set(table.endpoints[config.roles[role].targets[0].backend].native)
        for role in ("ds", "mistral", "gpt", "az")
    }
    assert native == {
        "ds": set(),
        "mistral": set(),
        "gpt": {ClientApi.RESPONSES, ClientApi.INPUT_TOKENS, ClientApi.TRANSCRIPTION},
        "az": {ClientApi.RESPONSES, ClientApi.TRANSCRIPTION},
    }


def test_out_in_a_missing_directory_is_made_and_an_unwritable_one_is_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "p1" / "deeper" / "fabric.yaml"
    code, _, err = run(["config", "import", "litellm", str(ESTATE), "--out", str(out)])
    assert code == 1, err  # written, with the estate's parts that have no equivalent left out
    assert out.exists() and out.with_suffix(".env").exists()
    assert out.with_suffix(".env").stat().st_mode & 0o777 == 0o600
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    code, _, err = run(["config", "import", "litellm", str(ESTATE), "--out", str(blocker / "fabric.yaml")])
    assert code == 2, (code, err)
    assert err.startswith("cannot write") and str(blocker) in err and "Traceback" not in err


def test_stream_timeouts_that_differ_keep_the_longest(tmp_path: Path) -> None:
    """LiteLLM's proxy example: stream_timeout 60 on two deployments, 0.001 on two fakes; aifabric has one
    stream idle timeout for the gateway, so the longest is kept and the others are noted."""
    out = tmp_path / "fabric.yaml"
    _, report = import_json(EXAMPLES / "proxy_server_config.yaml", out)
    config = load_imported(out, report)
    assert config.retry.stream_idle_timeout == 60.0
    notes = [n for n in report["notes"] if "stream_timeout" in n["key"]]  # type: ignore[union-attr]
    assert notes and all("the longest, 60s, kept" in n["why"] for n in notes), notes
    assert not [k for k in left_out(report).values() if "stream_timeout" in k]
