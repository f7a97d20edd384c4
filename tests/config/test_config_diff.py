"""`aifabric config diff OLD NEW`: the runbook's "Add New Model" and "Change Backend URLs", checked
before they are applied; secrets said to have changed, never shown."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from config_support import SEED, SEED_ENV

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.config.diff import diff_configs
from aifabric.config.load import load_config_text


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, console=Console(out, err))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def seed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SEED_ENV.items():
        monkeypatch.setenv(name, value)


def edited(tmp_path: Path, name: str, *replacements: tuple[str, str], append: str = "") -> Path:
    text = SEED.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text + append)
    return path


def test_the_same_file_has_no_changes_exit_0(seed_env: None) -> None:
    code, out, _ = run(["config", "diff", str(SEED), str(SEED)])
    assert code == 0
    assert out == f"{SEED} -> {SEED}: no changes\n"


def test_add_a_model_change_a_url_retarget_an_alias(tmp_path: Path, seed_env: None) -> None:
    new = edited(
        tmp_path,
        "new.yaml",
        ('url: "http://armitage.pangolin-vega.ts.net:8000/v1"', 'url: "http://armitage.lan:8000/v1"'),
        ("local/reasoner: chat-deep", "local/reasoner: chat-fast"),
        ("  local/embed: embeddings-general\n", ""),
        ("interval: 5m", "interval: 1m"),
        (
            "targets: [{backend: armitage-vllm, model: Qwen2.5-7B-Instruct-AWQ}]",
            "targets: [{backend: armitage-vllm, model: Qwen2.5-7B-Instruct-AWQ}, "
            "{backend: wintermute-vllm, model: Qwen2.5-7B-Instruct-AWQ, weight: 2}]",
        ),
        ("\naliases:", "  chat-code: {kind: chat, targets: [{backend: openai, model: gpt-4.1}]}\n\naliases:"),
        append="retry: {max_attempts: 2}\n",
    )
    code, out, err = run(["config", "diff", str(SEED), str(new)])
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{SEED} -> {new}: ")
    assert (
        "~ backends.armitage-vllm: url: http://armitage.pangolin-vega.ts.net:8000/v1 -> "
        "http://armitage.lan:8000/v1"
    ) in lines
    assert (
        "~ roles.chat-fast: targets: [armitage-vllm/Qwen2.5-7B-Instruct-AWQ] -> "
        "[armitage-vllm/Qwen2.5-7B-Instruct-AWQ, wintermute-vllm/Qwen2.5-7B-Instruct-AWQ (weight 2)]"
    ) in lines
    assert "~ aliases.local/reasoner: chat-deep -> chat-fast" in lines
    assert "- aliases.local/embed" in lines
    assert "~ monitoring: interval: 300.0 -> 60.0" in lines
    assert "~ retry: max_attempts: 4 -> 2" in lines
    assert "+ roles.chat-code: chat role, targets [openai/gpt-4.1]" in lines
    assert not any("secret" in line for line in lines)


def test_a_rotated_secret_is_changed_never_shown(tmp_path: Path, seed_env: None) -> None:
    env_old, env_new = tmp_path / "old.env", tmp_path / "new.env"
    # A variable only the env files set: the environment would win over them.
    env_old.write_text("OPENAI_KEY_FROM_FILE=sk-old-value-1\n")
    env_new.write_text("OPENAI_KEY_FROM_FILE=sk-new-value-2\n")
    base = SEED.read_text().replace("${OPENAI_API_KEY}", "${OPENAI_KEY_FROM_FILE}")
    old = tmp_path / "old.yaml"
    new = tmp_path / "new.yaml"
    old.write_text(base.replace("/podman/apps/litellm/.env", str(env_old)))
    new.write_text(base.replace("/podman/apps/litellm/.env", str(env_new)))
    code, out, _ = run(["config", "diff", str(old), str(new), "--json"])
    assert code == 1
    body = orjson.loads(out)
    assert body["secrets_changed"] == ["backends.openai.api_key"]
    fields = {c["name"]: c["fields"] for c in body["changes"]}
    assert fields["openai"] == ["api_key: changed (secret)"]
    assert fields[""] == [f"env_file: {env_old} -> {env_new}"]
    assert "sk-old-value-1" not in out and "sk-new-value-2" not in out


def test_secret_urls_and_keys_never_leak_through_a_diff() -> None:
    base = """\
gateway: {api_keys: ["%s"]}
state: "redis://:%s@redis.lan:6379/0"
backends:
  a: {kind: openai, url: "https://user:%s@api.example/v1", api_key: "%s"}
roles:
  chat: {kind: chat, targets: [{backend: a, model: m}]}
"""
    old = load_config_text(base % ("gw-old-1", "pw-old-2", "url-old-3", "key-old-4"))
    new = load_config_text(base % ("gw-new-1", "pw-new-2", "url-new-3", "key-new-4"))
    diff = diff_configs(old, new)
    text = "\n".join(diff.lines()) + str(diff.to_dict())
    for secret in ("gw-", "pw-", "url-", "key-"):
        assert secret not in text, text
    assert set(diff.secrets_changed) == {"gateway.api_keys", "state", "backends.a.url", "backends.a.api_key"}


def test_added_and_removed_roles_and_backends(tmp_path: Path, seed_env: None) -> None:
    new = edited(
        tmp_path,
        "new.yaml",
        ("  openai/strong:\n    kind: chat\n    targets: [{backend: openai, model: gpt-4o}]\n", ""),
        ("    fallbacks: [openai/strong]\n", ""),
        (
            '  openai:          {kind: openai, url: "https://api.openai.com/v1", '
            'api_key: "${OPENAI_API_KEY}"}\n',
            "",
        ),
    )
    diff = diff_configs(
        load_config_text(SEED.read_text(), str(SEED)), load_config_text(new.read_text(), str(new))
    )
    lines = diff.lines()
    assert "- roles.openai/strong" in lines and "- backends.openai" in lines
    assert '~ roles.chat-fast: fallbacks: ["openai/strong"] -> []' in lines
    back = diff_configs(
        load_config_text(new.read_text(), str(new)), load_config_text(SEED.read_text(), str(SEED))
    )
    assert "+ roles.openai/strong: chat role, targets [openai/gpt-4o]" in back.lines()
    assert "+ backends.openai: openai at https://api.openai.com/v1" in back.lines()


def test_a_broken_new_file_is_file_line_and_fix(tmp_path: Path, seed_env: None) -> None:
    new = edited(tmp_path, "new.yaml", ("backend: motoko-embed", "backend: motoko-embd"))
    code, _, err = run(["config", "diff", str(SEED), str(new)])
    assert code == 1 and f"{new}:" in err and "motoko-embd" in err and "Traceback" not in err
