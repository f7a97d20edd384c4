"""Run the gateway as a service: a systemd unit or a compose file, rendered from a fabric file.

    rendered = render_systemd(config, Path("/etc/aifabric/fabric.yaml"))
    rendered.files["aifabric.service"]        # the unit's text
    rendered.commands                         # how to install and start it (argv lists)

What the runbook did with `systemctl restart litellm` and `podman-compose restart`, written down once:
- systemd: `ExecStart` is this installation's own `aifabric` (absolute: the venv's console script),
  `serve --config ABS`, or `up` when the fabric declares local backends (up starts and supervises them).
  `Restart=on-failure`, `ExecReload` sends SIGHUP (serve and up reload their fabric file; up refuses
  a change to the local backends it launched), and hardening
  that leaves the gateway working: read-only system, private /tmp (the workers' shared state lives
  there), writable log dirs. gateway.env_file is deliberately not an `EnvironmentFile=`: systemd would
  fix its values in the environment at start, and the environment wins over the env file, so a rotated
  secret would need a restart. The gateway reads the env file itself, at start and on every reload.
- compose: the gateway alone in a container built from this source tree, the fabric file mounted
  read-only, gateway.env_file passed as `env_file`, host networking when a backend is on loopback.

Secrets are never written into what is rendered: only the path of the env file that holds them.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from aifabric.config.extras import required_extras
from aifabric.config.schema import FabricConfig
from aifabric.core.paths import state_dir
from aifabric.errors import CommandError

__all__ = [
    "COMPOSE_NAME",
    "CONTAINERFILE_NAME",
    "UNIT_NAME",
    "Rendered",
    "aifabric_command",
    "render_compose",
    "render_systemd",
    "source_root",
]

UNIT_NAME = "aifabric.service"
COMPOSE_NAME = "compose.yaml"
CONTAINERFILE_NAME = "Containerfile"
CONTAINER_CONFIG = "/etc/aifabric/fabric.yaml"
SYSTEM_LOG_DIR = Path("/var/log/aifabric")


@dataclass(frozen=True)
class Rendered:
    """Files to write (name -> text) into the output directory, then the commands that install them."""

    files: dict[str, str]
    commands: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    private: frozenset[str] = frozenset()  # files holding secrets: written mode 0600

    def shell(self) -> list[str]:
        return [shlex.join(c) for c in self.commands]


def aifabric_command() -> list[str]:
    """The absolute command of this installation: the venv's `aifabric` script, else `python -m aifabric`.
    `sys.executable` is not resolved: a venv's python is a symlink whose target has no aifabric."""
    python = Path(os.path.abspath(sys.executable))
    script = python.parent / "aifabric"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(python), "-m", "aifabric"]


