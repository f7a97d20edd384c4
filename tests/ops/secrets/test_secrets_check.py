"""`aifabric secrets check`: every ${VAR} of the fabric file, where it resolves from, the env file's mode
and owner; never a value."""

from __future__ import annotations

import io
import os
import pwd
from pathlib import Path

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.ops.secrets import check_secrets

FABRIC = """\
gateway:
  api_keys: ["${FABRIC_MASTER_KEY}"]
  env_file: secrets.env
backends:
  openai: {kind: openai, url: "https://api.openai.com/v1", api_key: "${OPENAI_API_KEY}"}
  other: {kind: openai, url: "${OTHER_URL:-https://example.com/v1}", api_key: "${MISSING_KEY}"}
roles:
  chat: {kind: chat, targets: [{backend: openai, model: gpt-4o}, {backend: other, model: m}]}
"""


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), console=Console(out, err))
    return code, out.getvalue() + err.getvalue()


def fabric(tmp_path: Path, env_text: str | None, mode: int = 0o600) -> Path:
    path = tmp_path / "fabric.yaml"
    path.write_text(FABRIC, encoding="utf-8")
    if env_text is not None:
        env = tmp_path / "secrets.env"
        env.write_text(env_text, encoding="utf-8")
        env.chmod(mode)
    return path


def test_each_reference_says_where_it_resolves_from(tmp_path: Path) -> None:
    path = fabric(tmp_path, "OPENAI_API_KEY=sk-file-1111\nFABRIC_MASTER_KEY=sk-file-2222\n")
    report = check_secrets(path, environ={"FABRIC_MASTER_KEY": "sk-env-3333"})
    sources = {r.name: r.source for r in report.references}
    assert sources == {
        "FABRIC_MASTER_KEY": "environment",
        "OPENAI_API_KEY": "env file",
        "OTHER_URL": "default",
        "MISSING_KEY": "missing",
    }
    by_name = {r.name: r for r in report.references}
    assert by_name["OPENAI_API_KEY"].used_at == [f"backends.openai.api_key ({path}:5)"]
    assert by_name["FABRIC_MASTER_KEY"].used_at == [f"gateway.api_keys[0] ({path}:2)"]
    assert "another value: the environment's wins" in by_name["FABRIC_MASTER_KEY"].note
    assert report.exit_code == 1
    env = report.env_file
    assert env is not None and env.mode == "0600" and env.variables == 2
    assert env.owner == pwd.getpwuid(os.geteuid()).pw_name and env.warnings == []


def test_cli_names_and_modes_never_values(tmp_path: Path) -> None:
    path = fabric(
        tmp_path, "OPENAI_API_KEY=sk-file-1111\nFABRIC_MASTER_KEY=sk-file-2222\nMISSING_KEY=x9\n", 0o644
    )
    code, out = run_cli("secrets", "check", "--config", str(path))
    assert code == 0, out
    assert f"env file {tmp_path / 'secrets.env'}: mode 0644" in out
    assert "readable by others: chmod 600" in out
    assert "all 4 resolve" in out
    for value in ("sk-file-1111", "sk-file-2222", "x9"):
        assert value not in out
    code, out = run_cli("secrets", "check", "--config", str(path), "--json")
    assert code == 0 and '"source": "env file"' in out and "sk-file" not in out


def test_cli_missing_env_file_and_missing_variable_exit_1(tmp_path: Path) -> None:
    path = fabric(tmp_path, None)
    code, out = run_cli("secrets", "check", "--config", str(path))
    assert code == 1
    assert "does not exist" in out
    assert "missing: FABRIC_MASTER_KEY, OPENAI_API_KEY, MISSING_KEY" in out
    assert f"add MISSING_KEY=... to {tmp_path / 'secrets.env'}" in out


def test_cli_unreadable_yaml_is_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "fabric.yaml"
    path.write_text("gateway:\n  api_keys: [oops\n", encoding="utf-8")
    code, out = run_cli("secrets", "check", "--config", str(path))
    assert code == 1 and f"{path}:3" in out and "Traceback" not in out
