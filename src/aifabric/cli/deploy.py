"""`aifabric deploy systemd|compose|kubernetes [--config FILE] [--output DIR]`: run the gateway as a
service.

Writes the unit (or compose file and Containerfile, or the Kubernetes manifests) into DIR and prints the
commands that install and start it. Nothing is installed unless `--install` (systemd: needs root, or
--user). Kubernetes: the Secret's values go to a file of their own, mode 0600, never to stdout.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from aifabric.cli.console import Console
from aifabric.config.defaults import load_config_or_default
from aifabric.core import exit_codes
from aifabric.errors import CommandError

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "deploy"
HELP = (
    "Render a systemd unit, a compose file or Kubernetes manifests that run the gateway (and how to "
    "install them)."
)
_KUBERNETES = (
    "Render Kubernetes manifests: a Deployment of N replicas sharing state through Redis (rendered too, "
    "unless named), a Service, the fabric file as a ConfigMap, its secrets as a Secret (in a file of its "
    "own, mode 0600), readiness and liveness probes, a PodDisruptionBudget, and the Containerfile."
)
_COMPOSE = "Render compose.yaml and the Containerfile it builds: the gateway alone, fabric file read-only."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    systemd = sub.add_parser(
        "systemd", help="aifabric.service for systemd", description="Render aifabric.service."
    )
    compose = sub.add_parser(
        "compose", help="compose.yaml + Containerfile (podman-compose, docker compose)", description=_COMPOSE
    )
    kubernetes = sub.add_parser(
        "kubernetes", help="Deployment, Service, ConfigMap, Secret, PDB (+ Redis)", description=_KUBERNETES
    )
    for p in (systemd, compose, kubernetes):
        p.add_argument("--config", "-c", metavar="FILE", help="fabric file (default: the embedded default)")
        p.add_argument("--output", "-o", metavar="DIR", default=".", help="where to write (default: .)")
    systemd.add_argument("--user", action="store_true", help="a unit for `systemctl --user` (no root)")
    systemd.add_argument("--run-as", metavar="USER", help="system user the service runs as (default: root)")
    systemd.add_argument(
        "--install", action="store_true", help="also install, enable and start it (root, or --user)"
    )
    kubernetes.add_argument("--replicas", type=int, default=2, help="gateway replicas (default 2)")
    kubernetes.add_argument("--image", help="the gateway's image (default: localhost/aifabric:VERSION)")
    kubernetes.add_argument("--namespace", "-n", help="the namespace of every object (default: kubectl's)")
    kubernetes.add_argument(
        "--redis",
        metavar="URL",
        help="an existing Redis for the shared state (default: one is rendered, unless the fabric file "
        "already says state: redis://...)",
    )
    compose.add_argument(
        "--network",
        choices=["auto", "host", "bridge"],
        default="auto",
        help="host networking (auto: when a backend is on loopback) or a bridge with the port published",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    from aifabric.ops.deploy import render_compose, render_systemd, write_rendered

    config = load_config_or_default(args.config)
    output = Path(args.output)
    config_path = Path(args.config) if args.config else None
    if args.target == "systemd":
        rendered = render_systemd(config, config_path, user=args.user, run_as=args.run_as, output=output)
    elif args.target == "kubernetes":
        from aifabric.ops.kubernetes import render_kubernetes

        if config_path is None:
            raise CommandError(
                "a Kubernetes deployment runs the gateway alone, and the embedded default serves only "
                "local backends: give --config FILE"
            )
        rendered = render_kubernetes(
            config,
            config_path,
            replicas=args.replicas,
            image=args.image,
            namespace=args.namespace,
            redis_url=args.redis,
        )
    else:
        if config_path is None:
            raise CommandError(
                "compose runs the gateway alone, and the embedded default serves only local backends: "
                "give --config FILE, or use `aifabric deploy systemd` (it runs `aifabric up`)"
            )
        network = {"auto": None, "host": True, "bridge": False}[args.network]
        rendered = render_compose(config, config_path, output=output, host_network=network)
    for path in write_rendered(rendered, output):
        private = (
            " (mode 0600: secrets; keep it out of version control)" if path.name in rendered.private else ""
        )
        console.print(f"wrote {path}{private}")
    if getattr(args, "install", False):
        return _install(rendered.commands, output, user=args.user, console=console)
    console.print("")
    console.print("install and start it:")
    for line in rendered.shell():
        console.print(f"  {line}")
    for note in rendered.notes:
        console.print(f"{note}")
    return exit_codes.OK


def _install(commands: list[list[str]], output: Path, *, user: bool, console: Console) -> int:
    if not user and os.geteuid() != 0:
        raise CommandError("installing a system unit needs root: run with sudo, or add --user")
    if shutil.which("systemctl") is None:
        raise CommandError("systemctl is not on PATH: this machine does not run systemd")
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        unit = str(output / "aifabric.service")
        check = subprocess.run([analyze, *(["--user"] if user else []), "verify", unit], check=False)
        if check.returncode != 0:
            raise CommandError(f"systemd-analyze verify refused {unit}; nothing was installed")
    for command in commands:
        console.print(f"$ {shlex.join(command)}")
        if subprocess.run(command, check=False).returncode != 0:
            raise CommandError(f"failed: {shlex.join(command)}")
    return exit_codes.OK
