"""A fabric file that is right loads into the values an operator wrote, defaults filled in."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import BASE, SEED, SEED_ENV, Write

from aifabric.config.load import load_config, load_config_text
from aifabric.config.schema import FabricConfig, Secret
from aifabric.config.show import config_to_dict
from aifabric.errors import ConfigError, ProblemKind


def _check_seed(cfg: FabricConfig) -> None:
    assert cfg.gateway.host == "0.0.0.0"
    assert cfg.gateway.port == 8000
    assert cfg.gateway.api_keys == (Secret("master-key-7f3a9c"),)

    assert {name: (h.address, h.always_on) for name, h in cfg.hosts.items()} == {
        "motoko": ("motoko.pangolin-vega.ts.net", True),
        "wintermute": ("wintermute.pangolin-vega.ts.net", False),
        "armitage": ("armitage.pangolin-vega.ts.net", False),
    }
    assert {name: (b.host, b.kind, b.url) for name, b in cfg.backends.items()} == {
        "armitage-vllm": ("armitage", "vllm", "http://armitage.pangolin-vega.ts.net:8000/v1"),
        "wintermute-vllm": ("wintermute", "vllm", "http://wintermute.pangolin-vega.ts.net:8000/v1"),
        "motoko-embed": ("motoko", "vllm", "http://motoko.pangolin-vega.ts.net:8200/v1"),
        "openai": (None, "openai", "https://api.openai.com/v1"),
    }
    assert cfg.backends["openai"].api_key == Secret("sk-test-openai-42d1e8")
    assert cfg.backends["armitage-vllm"].api_key is None

    assert list(cfg.roles) == ["chat-fast", "chat-deep", "embeddings-general", "openai/strong"]
    summary = {
        name: (r.kind, [(t.backend, t.model, t.weight) for t in r.targets], list(r.fallbacks))
        for name, r in cfg.roles.items()
    }
    assert summary == {
        "chat-fast": ("chat", [("armitage-vllm", "Qwen2.5-7B-Instruct-AWQ", 1.0)], ["openai/strong"]),
        "chat-deep": ("chat", [("wintermute-vllm", "Llama-3-8B-Instruct-AWQ", 1.0)], ["openai/strong"]),
        "embeddings-general": ("embeddings", [("motoko-embed", "bge-base-en-v1.5", 1.0)], []),
        "openai/strong": ("chat", [("openai", "gpt-4o", 1.0)], []),
    }
    assert cfg.aliases == {
        "local/chat": "chat-fast",
        "local/reasoner": "chat-deep",
        "local/embed": "embeddings-general",
    }
    assert cfg.resolve_role("local/embed") is cfg.roles["embeddings-general"]
    assert cfg.monitoring.interval == 300.0
    # Unwritten settings keep the schema's defaults.
    assert cfg.retry.deadline == 600.0
    assert cfg.state == "memory"


def test_seed_example_loads_with_secrets_from_the_environment() -> None:
    # The example's env_file (/podman/apps/litellm/.env) does not exist here; every variable it would
    # provide comes from the environment, as under systemd, so that is not an error.
    cfg = load_config(SEED, environ=SEED_ENV)
    _check_seed(cfg)
    assert cfg.source == str(SEED)
    assert cfg.gateway.env_file == "/podman/apps/litellm/.env"


def test_seed_example_loads_with_secrets_from_its_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "litellm.env"
    env_file.write_text(
        "# written by the key vault sync\n"
        "export FABRIC_MASTER_KEY=master-key-7f3a9c\n"
        "OPENAI_API_KEY='sk-test-openai-42d1e8'\n"
    )
    text = SEED.read_text().replace("/podman/apps/litellm/.env", str(env_file))
    cfg = load_config_text(text, "fabric.yaml", environ={})
    _check_seed(cfg)
    assert cfg.gateway.env_file == str(env_file)


def test_environment_wins_over_env_file(write: Write, tmp_path: Path) -> None:
    (tmp_path / "secrets.env").write_text("KEY=from-file\nOTHER=other-from-file\n")
    path = write(
        BASE
        + """\
gateway:
  env_file: secrets.env
  api_keys: ["${KEY}", "${OTHER}"]
