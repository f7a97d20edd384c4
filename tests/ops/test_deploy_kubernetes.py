"""`aifabric deploy kubernetes`: manifests valid against the Kubernetes schemas (kubernetes-validate,
strict), the fabric file as a ConfigMap that loads as the pods will load it, its secrets in a Secret
written to a file of its own (0600), never in the manifest or on stdout."""

from __future__ import annotations

import base64
import io
import shlex
import stat
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from aifabric.cli.console import Console
from aifabric.cli.main import main
from aifabric.config.env import parse_env_text
from aifabric.config.load import load_config_text
from aifabric.ops.kubernetes import MEMORY_PER_WORKER_MIB

SECRET = "sk-k8s-openai-4242"
MASTER = "sk-k8s-master-1717"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

FABRIC = """\
gateway:
  port: 8080
  api_keys: ["${FABRIC_MASTER_KEY}"]   # the master key
  env_file: secrets.env
backends:
  gpu: {kind: vllm, url: "http://vllm-router.llm.svc:8000/v1"}   # a production-stack router
  openai: {kind: openai, url: "https://api.openai.com/v1", api_key: "${OPENAI_API_KEY}"}
roles:
  chat-fast: {kind: chat, targets: [{backend: gpu, model: qwen}], fallbacks: [openai/strong]}
  openai/strong: {kind: chat, targets: [{backend: openai, model: gpt-4o}]}
"""


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), console=Console(out, err))
    return code, out.getvalue() + err.getvalue()


def write_fabric(tmp_path: Path, text: str = FABRIC, env: str | None = None) -> Path:
    path = tmp_path / "fabric.yaml"
    path.write_text(text)
    (tmp_path / "secrets.env").write_text(
        env if env is not None else f"OPENAI_API_KEY={SECRET}\nFABRIC_MASTER_KEY={MASTER}\nUNUSED=zzz\n"
    )
    return path


def validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                first = str(exc).splitlines()[0]
                raise AssertionError(
                    f"{doc['kind']} {doc['metadata']['name']} ({version}): {first}"
                ) from None


def by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_manifests_are_valid_and_secrets_stay_in_their_0600_file(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path)
    out = tmp_path / "k8s"
    code, text = run_cli(
        "deploy", "kubernetes", "--config", str(fabric), "--replicas", "3", "--output", str(out)
    )
    assert code == 0, text
    manifest = (out / "aifabric.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    secret_text = (out / "aifabric-secret.yaml").read_text()
    secret = yaml.safe_load(secret_text)
    validate([*docs, secret])
    objects = by_kind(docs)
    assert set(objects) == {
        ("ConfigMap", "aifabric-config"),
        ("Deployment", "aifabric"),
        ("Service", "aifabric"),
        ("PodDisruptionBudget", "aifabric"),
        ("Deployment", "aifabric-redis"),
        ("Service", "aifabric-redis"),
    }

    # Secrets: in the 0600 file only (base64 in the Secret), never in the manifest or on stdout.
    assert stat.S_IMODE((out / "aifabric-secret.yaml").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "aifabric.yaml").stat().st_mode) == 0o644
    for shown in (manifest, text, secret_text):
        assert SECRET not in shown and MASTER not in shown
    env_text = base64.b64decode(secret["data"]["fabric.env"]).decode()
    values, errors = parse_env_text(env_text)
    assert errors == [] and values == {"OPENAI_API_KEY": SECRET, "FABRIC_MASTER_KEY": MASTER}  # no UNUSED

    # The Deployment: N replicas of serve, probes on the health routes, requests from the footprint.
    deployment = objects[("Deployment", "aifabric")]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == [
        "serve", "--config", "/etc/aifabric/fabric.yaml", "--host", "0.0.0.0", "--port", "8080",
    ]  # fmt: skip
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080}]
    assert container["resources"]["requests"]["memory"] == f"{MEMORY_PER_WORKER_MIB}Mi"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/etc/aifabric"] == "config" and mounts["/etc/aifabric/secrets"] == "secrets"
    assert "envFrom" not in container  # the env file is mounted: a rotation is read on reload
    assert objects[("Service", "aifabric")]["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http"}
    ]
    assert objects[("PodDisruptionBudget", "aifabric")]["spec"]["maxUnavailable"] == 1

    # The ConfigMap is the fabric file as written (comments kept), pointed at the Secret and the Redis,
    # and it loads as a pod loads it.
    fabric_text = objects[("ConfigMap", "aifabric-config")]["data"]["fabric.yaml"]
    assert "# a production-stack router" in fabric_text and "# the master key" in fabric_text
    config = load_config_text(fabric_text, "/etc/aifabric/fabric.yaml", environ=values)
    assert config.state == "redis://aifabric-redis:6379/0"
    assert config.gateway.env_file == "/etc/aifabric/secrets/fabric.env"
    assert set(config.roles) == {"chat-fast", "openai/strong"}

    assert "kubectl apply -f aifabric-secret.yaml" in text and "kubectl apply -f aifabric.yaml" in text
    assert (out / "Containerfile").is_file()


