"""`aifabric doctor`: every check passing and failing, on real files, real sockets and real DNS lookups.

Hosts are 127.0.0.1, "localhost" (resolves from /etc/hosts) and "no-such-host.invalid" (never resolves,
RFC 6761); nothing but a fake backend on 127.0.0.1 is ever contacted, and only with --probe.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.ops.doctor import Check, DoctorReport, Verdict, diagnose, engine_check, memory_check
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.net import free_port

SECRET = "sk-doctor-secret-value-42"


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), console=Console(out, err))
    return code, out.getvalue() + err.getvalue()


def write_fabric(
    tmp_path: Path,
    *,
    port: int,
    url: str = "http://127.0.0.1:9/v1",
    address: str = "localhost",
    always_on: bool = True,
    env_mode: int | None = 0o600,
    extra: str = "",
) -> Path:
    """A fabric file whose api key comes from an env file beside it (mode `env_mode`; None: no file)."""
    if env_mode is not None:
        env = tmp_path / "fabric.env"
        env.write_text(f"# secrets\nOPENAI_API_KEY={SECRET}\n")
        env.chmod(env_mode)
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text(
        f"""\
gateway:
  host: 127.0.0.1
  port: {port}
  env_file: fabric.env
hosts:
  box: {{address: {address}, always_on: {"true" if always_on else "false"}}}
backends:
  chat: {{host: box, kind: vllm, url: "{url}", api_key: "${{OPENAI_API_KEY}}"}}
{extra}roles:
  chat-fast: {{kind: chat, targets: [{{backend: chat, model: m1}}]}}