"""
    )
    cfg = load_config(path, environ={"KEY": "from-environment"})
    assert cfg.gateway.api_keys == (Secret("from-environment"), Secret("other-from-file"))
    # A relative env_file is relative to the fabric file, not to the current directory.
    assert cfg.gateway.env_file == str(tmp_path / "secrets.env")


def test_env_file_formats(write: Write, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "\n"
        "# comment\n"
        "PLAIN=plain-value  # inline comment\n"
        "export EXPORTED=exported\n"
        "SINGLE='single # not a comment'\n"
        'DOUBLE="double \\"quoted\\""\n'
        "EQUALS=a=b=c\n"
    )
    path = write(
        BASE
        + """\
gateway:
  env_file: .env
  api_keys: ["${PLAIN}", "${EXPORTED}", "${SINGLE}", "${DOUBLE}", "${EQUALS}"]
"""
    )
    keys = [k.reveal() for k in load_config(path, environ={}).gateway.api_keys]
    assert keys == ["plain-value", "exported", "single # not a comment", 'double "quoted"', "a=b=c"]


def test_references_inside_longer_strings_defaults_and_literal_dollars(write: Write) -> None:
    path = write(
        BASE.replace('"http://box.example:8000/v1"', '"http://${VLLM_HOST}:${VLLM_PORT}/v1"')
        + """\
gateway:
  port: ${PORT}
  api_keys: ["Bearer-${TOKEN}", "${UNSET_WITH_DEFAULT:-fallback}", "$${NOT_A_REFERENCE}"]
"""
    )
    env = {"VLLM_HOST": "gpu1", "VLLM_PORT": "8001", "PORT": "9000", "TOKEN": "abc"}
    cfg = load_config(path, environ=env)
    assert cfg.backends["box-vllm"].url == "http://gpu1:8001/v1"
    assert cfg.gateway.port == 9000  # a plain ${PORT} is typed like a number written in place
    keys = [k.reveal() for k in cfg.gateway.api_keys]
    assert keys == ["Bearer-abc", "fallback", "${NOT_A_REFERENCE}"]


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0), ("45", 45.0)],
)
def test_durations(write: Write, written: str, seconds: float) -> None:
    path = write(BASE + f"monitoring: {{interval: {written}}}\nretry: {{deadline: {written}}}\n")
    cfg = load_config(path, environ={})
    assert cfg.monitoring.interval == seconds
    assert cfg.retry.deadline == seconds


@pytest.mark.parametrize(
    ("written", "size"),
    [("32MiB", 32 * 1024 * 1024), ("1MB", 1_000_000), ("512KiB", 524_288), ("4096", 4096)],
)
def test_sizes(write: Write, written: str, size: int) -> None:
    path = write(BASE + f"gateway: {{max_body_bytes: {written}}}\n")
    assert load_config(path, environ={}).gateway.max_body_bytes == size


def test_every_section_and_key(write: Write) -> None:
    path = write(
        """\
gateway: {host: 127.0.0.1, port: 0, workers: 2, connect_timeout: 500ms, max_body_bytes: 1MiB}
retry:
  deadline: 2m
  try_timeout: 30s
  max_attempts: 3
  backoff_base: 100ms
  backoff_max: 1s
  max_retry_after: 5s
  warmup_wait: 45s
hosts:
  here: {address: 127.0.0.1}
backends:
  local-chat:
    host: here
    kind: llama-cpp-python
    timeout: 2m
    health: {interval: 5s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 3,
             consecutive_failures: 5, base_ejection: 30s, max_ejection: 10m}
    local: {engine: llama-cpp-python, model: smollm2, port: 8101, threads: 2, context: 4096,
            alias: chat, extra_args: ["--verbose", "False"]}
roles:
  chat:
    kind: chat
    description: the one chat role
    targets:
      - {backend: local-chat, model: chat, weight: 3}
aliases: {}
monitoring:
  interval: 1m
  probe_interval: 15s
  log_dir: /var/log/aifabric
  sinks:
    - {kind: log}
    - {kind: webhook, target: "http://127.0.0.1:9/hook", min_severity: critical}
