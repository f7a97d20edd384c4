"""`aifabric deploy kubernetes`: the gateway as N replicas on Kubernetes, sharing state through Redis.

    rendered = render_kubernetes(config, Path("fabric.yaml"), replicas=3)
    rendered.files["aifabric.yaml"]            # ConfigMap, Deployment, Service, PDB (+ Redis): no secret
    rendered.files["aifabric-secret.yaml"]     # the Secret with the env file's values: written 0600

What is rendered, and why:
- ConfigMap `aifabric-config`: the fabric file as written (comments kept), with two values rewritten in
  place: `gateway.env_file` points at the Secret's mount, and `state:` at the Redis the replicas share.
  A mounted ConfigMap and Secret are updated in the pods by the kubelet (no subPath), so with
  `gateway.watch: true` a `kubectl apply` of new ones is reloaded without a restart.
- Secret `aifabric-secrets`: one key, the env file (`fabric.env`), holding every `${VAR}` the fabric file
  uses, valued from this machine's environment or its env file as the loader resolves them. It goes to
  its own file, mode 0600, never to stdout and never into the manifest that may be committed. A fabric
  file with no `gateway.env_file` gets the values as environment variables instead (`envFrom`), which a
  rotation then needs `kubectl rollout restart` to pick up.
- Deployment `aifabric`: N replicas of `aifabric serve` on 0.0.0.0, readiness `/health/ready`,
  liveness `/health/live`, an unprivileged read-only container, spread over nodes when it can be.
  Resource requests come from the measured footprint (bench/README.md, "Footprint": peak RSS 31 MB for
  one worker, 78 MB for two workers and their supervisor; 53 µs of CPU per request at c=64): 64 MiB
  and 100m per worker (twice the measured memory; 100m serves about 1,900 requests/s), limits 4x.
- Service `aifabric` (ClusterIP) on gateway.port, and a PodDisruptionBudget of at most one replica down.
- Redis (`aifabric-redis` Deployment + Service) unless `redis_url` names one or the fabric file already
  says `state: redis://...`: the shared state is health, ejections, stops and reload announcements,
  all rebuilt in seconds, so this Redis keeps nothing on disk.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.metadata
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from aifabric.config.env import EnvResolver
from aifabric.config.nodes import child
from aifabric.config.schema import FabricConfig
from aifabric.errors import CommandError
from aifabric.ops.deploy import (
    CONTAINER_CONFIG,
    CONTAINERFILE_NAME,
    Rendered,
    render_containerfile,
    source_root,
)
from aifabric.ops.secrets.check import check_secrets
from aifabric.ops.secrets.envwrite import render_env

__all__ = [
    "MANIFEST_NAME",
    "MEMORY_PER_WORKER_MIB",
    "SECRET_NAME",
    "render_kubernetes",
]

MANIFEST_NAME = "aifabric.yaml"
SECRET_NAME = "aifabric-secret.yaml"
APP = "aifabric"
SECRET_DIR = "/etc/aifabric/secrets"
SECRET_KEY = "fabric.env"
REDIS_IMAGE = "docker.io/library/redis:7-alpine"
# From bench/README.md ("Footprint"): 31.2 MB peak RSS for one worker, 27.7 MB per worker with two.
# Requests are twice that, rounded up; limits four times the request, for bursts of large bodies.
MEMORY_PER_WORKER_MIB = 64
SUPERVISOR_MIB = 32  # `serve --workers N` (N > 1) has a supervising process of its own
CPU_PER_WORKER_MILLI = 100  # 53 µs per request measured at c=64: ~1,900 requests/s per 100m
LIMIT_FACTOR = 4


def render_kubernetes(
    config: FabricConfig,
    config_path: Path,
    *,
    replicas: int = 2,
    image: str | None = None,
    namespace: str | None = None,
    redis_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Rendered:
    """The manifests for `config` read from `config_path`; raises CommandError when a `${VAR}` the
    Secret needs has no value here."""
    if replicas < 1:
        raise CommandError("--replicas must be at least 1")
    environ = os.environ if environ is None else environ
    text = config_path.read_text(encoding="utf-8")
    version = _version()
    image = image or f"localhost/aifabric:{version}"
    port = config.gateway.port or 8000
    workers = config.gateway.workers
    meta = {"namespace": namespace} if namespace else {}

    own_redis = redis_url is None and not config.state.startswith(("redis", "rediss", "unix"))
    state = redis_url or (f"redis://{APP}-redis:6379/0" if own_redis else None)
    secret_values = _secret_values(config_path, config, environ)
    use_env_file = bool(config.gateway.env_file)
    fabric_text = _rewrite(text, state, f"{SECRET_DIR}/{SECRET_KEY}" if use_env_file else None)

    docs: list[dict[str, Any]] = [
        _config_map(fabric_text, meta),
        _deployment(image, port, workers, replicas, bool(secret_values), use_env_file, meta),
        _service(APP, port, "http", _labels(), meta),
        _pdb(meta),
    ]
    if own_redis:
        docs += _redis(meta)
    header = (
        f"# aifabric gateway on Kubernetes, rendered by `aifabric deploy kubernetes` from "
        f"{config_path.resolve()}.\n# {replicas} replica(s) sharing state through {state or config.state}. "
        f"Secrets: {SECRET_NAME} (not here).\n"
    )
    files = {MANIFEST_NAME: header + yaml.safe_dump_all(docs, sort_keys=False, width=1000)}
    if secret_values:
        secret = _secret(secret_values, use_env_file, meta)
        files[SECRET_NAME] = (
            "# the env file's values: keep this file out of version control\n"
            + yaml.safe_dump(secret, sort_keys=False, width=1000)
        )
    # The pods serve the rewritten file: its `state:` is Redis even when this one says memory.
    served = dataclasses.replace(config, state=state or config.state)
    files[CONTAINERFILE_NAME] = render_containerfile(
        served, source_root(), version, command="deploy kubernetes"
    )
    apply = ["kubectl", "apply"] + (["-n", namespace] if namespace else [])
    commands = [[*apply, "-f", name] for name in (SECRET_NAME, MANIFEST_NAME) if name in files]
    notes = [
        f"build and push the image first: podman build -t {image} -f {CONTAINERFILE_NAME} "
        f"{source_root() or '.'} && podman push {image}",
        "watch it: kubectl rollout status deployment/aifabric; reach it: kubectl port-forward svc/aifabric "
        f"{port}:{port}",
    ]
    local = [b.name for b in config.backends.values() if b.local is not None]
    if local:
        notes.append(
            f"the pods run the gateway only: the local backends ({', '.join(local)}) must run elsewhere "
            "and be reachable from the cluster at the URLs the fabric file gives"
        )
    if not config.gateway.watch:
        notes.append(
            "after applying a changed ConfigMap or Secret: `aifabric config reload --url ...` (or set "
            "gateway.watch: true, or kubectl rollout restart deployment/aifabric)"
        )
    return Rendered(files, commands, notes, private=frozenset({SECRET_NAME}))


def _version() -> str:
    try:
        return importlib.metadata.version("aifabric")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - always installed here
        return "0.0.0"


def _secret_values(config_path: Path, config: FabricConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """Every `${VAR}` of the fabric file, valued as the loader would (environment, then env file)."""
    report = check_secrets(config_path, environ=environ)
    resolver = EnvResolver(environ, Path(config.gateway.env_file) if config.gateway.env_file else None)
    values: dict[str, str] = {}
    missing: list[str] = []
    for ref in report.references:
        if ref.source == "default":
            continue
        value = resolver.lookup(ref.name)
        if value:
            values[ref.name] = value
        else:
            missing.append(ref.name)
    if missing:
        raise CommandError(
            f"no value here for {', '.join(missing)} (the Secret is filled from this machine's environment "
            "and env file): `aifabric secrets check --config FILE` says where each should come from"
        )
    return values


def _rewrite(text: str, state: str | None, env_file: str | None) -> str:
    """The fabric file's text with `state:` and `gateway.env_file` set, comments and layout kept."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    edits: list[tuple[int, int, str]] = []
    appended: list[str] = []
    if state is not None:
        node = child(root, "state")
        if node is not None:
            edits.append((node.start_mark.index, node.end_mark.index, _quoted(state)))
        else:
            appended.append(f"state: {_quoted(state)}  # added by aifabric deploy kubernetes")
    if env_file is not None:
        node = child(child(root, "gateway"), "env_file")
        if node is not None:
            edits.append((node.start_mark.index, node.end_mark.index, _quoted(env_file)))
    for start, end, value in sorted(edits, reverse=True):
        text = text[:start] + value + text[end:]
    if appended:
        text = text.rstrip("\n") + "\n" + "\n".join(appended) + "\n"
    return text


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _labels(component: str = "gateway") -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def _config_map(fabric_text: str, meta: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{APP}-config", "labels": _labels(), **meta},
        "data": {"fabric.yaml": fabric_text},
    }