"""
    )
    return fabric


def by_name(report: DoctorReport) -> dict[str, Check]:
    return {c.name: c for c in report.checks}


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port with a real listener on it, held by this test process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_sound_fabric_passes_every_check(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path, port=free_port())
    report = diagnose(fabric, environ={})
    checks = by_name(report)
    assert report.exit_code == 0, report.to_dict()
    assert checks["fabric file"].verdict is Verdict.PASS
    assert checks["secrets"].verdict is Verdict.PASS
    assert "${OPENAI_API_KEY}: from env file" in checks["secrets"].details
    assert checks["env file"].verdict is Verdict.PASS and "mode 0600" in checks["env file"].summary
    assert checks["listen port"].verdict is Verdict.PASS
    assert checks["dns localhost"].verdict is Verdict.PASS
    assert "127.0.0.1" in checks["dns localhost"].summary
    assert checks["backend probes"].verdict is Verdict.SKIP  # nothing sent without --probe
    assert SECRET not in json.dumps(report.to_dict())

    code, text = run_cli("doctor", "--config", str(fabric))
    assert code == 0, text
    assert "PASS  listen port" in text and "ready to start (exit 0)" in text
    assert SECRET not in text


def test_yaml_mistakes_are_reported_with_file_and_line(tmp_path: Path) -> None:
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text("roles:\n  chat-fast:\n    kind: chat\n    targets: [{backend: nope, model: m}]\n")
    code, text = run_cli("doctor", "--config", str(fabric))
    assert code == 1
    assert "FAIL  fabric file" in text
    assert f"{fabric}:4: role 'chat-fast' targets backend 'nope'" in text
    assert "SKIP  other checks" in text

    fabric.write_text("roles:\n  chat-fast: {kind: chat\n")  # an unclosed flow mapping
    code, text = run_cli("doctor", "--config", str(fabric), "--json")
    report = json.loads(text)
    assert code == 1 and report["ok"] is False and report["exit_code"] == 1
    failed = report["checks"][0]
    assert failed["name"] == "fabric file" and failed["verdict"] == "FAIL"
    assert failed["details"][0].startswith(f"{fabric}:") and "not valid YAML" in failed["details"][0]


def test_an_unresolved_secret_fails_and_the_other_checks_still_run(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path, port=free_port(), env_mode=None)  # no env file, variable unset
    report = diagnose(fabric, environ={})
    checks = by_name(report)
    assert report.exit_code == 1
    assert checks["fabric file"].verdict is Verdict.PASS  # valid apart from its secrets
    assert checks["secrets"].verdict is Verdict.FAIL
    assert any("OPENAI_API_KEY" in d and "does not exist" in d for d in checks["secrets"].details)
    assert checks["listen port"].verdict is Verdict.PASS  # run on stand-ins for the secret


def test_a_secret_only_in_the_shell_warns_that_a_service_will_not_have_it(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path, port=free_port(), env_mode=None)
    report = diagnose(fabric, environ={"OPENAI_API_KEY": SECRET})
    checks = by_name(report)
    assert report.exit_code == 0
    assert checks["secrets"].verdict is Verdict.WARN
    assert "OPENAI_API_KEY only from this shell's environment" in checks["secrets"].summary
    assert checks["secrets"].fix == f"add OPENAI_API_KEY to {tmp_path / 'fabric.env'} (KEY=VALUE lines)"
    assert checks["env file"].verdict is Verdict.WARN and "does not exist" in checks["env file"].summary
    assert SECRET not in json.dumps(report.to_dict())


def test_a_world_readable_env_file_warns_with_chmod(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path, port=free_port(), env_mode=0o644)
    code, text = run_cli("doctor", "--config", str(fabric))
    assert code == 0, text  # a risk, not a reason it will not start
    assert "WARN  env file" in text and "readable by others (mode 0644)" in text
    assert f"fix: chmod 600 {tmp_path / 'fabric.env'}" in text
    assert SECRET not in text


def test_env_file_lines_that_are_not_key_value_are_located_but_not_shown(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path, port=free_port())
    (tmp_path / "fabric.env").write_text(f"OPENAI_API_KEY={SECRET}\n{SECRET}-pasted-alone\n")
    check = by_name(diagnose(fabric, environ={}))["env file lines"]
    assert check.verdict is Verdict.WARN
    assert check.details == (f"{tmp_path / 'fabric.env'}:2: expected KEY=VALUE",)


def test_a_held_port_fails_and_names_the_process_holding_it(tmp_path: Path, held_port: int) -> None:
    fabric = write_fabric(tmp_path, port=held_port)
    code, text = run_cli("doctor", "--config", str(fabric))
    assert code == 1
    assert "FAIL  listen port" in text
    assert f"port {held_port} on 127.0.0.1 is in use by pid {os.getpid()} (" in text
    assert f"kill {os.getpid()}" in text and "not ready: fix each FAIL first (exit 1)" in text


def test_an_unresolvable_host_fails_and_says_where_it_is_written(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path, port=free_port(), address="no-such-host.invalid")
    report = diagnose(fabric, environ={})
    check = by_name(report)["dns no-such-host.invalid"]
    assert report.exit_code == 1
    assert check.verdict is Verdict.FAIL and "does not resolve" in check.summary
    assert f"{fabric}:6: hosts.box.address" in check.details
    assert "tailscale status" in check.fix


def test_an_unresolvable_workstation_that_may_be_off_only_warns(tmp_path: Path) -> None:
    fabric = write_fabric(
        tmp_path,
        port=free_port(),
        address="no-such-host.invalid",
        url="http://no-such-host.invalid:8000/v1",
        always_on=False,
    )
    report = diagnose(fabric, environ={})
    check = by_name(report)["dns no-such-host.invalid"]
    assert check.verdict is Verdict.WARN and "always_on: false" in check.summary
    assert len(check.details) == 2  # the host's address and the backend's URL
    assert report.exit_code == 0


LOCAL = """\
  local-chat:
    kind: llamacpp
    local: {{engine: llama-server, model: {model}, port: {port}}}