state: redis://127.0.0.1:6379/0
"""
    )
    cfg = load_config(path, environ={})
    assert (cfg.gateway.port, cfg.gateway.workers, cfg.gateway.connect_timeout) == (0, 2, 0.5)
    assert cfg.gateway.max_body_bytes == 1024 * 1024
    assert (cfg.retry.deadline, cfg.retry.max_attempts, cfg.retry.warmup_wait) == (120.0, 3, 45.0)
    backend = cfg.backends["local-chat"]
    assert backend.url == "http://127.0.0.1:8101/v1"  # a local backend's URL follows from its port
    assert backend.timeout == 120.0
    assert backend.health.max_ejection == 600.0
    assert backend.health.consecutive_failures == 5
    assert backend.local is not None
    assert (backend.local.engine, backend.local.threads, backend.local.extra_args) == (
        "llama-cpp-python",
        2,
        ("--verbose", "False"),
    )
    assert cfg.hosts["here"].always_on is True
    assert cfg.roles["chat"].targets[0].weight == 3.0
    assert cfg.roles["chat"].description == "the one chat role"
    assert cfg.monitoring.probe_interval == 15.0
    assert [(s.kind, s.min_severity) for s in cfg.monitoring.sinks] == [
        ("log", "info"),
        ("webhook", "critical"),
    ]
    assert cfg.state == "redis://127.0.0.1:6379/0"


def test_yaml_anchors_and_merge_keys_for_shared_settings() -> None:
    text = "x-health: &slow-probe {interval: 1m, timeout: 10s}\n" + BASE.replace(
        'url: "http://box.example:8000/v1"}',
        'url: "http://box.example:8000/v1", health: {<<: *slow-probe, timeout: 5s}}',
    ).replace('url: "http://box.example:8080/v1"}', 'url: "http://box.example:8080/v1", health: *slow-probe}')
    cfg = load_config_text(text, "fabric.yaml", environ={})
    assert (cfg.backends["box-vllm"].health.interval, cfg.backends["box-vllm"].health.timeout) == (60.0, 5.0)
    assert (cfg.backends["box-embed"].health.interval, cfg.backends["box-embed"].health.timeout) == (
        60.0,
        10.0,
    )


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/fabric.yaml", environ={})
    (problem,) = info.value.problems
    assert problem.file == "/nonexistent/fabric.yaml"
    assert "does not exist" in problem.message


def test_the_loaded_config_keeps_where_each_key_is_and_which_variables_it_uses() -> None:
    """What the doctor reports from (no second parse of the file): key lines, ${VAR} references."""
    text = (
        "gateway:\n"
        "  port: 8000\n"
        "backends:\n"
        "  gpu:\n"
        "    kind: vllm\n"
        "    url: http://gpu:8000/v1\n"
        "    api_key: ${GPU_KEY}\n"
        "roles:\n"
        "  chat: {kind: chat, targets: [{backend: gpu, model: m}]}\n"
        "monitoring:\n"
        "  log_dir: ${LOGS:-/tmp/logs}\n"
    )
    cfg = load_config_text(text, "fabric.yaml", environ={"GPU_KEY": "k"})
    lines = cfg.loaded.key_lines
    assert (lines["gateway.port"], lines["backends.gpu.api_key"], lines["monitoring.log_dir"]) == (2, 7, 11)
    assert cfg.loaded.env_references == {"GPU_KEY": False, "LOGS": True}
    assert "loaded" not in config_to_dict(cfg), "facts about the load are not settings"


def test_problems_say_whether_they_are_about_the_file_or_its_environment() -> None:
    text = "gateway:\n  port: eighty\n  api_keys: ${MISSING_KEY}\n"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "fabric.yaml", environ={})
    kinds = {p.kind: p.line for p in caught.value.problems}
    assert kinds == {ProblemKind.FILE: 2, ProblemKind.ENV: 3}


def test_balance_defaults_to_least_load_where_targets_report_load_and_overflow_loads() -> None:
    text = BASE.replace(
        "    targets: [{backend: box-vllm, model: qwen}]\n",
        "    targets: [{backend: box-vllm, model: qwen}]\n"
        "    fallbacks: [chat-deep]\n"
        "    overflow: {queue_depth: 4, estimated_wait: 30s}\n",
    ).replace(
        "    targets: [{backend: box-vllm, model: llama}]\n",
        "    targets: [{backend: box-vllm, model: llama}]\n    balance: least_outstanding\n",
    )
    cfg = load_config_text(text, "fabric.yaml", environ={})
    assert cfg.roles["chat-fast"].balance == "least_load"  # vLLM reports its load
    assert cfg.roles["chat-deep"].balance == "least_outstanding"  # as written
    assert cfg.roles["embed"].balance == "p2c"  # TEI reports none: latency and in-flight count
    overflow = cfg.roles["chat-fast"].overflow
    assert overflow is not None
    assert (overflow.queue_depth, overflow.estimated_wait) == (4, 30.0)
    assert config_to_dict(cfg)["roles"]["chat-fast"]["overflow"] == {"queue_depth": 4, "estimated_wait": 30.0}