def test_a_named_redis_is_used_and_none_is_rendered(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path)
    code, text = run_cli(
        "deploy", "kubernetes", "-c", str(fabric), "-o", str(tmp_path / "o"),
        "--redis", "rediss://redis.shared.svc:6380/2", "--namespace", "ai", "--image", "reg.lan/aifabric:1",
    )  # fmt: skip
    assert code == 0, text
    docs = [d for d in yaml.safe_load_all((tmp_path / "o" / "aifabric.yaml").read_text()) if d]
    validate(docs)
    assert not any(d["metadata"]["name"] == "aifabric-redis" for d in docs)
    assert all(d["metadata"]["namespace"] == "ai" for d in docs)
    objects = by_kind(docs)
    fabric_text = objects[("ConfigMap", "aifabric-config")]["data"]["fabric.yaml"]
    config = load_config_text(
        fabric_text, "f.yaml", environ={"OPENAI_API_KEY": "x", "FABRIC_MASTER_KEY": "y"}
    )
    assert config.state == "rediss://redis.shared.svc:6380/2"
    assert (
        objects[("Deployment", "aifabric")]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "reg.lan/aifabric:1"
    )
    assert "kubectl apply -n ai -f aifabric.yaml" in text


def test_without_an_env_file_secrets_are_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("FABRIC_MASTER_KEY", MASTER)
    text = FABRIC.replace("  env_file: secrets.env\n", "").replace("  workers: 1\n", "")
    text = text.replace("  port: 8080\n", "  port: 8080\n  workers: 3\n")
    fabric = write_fabric(tmp_path, text)
    code, out = run_cli(
        "deploy", "kubernetes", "-c", str(fabric), "-o", str(tmp_path / "o"), "--replicas", "1"
    )
    assert code == 0, out
    docs = [d for d in yaml.safe_load_all((tmp_path / "o" / "aifabric.yaml").read_text()) if d]
    secret = yaml.safe_load((tmp_path / "o" / "aifabric-secret.yaml").read_text())
    validate([*docs, secret])
    container = by_kind(docs)[("Deployment", "aifabric")]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "aifabric-secrets"}}]
    assert base64.b64decode(secret["data"]["OPENAI_API_KEY"]).decode() == SECRET
    # Three workers per pod: three workers' memory and their supervisor.
    assert container["resources"]["requests"]["memory"] == f"{3 * MEMORY_PER_WORKER_MIB + 32}Mi"
    assert container["resources"]["requests"]["cpu"] == "300m"


def test_a_secret_with_no_value_here_renders_nothing(tmp_path: Path) -> None:
    fabric = write_fabric(tmp_path, env="OPENAI_API_KEY=only-this\n")
    code, text = run_cli("deploy", "kubernetes", "-c", str(fabric), "-o", str(tmp_path / "o"))
    assert code == 1 and "FABRIC_MASTER_KEY" in text and "secrets.env" in text
    assert not (tmp_path / "o").exists()


def test_kubernetes_needs_a_fabric_file(tmp_path: Path) -> None:
    code, text = run_cli("deploy", "kubernetes", "-o", str(tmp_path))
    assert code == 1 and "--config FILE" in text


@pytest.mark.parametrize(
    ("section", "extras"),
    [
        ("", ["redis"]),  # state: memory here, but the pods share the Redis rendered beside them
        ("tracing: {endpoint: http://otel-collector.obs.svc:4318}\n", ["redis", "otel"]),
        ("usage: postgresql://aifabric@pg.db.svc:5432/usage\n", ["redis", "postgres"]),
    ],
)
def test_the_image_installs_the_extras_the_pods_need(tmp_path: Path, section: str, extras: list[str]) -> None:
    fabric = write_fabric(tmp_path, FABRIC + section)
    code, text = run_cli("deploy", "kubernetes", "-c", str(fabric), "-o", str(tmp_path / "o"))
    assert code == 0, text
    containerfile = (tmp_path / "o" / "Containerfile").read_text()
    (install,) = [line for line in containerfile.splitlines() if line.startswith("RUN pip install")]
    spec = shlex.split(install)[4]
    assert spec.partition("[")[2].partition("]")[0].split(",") == extras
    assert containerfile.splitlines()[0].endswith("rendered by `aifabric deploy kubernetes`.")
