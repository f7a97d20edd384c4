"""`aifabric deploy`: the rendered unit and compose file parse, name absolute paths, never hold a secret.

The unit is checked by `systemd-analyze verify` where the machine has it (it knows every directive and
that ExecStart is executable), and always by a strict parse of its sections and keys. Nothing is
installed: `--install` is not run here; the unit's own ExecStart and ExecReload are, as systemd would.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.ops.deploy import aifabric_command, source_root
from aifabric.ops.status import gateway_status
from aifabric.testing.fake_backend import FakeBackend
from aifabric.testing.net import free_port

SECRET = "sk-deploy-secret-value-7"
MASTER = "sk-deploy-master-key-9"

# Every directive the renderer may write, by section: a typo would not be one of them.
KNOWN = {
    "Unit": {"Description", "Wants", "After", "StartLimitIntervalSec", "StartLimitBurst"},
    "Service": {
        "Type", "ExecStart", "ExecReload", "Restart", "RestartSec", "KillMode", "TimeoutStopSec",
        "Environment", "EnvironmentFile", "LimitNOFILE", "User", "Group", "NoNewPrivileges",
        "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "RestrictNamespaces",
        "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "RestrictAddressFamilies",
        "ReadWritePaths", "LogsDirectory",
    },
    "Install": {"WantedBy"},
}  # fmt: skip


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), console=Console(out, err))
    return code, out.getvalue() + err.getvalue()


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (keys may repeat), failing on anything systemd would not read."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"line {number}: {raw!r}"
            name = line[1:-1]
            assert name in KNOWN and name not in sections, f"line {number}: section {name!r}"
            current = sections[name] = {}
            continue
        assert current is not None, f"line {number} is outside a section"
        key, sep, value = line.partition("=")
        assert sep and key.isalnum() and value.strip(), f"line {number}: {raw!r}"
        assert key in KNOWN[name], f"line {number}: {key} is not a [{name}] directive here"
        current.setdefault(key, []).append(value)
    return sections


def verify_with_systemd(unit: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # parse_unit has checked it; this machine has no systemd to ask
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    complaints = [line for line in proc.stderr.splitlines() if unit.name in line]
    assert proc.returncode == 0 and not complaints, proc.stderr


def write_fabric(tmp_path: Path, *, backend_url: str, extra: str = "", name: str = "fabric.yaml") -> Path:
    env = tmp_path / "secrets.env"
    env.write_text(f"OPENAI_API_KEY={SECRET}\nFABRIC_MASTER_KEY={MASTER}\n")
    env.chmod(0o600)
    fabric = tmp_path / name
    fabric.write_text(
        f"""\
gateway:
  host: 127.0.0.1
  port: 8000
  api_keys: ["${{FABRIC_MASTER_KEY}}"]
  admin_keys: ["${{FABRIC_MASTER_KEY}}"]
  env_file: secrets.env
backends:
  motoko-embed: {{kind: vllm, url: "{backend_url}", api_key: "${{OPENAI_API_KEY}}"}}
{extra}roles:
  embeddings-general: {{kind: embeddings, targets: [{{backend: motoko-embed, model: bge}}]}}