"""


def test_local_models_installed_and_missing(tmp_path: Path) -> None:
    bundled = LOCAL.format(model="smollm2-135m-instruct", port=free_port())
    report = diagnose(write_fabric(tmp_path, port=free_port(), extra=bundled), environ={})
    checks = by_name(report)
    assert checks["model of local-chat"].verdict is Verdict.PASS
    assert "SmolLM2-135M-Instruct" in checks["model of local-chat"].summary
    assert checks["engine llama-server"].verdict is Verdict.PASS  # the binary `make` built runs here
    assert checks["memory"].verdict is Verdict.PASS
    assert checks["port of local-chat"].verdict is Verdict.PASS

    missing = LOCAL.format(model=str(tmp_path / "gone.gguf"), port=free_port())
    fabric = write_fabric(tmp_path, port=free_port(), extra=missing)
    code, text = run_cli("doctor", "--config", str(fabric))
    assert code == 1
    assert "FAIL  model of local-chat" in text and "gone.gguf" in text
    assert f"({fabric}:11)" in text  # the line of local.model


def test_a_local_backend_port_already_held_fails(tmp_path: Path, held_port: int) -> None:
    extra = LOCAL.format(model="smollm2-135m-instruct", port=held_port)
    check = by_name(diagnose(write_fabric(tmp_path, port=free_port(), extra=extra), environ={}))
    assert check["port of local-chat"].verdict is Verdict.FAIL
    assert f"pid {os.getpid()}" in check["port of local-chat"].summary


def _hold_port_in_a_process(argv_tail: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """A real process listening on a free port, its command line ending in `argv_tail`."""
    port = free_port()
    code = (
        "import socket, sys, time; s = socket.socket(); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); print('ready', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, *argv_tail], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc, port


@pytest.mark.parametrize(
    ("argv_tail", "fix"),
    [
        # The embeddings server of a running `aifabric up` is no gateway: no /status to look at.
        (["-m", "aifabric.local.embed_server"], "the embeddings server of an `aifabric up`"),
        # A path that merely contains the name is not aifabric either.
        (["/opt/aifabric/bin/llama-server"], "stop it (`kill "),
        (["/opt/venv/bin/aifabric", "serve"], "aifabric already runs there"),
    ],
)
def test_a_held_port_fix_names_what_holds_it(tmp_path: Path, argv_tail: list[str], fix: str) -> None:
    proc, port = _hold_port_in_a_process(argv_tail)
    try:
        check = by_name(diagnose(write_fabric(tmp_path, port=port), environ={}))["listen port"]
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert check.verdict is Verdict.FAIL
    assert f"pid {proc.pid}" in check.summary
    assert fix in check.fix
    if "aifabric status --url" in check.fix:
        assert "serve" in argv_tail


def test_an_engine_that_does_not_import_or_crashes_fails() -> None:
    # -S: a real interpreter without site-packages, where llama_cpp is not importable.
    check = engine_check("llama-cpp-python", (sys.executable, "-S"))
    assert check.verdict is Verdict.FAIL and "No module named 'llama_cpp'" in check.summary
    # A real interpreter killed by SIGSEGV (its first -c wins), as a mis-built native library does.
    crash = (sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    check = engine_check("llama-cpp-python", crash)
    assert check.verdict is Verdict.FAIL and "SIGSEGV" in check.summary and "portable" in check.fix
    assert engine_check("aifabric-embed").verdict is Verdict.PASS


def test_a_llama_server_that_is_missing_or_crashes_fails_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    missing = engine_check("llama-server")
    assert missing.verdict is Verdict.FAIL and f"neither in {tmp_path} nor on PATH" in missing.summary
    assert "make up" in missing.fix
    binary = tmp_path / "llama-server"  # a real process killed by SIGILL, as a build for another CPU is
    binary.write_text("#!/bin/sh\nkill -ILL $$\n")
    binary.chmod(0o755)
    crashed = engine_check("llama-server")
    assert crashed.verdict is Verdict.FAIL and "SIGILL" in crashed.summary and "portable" in crashed.fix


def test_memory_is_weighed_against_the_models() -> None:
    gib = 1024**3
    assert memory_check(1 * gib, 8 * gib).verdict is Verdict.PASS
    short = memory_check(8 * gib, 1 * gib)
    assert short.verdict is Verdict.WARN and "1,024 MiB available" in short.summary
    assert memory_check(gib, None).verdict is Verdict.SKIP


def test_the_memory_needed_counts_each_llama_server_kv_cache(tmp_path: Path) -> None:
    # SmolLM2-135M: 23,040 B of f16 KV cache a token (30 layers x 3 KV heads x (64 + 64) x 2 B);
    # 8 slots of 2,048 tokens: 16,384 tokens, 360 MiB, beyond the 94 MiB of weights.
    extra = f"""\
  local-chat:
    kind: llamacpp
    local: {{engine: llama-server, model: smollm2-135m-instruct, port: {free_port()},
             context: 2048, parallel: 8}}