def _secret(values: Mapping[str, str], as_file: bool, meta: dict[str, str]) -> dict[str, Any]:
    if as_file:
        data = {SECRET_KEY: render_env(values, "the fabric file's secrets (aifabric deploy kubernetes)")}
    else:
        data = dict(values)
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{APP}-secrets", "labels": _labels(), **meta},
        "type": "Opaque",
        "data": encoded,
    }


def _resources(workers: int) -> dict[str, Any]:
    memory = MEMORY_PER_WORKER_MIB * workers + (SUPERVISOR_MIB if workers > 1 else 0)
    cpu = CPU_PER_WORKER_MILLI * workers
    return {
        "requests": {"memory": f"{memory}Mi", "cpu": f"{cpu}m"},
        "limits": {"memory": f"{memory * LIMIT_FACTOR}Mi"},  # no CPU limit: throttling adds latency
    }


def _security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _deployment(
    image: str, port: int, workers: int, replicas: int, secrets: bool, as_file: bool, meta: dict[str, str]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "gateway",
        "image": image,
        "args": ["serve", "--config", CONTAINER_CONFIG, "--host", "0.0.0.0", "--port", str(port)],
        "ports": [{"name": "http", "containerPort": port}],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "readinessProbe": {
            "httpGet": {"path": "/health/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": _resources(workers),
        "securityContext": _security(),
        "volumeMounts": [
            {"name": "config", "mountPath": str(Path(CONTAINER_CONFIG).parent), "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # the workers' shared state (--workers N)
        ],
    }
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"{APP}-config"}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    if secrets and as_file:
        container["volumeMounts"].append({"name": "secrets", "mountPath": SECRET_DIR, "readOnly": True})
        volumes.append({"name": "secrets", "secret": {"secretName": f"{APP}-secrets", "defaultMode": 0o400}})
    elif secrets:
        container["envFrom"] = [{"secretRef": {"name": f"{APP}-secrets"}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP, "labels": _labels(), **meta},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _labels()},
            # One pod at a time, never below the replicas asked for: requests keep being served.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": _labels()},
                "spec": {
                    "securityContext": {
                        "runAsUser": 65534,
                        "runAsGroup": 65534,
                        "fsGroup": 65534,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 30,
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": _labels()},
                        }
                    ],
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _service(
    name: str, port: int, target: str, selector: dict[str, str], meta: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": _labels(), **meta},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": target if target == "http" else "redis", "port": port, "targetPort": target}],
        },
    }


def _pdb(meta: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": APP, "labels": _labels(), **meta},
        # At most one replica evicted at a time (a drain, an upgrade); with one replica that one may go.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels()}},
    }


def _redis(meta: dict[str, str]) -> list[dict[str, Any]]:
    labels = _labels("state")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{APP}-redis", "labels": labels, **meta},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {
                        "runAsUser": 999,
                        "runAsGroup": 999,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "redis",
                            "image": REDIS_IMAGE,
                            # Health, ejections and stops are rebuilt in seconds: nothing kept on disk.
                            "args": ["--save", "", "--appendonly", "no"],
                            "ports": [{"name": "redis", "containerPort": 6379}],
                            "readinessProbe": {
                                "exec": {"command": ["redis-cli", "ping"]},
                                "periodSeconds": 5,
                            },
                            "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10},
                            "resources": {
                                "requests": {"memory": "32Mi", "cpu": "50m"},
                                "limits": {"memory": "128Mi"},
                            },
                            "securityContext": _security(),
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }
    return [deployment, _service(f"{APP}-redis", 6379, "redis", labels, meta)]