"""
    )
    return fabric


def test_systemd_unit_runs_this_aifabric_with_absolute_paths(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    fabric = write_fabric(
        tmp_path,
        backend_url="http://motoko.pangolin-vega.ts.net:8200/v1",
        extra=f"monitoring: {{log_dir: {logs}}}\n",
    )
    out = tmp_path / "out"
    code, text = run_cli("deploy", "systemd", "--config", str(fabric), "--output", str(out))
    assert code == 0, text
    unit_file = out / "aifabric.service"
    unit_text = unit_file.read_text()
    unit = parse_unit(unit_text)
    service = unit["Service"]

    argv = shlex.split(service["ExecStart"][0])
    exe = aifabric_command()
    assert argv == [*exe, "serve", "--config", str(fabric.resolve())]
    assert Path(argv[0]).is_absolute() and os.access(argv[0], os.X_OK)
    assert service["Restart"] == ["on-failure"] and service["RestartSec"] == ["5s"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # The gateway reads the env file itself (at start and on reload): systemd must not fix its values.
    assert "EnvironmentFile" not in service
    assert f"# Secrets: {tmp_path / 'secrets.env'}, read by the gateway at start and on reload." in unit_text
    assert service["NoNewPrivileges"] == ["yes"] and service["ProtectSystem"] == ["strict"]
    assert service["ReadWritePaths"] == [str(logs)]
    assert service["LimitNOFILE"] == ["65536"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    verify_with_systemd(unit_file)

    for shown in (unit_text, text):
        assert SECRET not in shown and MASTER not in shown
    assert f"install -D -m 0644 {unit_file} /etc/systemd/system/aifabric.service" in text
    assert f"install -d -m 0750 {logs}" in text
    assert "systemctl enable --now aifabric.service" in text


def test_a_user_unit_and_a_dedicated_user(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path, backend_url="http://10.0.0.5:8200/v1")
    out = tmp_path / "user"
    code, text = run_cli("deploy", "systemd", "--config", str(fabric), "--output", str(out), "--user")
    assert code == 0, text
    unit = parse_unit((out / "aifabric.service").read_text())
    assert unit["Install"]["WantedBy"] == ["default.target"]
    assert "ProtectSystem" not in unit["Service"]  # user managers cannot set up those namespaces
    assert unit["Service"]["NoNewPrivileges"] == ["yes"]
    assert f"{Path.home()}/.config/systemd/user/aifabric.service" in text
    assert "systemctl --user enable --now aifabric.service" in text and "loginctl enable-linger" in text

    out = tmp_path / "system"
    code, text = run_cli("deploy", "systemd", "-c", str(fabric), "-o", str(out), "--run-as", "aifabric")
    assert code == 0, text
    unit = parse_unit((out / "aifabric.service").read_text())
    assert unit["Service"]["User"] == ["aifabric"] and unit["Service"]["Group"] == ["aifabric"]
    verify_with_systemd(out / "aifabric.service")


def test_local_backends_run_under_up_with_its_log_dir_and_no_reload(tmp_path: Path) -> None:
    local = (
        "  local-chat:\n    kind: llama-cpp-python\n"
        "    local: {engine: llama-cpp-python, model: smollm2-135m-instruct, port: 8101}\n"
    )
    fabric = write_fabric(tmp_path, backend_url="http://127.0.0.1:8200/v1", extra=local)
    code, text = run_cli("deploy", "systemd", "--config", str(fabric), "--output", str(tmp_path))
    assert code == 0, text
    unit = parse_unit((tmp_path / "aifabric.service").read_text())
    argv = shlex.split(unit["Service"]["ExecStart"][0])
    assert argv[len(aifabric_command()) :] == [
        "up", "--config", str(fabric.resolve()), "--log-dir", "/var/log/aifabric",
    ]  # fmt: skip
    assert unit["Service"]["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # up reloads on SIGHUP too
    assert unit["Service"]["LogsDirectory"] == ["aifabric"]  # systemd creates it, writable
    verify_with_systemd(tmp_path / "aifabric.service")


def test_paths_with_spaces_and_percent_signs_are_quoted_and_escaped(tmp_path: Path) -> None:
    odd = tmp_path / "my fabric 100%"
    odd.mkdir()
    fabric = write_fabric(odd, backend_url="http://10.0.0.5:8200/v1")
    code, text = run_cli("deploy", "systemd", "--config", str(fabric), "--output", str(tmp_path))
    assert code == 0, text
    service = parse_unit((tmp_path / "aifabric.service").read_text())["Service"]
    # systemd reads `%%` as `%` and keeps a double-quoted word whole.
    argv = [word.replace("%%", "%") for word in shlex.split(service["ExecStart"][0])]
    assert argv[-2:] == ["--config", str(fabric.resolve())]
    assert "EnvironmentFile" not in service
    verify_with_systemd(tmp_path / "aifabric.service")


def test_compose_mounts_the_fabric_file_read_only_and_passes_the_env_file(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path, backend_url="http://motoko.pangolin-vega.ts.net:8200/v1")
    out = tmp_path / "compose"
    code, text = run_cli("deploy", "compose", "--config", str(fabric), "--output", str(out))
    assert code == 0, text
    compose_text = (out / "compose.yaml").read_text()
    service = yaml.safe_load(compose_text)["services"]["aifabric"]
    assert f"{fabric.resolve()}:/etc/aifabric/fabric.yaml:ro" in service["volumes"]
    assert service["env_file"] == [str(tmp_path / "secrets.env")]
    assert service["ports"] == ["127.0.0.1:8000:8000"]  # published where gateway.host says
    assert service["command"] == [
        "serve", "--config", "/etc/aifabric/fabric.yaml", "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip
    assert "network_mode" not in service
    assert service["restart"] == "unless-stopped" and service["read_only"] is True
    assert "/health/live" in " ".join(service["healthcheck"]["test"])
    for shown in (compose_text, (out / "Containerfile").read_text(), text):
        assert SECRET not in shown and MASTER not in shown
    assert f"podman-compose -f {out / 'compose.yaml'} up -d --build" in text

    # What the Containerfile copies exists in the build context (setup.py among it: the wheel stage
    # compiles the request path); a COPY --from= copies the wheels from that stage, not the context.
    context = Path(service["build"]["context"])
    assert service["build"]["dockerfile"] == str(out / "Containerfile")
    if source_root() is not None:
        copied = [
            line
            for line in (out / "Containerfile").read_text().splitlines()
            if line.startswith("COPY ") and not line.startswith("COPY --from=")
        ]
        assert any("setup.py" in line for line in copied)
        assert copied, "the image is built from this source tree"
        for line in copied:
            for src in line.split()[1:-1]:
                assert (context / src).exists(), src


def test_compose_uses_the_host_network_when_a_backend_is_on_loopback(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path, backend_url="http://127.0.0.1:8200/v1")
    code, text = run_cli("deploy", "compose", "--config", str(fabric), "--output", str(tmp_path))
    assert code == 0, text
    service = yaml.safe_load((tmp_path / "compose.yaml").read_text())["services"]["aifabric"]
    assert service["network_mode"] == "host" and "ports" not in service
    assert service["command"] == ["serve", "--config", "/etc/aifabric/fabric.yaml"]
    code, _ = run_cli("deploy", "compose", "-c", str(fabric), "-o", str(tmp_path), "--network", "bridge")
    service = yaml.safe_load((tmp_path / "compose.yaml").read_text())["services"]["aifabric"]
    assert code == 0 and service["ports"] == ["127.0.0.1:8000:8000"]


def test_compose_needs_a_fabric_file(tmp_path: Path) -> None:
    code, text = run_cli("deploy", "compose", "--output", str(tmp_path))
    assert code == 1 and "give --config FILE" in text
    assert not (tmp_path / "compose.yaml").exists()


@pytest.mark.parametrize("target", ["systemd", "compose"])
def test_a_broken_fabric_file_renders_nothing(tmp_path: Path, target: str) -> None:
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text("roles: {chat: {kind: chat, targets: [{backend: gone, model: m}]}}\n")
    code, text = run_cli("deploy", target, "--config", str(fabric), "--output", str(tmp_path / "out"))
    assert code == 1 and "backend 'gone'" in text
    assert not (tmp_path / "out").exists()


def test_the_units_commands_start_reload_and_stop_a_gateway(tmp_path: Path) -> None:
    """ExecStart run as systemd would (with the unit's environment only), ExecReload's SIGHUP picks up an
    edited fabric file and secrets rotated by `aifabric secrets sync` (no restart), SIGTERM stops it."""
    with FakeBackend(kind="vllm", models=("bge",)) as fb:
        port = free_port()
        fabric = write_fabric(tmp_path, backend_url=fb.url)
        fabric.write_text(fabric.read_text().replace("port: 8000", f"port: {port}"))
        code, text = run_cli("deploy", "systemd", "--config", str(fabric), "--output", str(tmp_path))
        assert code == 0, text
        service = parse_unit((tmp_path / "aifabric.service").read_text())["Service"]
        argv = [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(service["ExecStart"][0])]
        env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}  # the unit's Environment= lines
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while not gateway_status(url, timeout=1, api_key=MASTER).reachable:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the unit's ExecStart never served"
                time.sleep(0.05)

            def models(key: str) -> set[str] | int:
                auth = {"authorization": f"Bearer {key}"}
                response = httpx.get(url + "/v1/models", headers=auth, timeout=5)
                if response.status_code != 200:
                    return response.status_code
                return {m["id"] for m in response.json()["data"]}

            assert models(MASTER) == {"embeddings-general"}
            fabric.write_text(fabric.read_text() + "aliases: {local/embed: embeddings-general}\n")
            # Rotate both secrets the runbook's way: the map's sources, then a reload.
            secrets_map = tmp_path / "secrets-map.yml"
            secrets_map.write_text(
                'FABRIC_MASTER_KEY: {command: "echo sk-rotated-master"}\n'
                'OPENAI_API_KEY: {command: "echo sk-rotated-backend"}\n'
            )
            code, text = run_cli("secrets", "sync", "--map", str(secrets_map), "--config", str(fabric))
            assert code == 0 and "changed: FABRIC_MASTER_KEY, OPENAI_API_KEY" in text, text
            assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while models("sk-rotated-master") != {"embeddings-general", "local/embed"}:
                assert time.monotonic() < deadline, "SIGHUP did not reload the fabric file and its secrets"
                time.sleep(0.05)
            assert models(MASTER) == 401
            fb.clear_requests()
            response = httpx.post(
                url + "/v1/embeddings",
                json={"model": "local/embed", "input": "x"},
                headers={"authorization": "Bearer sk-rotated-master"},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            sent = [r for r in fb.requests if r.path.endswith("/embeddings")]
            assert sent and sent[-1].headers["authorization"] == "Bearer sk-rotated-backend"
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()


def image_extras(containerfile: str) -> list[str]:
    """The extras the image's `pip install` asks for: `'/src[redis,otel]'` -> ["redis", "otel"]."""
    (install,) = [line for line in containerfile.splitlines() if line.startswith("RUN pip install")]
    spec = shlex.split(install)[4]  # RUN pip install --no-cache-dir SPEC ...
    return spec.partition("[")[2].partition("]")[0].split(",") if "[" in spec else []


@pytest.mark.parametrize(
    ("section", "extras"),
    [
        ("", []),
        ("state: redis://10.0.0.9:6379/0\n", ["redis"]),
        ("keys: rediss://keys.lan:6380/1\n", ["redis"]),
        ("keys: sqlite:///var/lib/aifabric/keys.db\n", []),
        ("tracing: {endpoint: http://otel-collector:4318}\n", ["otel"]),
        ("usage: postgresql://aifabric@db.lan:5432/usage\n", ["postgres"]),
        ("usage: /var/lib/aifabric/usage.db\n", []),
        (
            "state: unix:///run/redis.sock\ntracing: {endpoint: http://c:4318}\nusage: postgres://db/u\n",
            ["redis", "otel", "postgres"],
        ),
    ],
)
def test_the_compose_image_installs_the_extras_the_fabric_file_needs(
    tmp_path: Path, section: str, extras: list[str]
) -> None:
    fabric = write_fabric(tmp_path, backend_url="http://10.0.0.5:8200/v1", extra=section)
    code, text = run_cli("deploy", "compose", "--config", str(fabric), "--output", str(tmp_path / "o"))
    assert code == 0, text
    containerfile = (tmp_path / "o" / "Containerfile").read_text()
    assert image_extras(containerfile) == extras
    assert containerfile.splitlines()[0].endswith("rendered by `aifabric deploy compose`.")