"""
    checks = by_name(diagnose(write_fabric(tmp_path, port=free_port(), extra=extra), environ={}))
    assert "KV cache 360 MiB for 16,384 tokens" in checks["model of local-chat"].summary
    weights_only = 94 + 200  # the weights and a process: what the memory check counted before
    needed = int(checks["memory"].summary.split("need about ")[1].split(" MiB")[0].replace(",", ""))
    assert needed >= weights_only + 360


def test_short_memory_for_the_local_models_warns(tmp_path: Path) -> None:
    extra = LOCAL.format(model="smollm2-135m-instruct", port=free_port())
    fabric = write_fabric(tmp_path, port=free_port(), extra=extra)
    check = by_name(diagnose(fabric, environ={}, available_memory=64 * 1024 * 1024))["memory"]
    assert check.verdict is Verdict.WARN and "64 MiB available" in check.summary


def test_probe_runs_the_health_checks_and_only_then_sends_traffic(tmp_path: Path) -> None:
    with FakeBackend(kind="vllm", models=("m1",)) as fb:
        fabric = write_fabric(tmp_path, port=free_port(), url=fb.url)
        code, text = run_cli("doctor", "--config", str(fabric))
        assert code == 0 and fb.requests == []  # DNS only: the backend saw nothing
        code, text = run_cli("doctor", "--config", str(fabric), "--probe")
        assert code == 0, text
        assert "PASS  backend chat" in text and "up:" in text
        assert fb.requests, "--probe must probe the backend"

        fb.set(models=("other-model",))
        code, text = run_cli("doctor", "--config", str(fabric), "--probe")
        assert code == 1
        assert "FAIL  backend chat" in text and "other-model" in text
    # The backend is gone now: down.
    code, text = run_cli("doctor", "--config", str(fabric), "--probe", "--timeout", "2")
    assert code == 1 and "FAIL  backend chat" in text and "aifabric health chat" in text


def test_the_log_dir_must_be_a_writable_directory(tmp_path: Path) -> None:
    taken = tmp_path / "logs-is-a-file"
    taken.write_text("")
    fabric = write_fabric(tmp_path, port=free_port(), extra="", env_mode=0o600)
    fabric.write_text(fabric.read_text() + f"monitoring: {{log_dir: {taken}}}\n")
    check = by_name(diagnose(fabric, environ={}))["log dir"]
    assert check.verdict is Verdict.FAIL and "is not a directory" in check.summary

    fresh = tmp_path / "new" / "logs"
    fabric.write_text(fabric.read_text().replace(str(taken), str(fresh)))
    check = by_name(diagnose(fabric, environ={}))["log dir"]
    assert check.verdict is Verdict.PASS and "will be created" in check.summary
    assert not fresh.exists()  # the doctor looks, it does not create


def test_a_redis_state_store_host_is_looked_up_too(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path, port=free_port())
    fabric.write_text(fabric.read_text() + "state: redis://:pw@no-such-host.invalid:6379/0\n")
    report = diagnose(fabric, environ={})
    checks = by_name(report)
    assert checks["state store"].verdict is Verdict.PASS  # the redis client is installed here
    assert "pw" not in checks["state store"].summary  # the URL's password is redacted
    assert checks["dns no-such-host.invalid"].verdict is Verdict.FAIL
    assert checks["dns no-such-host.invalid"].details == (f"{fabric}:11: state",)
    assert report.exit_code == 1


def test_a_missing_fabric_file_fails() -> None:
    code, text = run_cli("doctor", "--config", "/nonexistent/fabric.yaml")
    assert code == 1 and "/nonexistent/fabric.yaml: the fabric file does not exist" in text


def test_probe_of_a_local_backend_not_started_yet_only_warns(tmp_path: Path) -> None:
    extra = LOCAL.format(model="smollm2-135m-instruct", port=free_port())
    fabric = write_fabric(tmp_path, port=free_port(), url="http://127.0.0.1:9/v1", extra=extra)
    report = diagnose(fabric, environ={}, probe=True, probe_timeout=2)
    checks = by_name(report)
    assert checks["backend local-chat"].verdict is Verdict.WARN
    assert checks["backend local-chat"].fix == "a local backend: `aifabric up` starts it"
    assert checks["backend chat"].verdict is Verdict.FAIL  # nothing listens on port 9: down


def test_a_reference_in_a_comment_is_not_a_secret_to_check(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path, port=free_port())
    fabric.write_text("# api_keys: [${OLD_MASTER_KEY}]\n" + fabric.read_text())
    check = by_name(diagnose(fabric, environ={}))["secrets"]
    assert check.verdict is Verdict.PASS
    assert check.details == ("${OPENAI_API_KEY}: from env file",)


def test_re_encoded_weights_are_weighed_at_their_served_size(tmp_path: Path) -> None:
    """`requantize: q8_0` serves a copy of the GGUF in 8 bits a weight: the memory check counts that
    copy's size (bounded from above), not the 94 MiB Q4_1 file."""

    def needed(requantize: str) -> tuple[int, str]:
        extra = f"""\
  local-chat:
    kind: llamacpp
    local: {{engine: llama-server, model: smollm2-135m-instruct, port: {free_port()}{requantize}}}
"""
        checks = by_name(diagnose(write_fabric(tmp_path, port=free_port(), extra=extra), environ={}))
        summary = checks["memory"].summary
        return int(summary.split("need about ")[1].split(" MiB")[0].replace(",", "")), checks[
            "model of local-chat"
        ].summary

    as_is, _ = needed("")
    served, detail = needed(", requantize: q8_0")
    assert "served as Q8_0 (at most ~" in detail, detail
    assert served - as_is >= 145 - 94, "at least what the Q8_0 copy measures beyond the Q4_1 file"