def source_root() -> Path | None:
    """The source tree this aifabric runs from (a checkout with pyproject.toml), or None if installed."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "src" / "aifabric").is_dir():
        return root
    return None


# -- systemd ----------------------------------------------------------------------------------------


def _unit_word(value: str) -> str:
    """One word of an Exec line: `%` and `$` escaped (systemd expands both), quoted if it has spaces."""
    escaped = value.replace("%", "%%").replace("$", "$$")
    if any(c in escaped for c in " \t\"'\\"):
        return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def _unit_path(value: str) -> str:
    return value.replace("%", "%%")


def _writable_dirs(config: FabricConfig, log_dir: Path | None) -> list[Path]:
    """Directories the service writes to: the log dir and the parents of file alert sinks."""
    dirs = [log_dir] if log_dir is not None else []
    for sink in config.monitoring.sinks:
        if sink.kind == "file" and sink.target:
            dirs.append(Path(os.path.abspath(os.path.expanduser(sink.target))).parent)
    return list(dict.fromkeys(dirs))


def render_systemd(
    config: FabricConfig,
    config_path: Path | None,
    *,
    user: bool = False,
    run_as: str | None = None,
    command: list[str] | None = None,
    unit_dir: Path | None = None,
    output: Path = Path(),
) -> Rendered:
    """`aifabric.service` for `config`, read from `config_path` (None: the embedded default).

    `user`: a unit for the user's own service manager (`systemctl --user`); `run_as`: the system
    user the service runs as (default root). `output` is where the file will be written, for the
    install commands; `unit_dir` where it is installed (default: /etc/systemd/system or
    ~/.config/systemd/user)."""
    from aifabric.local.launch import local_backends

    exe = command or aifabric_command()
    local = [b.name for b in local_backends(config)]
    args = ["up" if local else "serve"]
    if config_path is not None:
        args += ["--config", str(config_path.resolve())]
    log_dir: Path | None = None
    if config.monitoring.log_dir:
        log_dir = Path(os.path.abspath(os.path.expanduser(config.monitoring.log_dir)))
    if local:
        if log_dir is None:
            # A user unit logs where that user's `aifabric up` would by default (core.paths).
            log_dir = SYSTEM_LOG_DIR if not user else state_dir() / "logs"
        args += ["--log-dir", str(log_dir)]
    source = str(config_path.resolve()) if config_path is not None else "the embedded default fabric"

    lines = [
        f"# aifabric gateway, rendered by `aifabric deploy systemd` from {source}.",
        "# Re-render after moving the venv or the fabric file. No secret is written here: the gateway",
        "# reads gateway.env_file itself, at start and on every reload.",
        "[Unit]",
        "Description=aifabric gateway (OpenAI-compatible, health-aware routing)",
        "Wants=network-online.target",
        "After=network-online.target",
        # A crash loop gives up after 5 starts in 2 minutes instead of spinning forever.
        "StartLimitIntervalSec=120",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "Type=exec",
        "ExecStart=" + " ".join(_unit_word(w) for w in [*exe, *args]),
    ]
    if local:
        lines.append(
            "# systemctl reload: roles, aliases and remote backends are re-read; a change to the local "
            f"backends `aifabric up` runs ({', '.join(local)}) is refused and needs systemctl restart."
        )
    else:
        lines.append("# systemctl reload: the gateway re-reads its fabric file; a broken file is refused.")
    lines.append("ExecReload=/bin/kill -HUP $MAINPID")
    lines += [
        "Restart=on-failure",
        "RestartSec=5s",
        # SIGTERM to the main process only: it drains requests and stops its workers/backends itself.
        "KillMode=mixed",
        "TimeoutStopSec=30s",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    env_file = Path(config.gateway.env_file).resolve() if config.gateway.env_file else None
    if env_file is not None:
        # Not EnvironmentFile=: values systemd puts in the environment at start win over the file, and
        # a rotated secret would need a restart. The gateway reads the file at start and on reload.
        lines.append(f"# Secrets: {_unit_path(str(env_file))}, read by the gateway at start and on reload.")
    lines.append("LimitNOFILE=65536")
    if run_as and not user:
        lines += [f"User={run_as}", f"Group={run_as}"]
    lines.append("NoNewPrivileges=yes")
    writable = _writable_dirs(config, log_dir)
    if not user:
        # User managers cannot set up these namespaces without unprivileged user namespaces.
        lines += [
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectKernelLogs=yes",
            "ProtectControlGroups=yes",
            "RestrictNamespaces=yes",
            "RestrictRealtime=yes",
            "RestrictSUIDSGID=yes",
            "LockPersonality=yes",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        ]
        for directory in writable:
            if directory.is_relative_to("/var/log"):
                # systemd creates it, owned by User=, and makes it writable.
                lines.append(f"LogsDirectory={_unit_path(str(directory.relative_to('/var/log')))}")
            else:
                lines.append(f"ReadWritePaths={_unit_path(str(directory))}")
    lines += ["", "[Install]", f"WantedBy={'default.target' if user else 'multi-user.target'}", ""]

    if unit_dir is None:
        unit_dir = Path.home() / ".config/systemd/user" if user else Path("/etc/systemd/system")
    systemctl = ["systemctl", "--user"] if user else ["systemctl"]
    unit_file = Path(os.path.abspath(output / UNIT_NAME))
    commands = [["install", "-D", "-m", "0644", str(unit_file), str(unit_dir / UNIT_NAME)]]
    for directory in writable:
        if user or not directory.is_relative_to("/var/log"):
            owner = ["-o", run_as, "-g", run_as] if run_as and not user else []
            commands.append(["install", "-d", "-m", "0750", *owner, str(directory)])
    commands += [[*systemctl, "daemon-reload"], [*systemctl, "enable", "--now", UNIT_NAME]]
    notes = [
        f"status: {shlex.join([*systemctl, 'status', UNIT_NAME])}; logs: journalctl "
        f"{'--user-unit' if user else '-u'} {UNIT_NAME} -f; reload the fabric file: "
        f"{shlex.join([*systemctl, 'reload', UNIT_NAME])}"
    ]
    if user:
        notes.append("to keep it running after you log out: loginctl enable-linger $USER")
    elif run_as and env_file is not None:
        notes.append(
            f"{run_as} reads the env file itself: {shlex.join(['chown', run_as, str(env_file)])} "
            f"&& chmod 600 {shlex.quote(str(env_file))}"
        )
    elif not run_as:
        notes.append(
            "it runs as root; --run-as USER runs it as a dedicated user (who must read the fabric file)"
        )
    return Rendered({UNIT_NAME: "\n".join(lines)}, commands, notes)


# -- compose ----------------------------------------------------------------------------------------


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _compose_value(value: str) -> str:
    """Compose interpolates `$`: a literal one is `$$`."""
    return value.replace("$", "$$")


def render_containerfile(config: FabricConfig, root: Path | None, version: str, *, command: str) -> str:
    """The gateway's image: this source tree, or the released package, built into wheels (its request
    path compiled) and installed on python:3.11-slim, with exactly the extras serving `config` needs
    (`required_extras`: Redis state, tracing, a PostgreSQL ledger). `command` names what rendered it,
    for the header."""
    extras = required_extras(config)
    wanted = f"[{','.join(extras)}]" if extras else ""
    # Wheels are built in a stage with a C compiler (python:3.11, not -slim), so that the package's
    # request path is compiled (setup.py, docs/performance.md); the image installs them, and no compiler.
    source = (
        ["COPY pyproject.toml setup.py README.md /src/", "COPY src /src/src", f"ARG SPEC='/src{wanted}'"]
        if root is not None
        else [f"ARG SPEC='aifabric{wanted}=={version}'"]
    )
    needs = f" with the extras it needs ({', '.join(extras)})" if extras else ""
    return "\n".join(
        [
            f"# The aifabric gateway alone (no local CPU backends){needs}, rendered by `aifabric {command}`.",
            "FROM docker.io/library/python:3.11 AS wheels",
            *source,
            'RUN pip wheel --no-cache-dir --wheel-dir /wheels "$SPEC"',
            "FROM docker.io/library/python:3.11-slim",
            "COPY --from=wheels /wheels /wheels",
            f"RUN pip install --no-cache-dir 'aifabric{wanted}' --no-index --find-links /wheels"
            " && rm -rf /wheels",
            "USER 65534:65534",
            'ENTRYPOINT ["aifabric"]',
            f'CMD ["serve", "--config", "{CONTAINER_CONFIG}"]',
            "",
        ]
    )


def render_compose(
    config: FabricConfig,
    config_path: Path,
    *,
    output: Path = Path(),
    host_network: bool | None = None,
) -> Rendered:
    """`compose.yaml` (and the `Containerfile` it builds) for the gateway of `config` at `config_path`.
    `host_network` defaults to True when a backend listens on loopback (a bridged container cannot
    reach the host's 127.0.0.1)."""
    from aifabric.local.launch import local_backends

    fabric = config_path.resolve()
    gw = config.gateway
    loopback = [b.name for b in config.backends.values() if _is_loopback(urlsplit(b.url).hostname or "")]
    if host_network is None:
        host_network = bool(loopback)
    root = source_root()
    try:
        version = importlib.metadata.version("aifabric")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - always installed here
        version = "0.0.0"
    out = Path(os.path.abspath(output))
    service: dict[str, Any] = {
        "build": {
            "context": _compose_value(str(root if root is not None else out)),
            "dockerfile": _compose_value(str(out / CONTAINERFILE_NAME)),
        },
        "image": f"localhost/aifabric:{version}",
        "container_name": "aifabric",
        "restart": "unless-stopped",
    }
    if host_network:
        service["network_mode"] = "host"
        service["command"] = ["serve", "--config", CONTAINER_CONFIG]
    else:
        # Inside the container the gateway listens on every interface; the host side keeps gateway.host.
        service["command"] = [
            "serve",
            "--config",
            CONTAINER_CONFIG,
            "--host",
            "0.0.0.0",
            "--port",
            str(gw.port),
        ]
        published = f"{gw.port}:{gw.port}"
        service["ports"] = [published if gw.host in ("0.0.0.0", "::") else f"{gw.host}:{published}"]
    if gw.env_file:
        service["env_file"] = [_compose_value(str(Path(gw.env_file).resolve()))]
    service["environment"] = {"PYTHONUNBUFFERED": "1"}
    # Add ",Z" after "ro" on SELinux hosts (Fedora, RHEL) so the container may read the file.
    service["volumes"] = [f"{_compose_value(str(fabric))}:{CONTAINER_CONFIG}:ro"]
    log_dir = config.monitoring.log_dir
    if log_dir:
        path = _compose_value(os.path.abspath(os.path.expanduser(log_dir)))
        service["volumes"].append(f"{path}:{path}")
    service |= {
        "read_only": True,
        "tmpfs": ["/tmp"],  # the workers' shared state
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "healthcheck": {
            "test": [
                "CMD",
                "python",
                "-c",
                "import urllib.request; "
                f"urllib.request.urlopen('http://127.0.0.1:{gw.port}/health/live', timeout=3)",
            ],
            "interval": "30s",
            "timeout": "5s",
            "retries": 3,
        },
    }
    header = [
        f"# aifabric gateway, rendered by `aifabric deploy compose` from {fabric}.",
        "# Start: podman-compose up -d --build   (or: docker compose up -d --build)",
        "# Logs: podman logs -f aifabric; reload the fabric file: podman kill -s HUP aifabric",
    ]
    if host_network and loopback:
        header.append(f"# Host networking: {', '.join(loopback)} listen on this machine's loopback.")
    text = (
        "\n".join(header)
        + "\n"
        + yaml.safe_dump({"name": "aifabric", "services": {"aifabric": service}}, sort_keys=False, width=1000)
    )
    compose_file = str(out / COMPOSE_NAME)
    commands = [["podman-compose", "-f", compose_file, "up", "-d", "--build"]]
    notes = [
        "with Docker instead: " + shlex.join(["docker", "compose", "-f", compose_file, "up", "-d", "--build"])
    ]
    local = [b.name for b in local_backends(config)]
    if local:
        notes.append(
            f"the container runs the gateway only: the local backends ({', '.join(local)}) must run "
            "elsewhere (`aifabric up` on the host, or `aifabric deploy systemd`)"
        )
    files = {
        COMPOSE_NAME: text,
        CONTAINERFILE_NAME: render_containerfile(config, root, version, command="deploy compose"),
    }
    return Rendered(files, commands, notes)


def write_rendered(rendered: Rendered, output: Path) -> list[Path]:
    """Write the files into `output` (created if missing); returns their paths."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in rendered.files.items():
            path = output / name
            if name in rendered.private:
                # Created 0600 before a byte is written: no window in which others may read it.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(text)
            else:
                path.write_text(text, encoding="utf-8")
                path.chmod(0o644)
            written.append(path)
    except OSError as exc:
        raise CommandError(f"cannot write into {output}: {exc.strerror}") from None
    return written
