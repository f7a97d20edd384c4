"""`aifabric secrets sync`: the env file filled from a map's sources; Azure Key Vault through Microsoft's
own SDK against a local HTTPS stand-in of its REST API; names printed, never values; all or nothing."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from keyvault_standin import TOKEN, KeyVaultStandIn, StaticCredential

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.config.env import parse_env_file
from aifabric.errors import ConfigError
from aifabric.ops.secrets import load_secrets_map, parse_secrets_map, sync_secrets

OPENAI = "sk-vault-openai-1111"
ROTATED = "sk-vault-openai-2222"
MASTER = "sk-master-from-env-3333"


def run_cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        code = main(list(argv), console=Console(out, err))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, out.getvalue(), err.getvalue()


def standin_options(keyvault: KeyVaultStandIn) -> dict[str, object]:
    # What a test needs to point the real SDK at a loopback vault: skip the check that the challenge's
    # resource is the vault's own domain, and trust the stand-in's CA.
    return {"verify_challenge_resource": False, "connection_verify": str(keyvault.ca_file)}


def write_map(tmp_path: Path, vault: str | None, body: str) -> Path:
    path = tmp_path / "secrets-map.yml"
    path.write_text((f"vault: {vault}\n" if vault else "") + body, encoding="utf-8")
    return path


def test_keyvault_through_the_sdk_fills_the_env_file_0600(tmp_path: Path, keyvault: KeyVaultStandIn) -> None:
    keyvault.secrets["openai-api-key"] = OPENAI
    keyvault.secrets["vllm-key"] = "tok with spaces & $dollar 'quote'"
    smap = load_secrets_map(
        write_map(
            tmp_path,
            keyvault.url,
            "OPENAI_API_KEY: {keyvault: openai-api-key}\n"
            "VLLM_API_KEY: {keyvault: vllm-key}\n"
            "FABRIC_MASTER_KEY: {env: MASTER_SOURCE}\n",
        )
    )
    env_file = tmp_path / ".env"
    credential = StaticCredential()
    result = sync_secrets(
        smap,
        env_file,
        environ={"MASTER_SOURCE": MASTER},
        credential=credential,
        client_options=standin_options(keyvault),
    )
    assert result.failures == [] and result.written
    assert result.changes.added == ["FABRIC_MASTER_KEY", "OPENAI_API_KEY", "VLLM_API_KEY"]
    values, errors = parse_env_file(env_file)
    assert errors == []
    assert values == {
        "OPENAI_API_KEY": OPENAI,
        "VLLM_API_KEY": "tok with spaces & $dollar 'quote'",
        "FABRIC_MASTER_KEY": MASTER,
    }
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # The SDK really went through the challenge: a first request without a token, then with it.
    assert keyvault.requests[0][1] == ""
    assert all(auth == f"Bearer {TOKEN}" for _, auth in keyvault.requests[1:])
    assert {path.split("?")[0].rstrip("/") for path, _ in keyvault.requests} == {
        "/secrets/openai-api-key",
        "/secrets/vllm-key",
    }
    assert credential.scopes and "vault.azure.net" in credential.scopes[0][0]

    # Rotation: one changed value, reported by name.
    keyvault.secrets["openai-api-key"] = ROTATED
    again = sync_secrets(
        smap, env_file, environ={"MASTER_SOURCE": MASTER}, credential=credential,
        client_options=standin_options(keyvault),
    )  # fmt: skip
    assert again.changes.changed == ["OPENAI_API_KEY"] and again.changes.added == []
    assert parse_env_file(env_file)[0]["OPENAI_API_KEY"] == ROTATED


def test_a_failing_vault_secret_leaves_the_file_untouched(tmp_path: Path, keyvault: KeyVaultStandIn) -> None:
    keyvault.secrets["present"] = "v-present"
    keyvault.disabled.add("disabled")
    env_file = tmp_path / ".env"
    env_file.write_text("OLD=keep-me\n", encoding="utf-8")
    before = env_file.stat().st_mtime_ns
    smap = parse_secrets_map(
        f"vault: {keyvault.url}\nA: {{keyvault: present}}\n"
        "B: {keyvault: absent}\nC: {keyvault: disabled}\n",
        "map.yml",
    )
    result = sync_secrets(
        smap, env_file, environ={}, credential=StaticCredential(), client_options=standin_options(keyvault)
    )
    assert not result.written
    whys = {f.entry.name: f.why for f in result.failures}
    assert set(whys) == {"B", "C"}
    assert "no secret 'absent'" in whys["B"]
    assert "403" in whys["C"]
    assert env_file.read_text(encoding="utf-8") == "OLD=keep-me\n"
    assert env_file.stat().st_mtime_ns == before


def test_a_wrong_token_is_an_authentication_failure(tmp_path: Path, keyvault: KeyVaultStandIn) -> None:
    keyvault.secrets["x"] = "v"
    smap = parse_secrets_map(f"vault: {keyvault.url}\nX: {{keyvault: x}}\n", "map.yml")
    result = sync_secrets(
        smap, tmp_path / ".env", environ={}, credential=StaticCredential("wrong-token"),
        client_options=standin_options(keyvault),
    )  # fmt: skip
    assert [f.entry.name for f in result.failures] == ["X"]
    assert "authentication failed" in result.failures[0].why
    assert not (tmp_path / ".env").exists()


def test_an_untrusted_certificate_is_refused(tmp_path: Path, keyvault: KeyVaultStandIn) -> None:
    keyvault.secrets["x"] = "v"
    smap = parse_secrets_map(f"vault: {keyvault.url}\nX: {{keyvault: x}}\n", "map.yml")
    result = sync_secrets(
        smap, tmp_path / ".env", environ={}, credential=StaticCredential(),
        client_options={"verify_challenge_resource": False},  # the system CAs do not know the stand-in
    )  # fmt: skip
    assert len(result.failures) == 1 and "cannot reach" in result.failures[0].why
    assert not (tmp_path / ".env").exists()


def test_cli_file_command_and_env_sources_names_only(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("file-secret-4444\n", encoding="utf-8")
    smap = write_map(
        tmp_path,
        None,
        "FROM_FILE: {file: token.txt}\n"
        "FROM_COMMAND: {command: \"printf '%s' command-secret-5555\"}\n"
        "FROM_ENV: {env: SOURCE_VAR}\n",
    )
    env_file = tmp_path / "out" / "fabric.env"
    env_file.parent.mkdir()
    env_file.write_text("FROM_ENV=stale-6666\nLEFTOVER=gone-7777\n", encoding="utf-8")
    env_file.chmod(0o644)

    code, out, err = run_cli(
        "secrets", "sync", "--map", str(smap), "--env-file", str(env_file), "--dry-run",
        env={"SOURCE_VAR": "env-secret-8888"},
    )  # fmt: skip
    assert code == 0, err
    assert "added: FROM_COMMAND, FROM_FILE" in out
    assert "changed: FROM_ENV" in out and "removed: LEFTOVER" in out and "dry run" in out
    assert parse_env_file(env_file)[0] == {"FROM_ENV": "stale-6666", "LEFTOVER": "gone-7777"}

    code, out, err = run_cli(
        "secrets",
        "sync",
        "--map",
        str(smap),
        "--env-file",
        str(env_file),
        env={"SOURCE_VAR": "env-secret-8888"},
    )
    assert code == 0, err
    assert parse_env_file(env_file)[0] == {
        "FROM_FILE": "file-secret-4444",
        "FROM_COMMAND": "command-secret-5555",
        "FROM_ENV": "env-secret-8888",
    }
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert [p.name for p in env_file.parent.iterdir()] == ["fabric.env"]  # no temp file left behind
    for secret in ("4444", "5555", "6666", "7777", "8888"):
        assert secret not in out + err

    code, out, _ = run_cli(
        "secrets",
        "sync",
        "--map",
        str(smap),
        "--env-file",
        str(env_file),
        env={"SOURCE_VAR": "env-secret-8888"},
    )
    assert code == 0 and "up to date" in out


def test_cli_any_source_failure_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    smap = write_map(
        tmp_path,
        None,
        'GOOD: {command: "echo fine-9999"}\n'
        "BAD_COMMAND: {command: \"printf 'leaked%s' -1212 >&2; exit 3\"}\n"
        "BAD_FILE: {file: /nonexistent/token}\n"
        "BAD_ENV: {env: NOT_SET_ANYWHERE_X}\n",
    )
    env_file = tmp_path / ".env"
    code, out, err = run_cli("secrets", "sync", "--map", str(smap), "--env-file", str(env_file))
    assert code == 1
    assert not env_file.exists()
    assert "3 source(s) failed" in err
    assert f"{smap}:2: BAD_COMMAND" in err and "exit status 3" in err
    assert f"{smap}:3: BAD_FILE" in err and "does not exist" in err
    assert f"{smap}:4: BAD_ENV" in err and "not set" in err
    assert "leaked-1212" not in out + err and "fine-9999" not in out + err


def test_cli_json(tmp_path: Path) -> None:
    smap = write_map(tmp_path, None, 'A: {command: "echo json-secret-3131"}\n')
    code, out, _ = run_cli("secrets", "sync", "--map", str(smap), "--env-file", str(tmp_path / "e"), "--json")
    assert code == 0 and '"added": [\n    "A"\n  ]' in out and "3131" not in out


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("OPENAI_API_KEY: {keyvault: openai-api-key}\n", 1, "names no vault"),
        ("vault: http://kv.vault.azure.net\nX: {env: Y}\n", 1, "https URL"),
        ("X: {vault: y}\n", 1, "unknown source 'vault'"),
        ("X: {env: A, file: b}\n", 1, "exactly one source"),
        ("X: plain-value\n", 1, "exactly one source"),
        ("X: {env: A}\nX: {env: B}\n", 2, "mapped twice"),
        ("1BAD: {env: A}\n", 1, "not a variable name"),
        ("vault: https://kv.vault.azure.net\nX: {keyvault: 'bad name!'}\n", 2, "not a Key Vault secret name"),
        ("X: {env: A\n", 2, "not valid YAML"),
    ],
)
def test_map_mistakes_are_reported_by_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_secrets_map(text, "map.yml")
    problem = info.value.problems[0]
    assert (problem.file, problem.line) == ("map.yml", line)
    assert words in problem.message


def test_cli_map_mistake_is_file_line_and_fix(tmp_path: Path) -> None:
    smap = write_map(tmp_path, None, "OPENAI_API_KEY: {keyvault: openai-api-key}\n")
    code, _, err = run_cli("secrets", "sync", "--map", str(smap), "--env-file", str(tmp_path / ".env"))
    assert code == 1
    assert f"{smap}:1" in err and "vault: https://NAME.vault.azure.net" in err
    assert "Traceback" not in err


def test_the_bare_command_of_the_issue_writes_the_gateways_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`aifabric secrets sync --map secrets-map.yml`, exactly so, where the gateway's files are: the env
    file of ./fabric.yaml when it names one, else ./.env; the command says which."""
    monkeypatch.chdir(tmp_path)
    Path("secrets-map.yml").write_text("FABRIC_MASTER_KEY: {env: FABRIC_MASTER_KEY}\n")
    code, out, err = run_cli("secrets", "sync", "--map", "secrets-map.yml", env={"FABRIC_MASTER_KEY": MASTER})
    assert code == 0, err
    assert "env file: ./.env" in err and "wrote .env" in out and MASTER not in out + err
    assert parse_env_file(".env")[0] == {"FABRIC_MASTER_KEY": MASTER}
    assert stat.S_IMODE(os.stat(".env").st_mode) == 0o600

    Path("fabric.yaml").write_text("gateway: {env_file: fabric.env}\n")
    code, out, err = run_cli("secrets", "sync", "--map", "secrets-map.yml", env={"FABRIC_MASTER_KEY": MASTER})
    assert code == 0, err
    assert f"env file: {tmp_path / 'fabric.env'} (gateway.env_file of ./fabric.yaml" in err
    assert parse_env_file(tmp_path / "fabric.env")[0] == {"FABRIC_MASTER_KEY": MASTER}