def test_requantize_checks_that_llama_quantize_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = f"""\
  local-chat:
    kind: llamacpp
    local: {{engine: llama-server, model: smollm2-135m-instruct, port: {free_port()}, requantize: q8_0}}
"""
    fabric = write_fabric(tmp_path, port=free_port(), extra=extra)
    check = by_name(diagnose(fabric, environ={}))["llama-quantize"]
    assert check.verdict is Verdict.PASS and "runs" in check.summary, check
    # Without requantize nothing asks for it.
    bundled = LOCAL.format(model="smollm2-135m-instruct", port=free_port())
    (tmp_path / "plain").mkdir()
    plain = write_fabric(tmp_path / "plain", port=free_port(), extra=bundled)  # its own file
    assert "llama-quantize" not in by_name(diagnose(plain, environ={}))

    # Where it cannot be found: FAIL, with the fix (llama-server alone, beside a stand-in interpreter).
    lone = tmp_path / "bin"
    lone.mkdir()
    (lone / "llama-server").write_text("#!/bin/sh\n")
    (lone / "llama-server").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(lone / "python"))
    monkeypatch.setenv("PATH", str(lone))
    missing = by_name(diagnose(fabric, environ={}))["llama-quantize"]
    assert missing.verdict is Verdict.FAIL and "not beside llama-server" in missing.summary
    assert missing.fix is not None and "make up" in missing.fix and "remove requantize" in missing.fix
