"""How to start each target of the benchmark: aifabric, LiteLLM's proxy, the Rust routers.

Peers run from their own venvs under bench/ (created on demand with pinned versions), never from
the project venv, so their dependencies cannot leak into aifabric's. Every target listens on
127.0.0.1 only, and everything that could reach out (LiteLLM's cost map and telemetry,
sglang-router's tokenizer download and metrics listener) is kept on this machine.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchlib.process import TargetProcess
from benchlib.upstream import EMBED_MODEL, SERVED_MODEL, free_port

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
LITELLM_VERSION = "1.108.7"
VLLM_ROUTER_VERSION = "0.1.17"
SGLANG_ROUTER_VERSION = "0.3.2"
LITELLM_KEY = "sk-bench-master-key"

CHAT_ROLE = "chat-fast"  # -> nginx, fixed chat.completion
STREAM_ROLE = "chat-stream"  # -> nginx, fixed event stream
SLOW_ROLE = "chat-slow"  # -> sse_server.py, chunks apart in time
# aifabric only: the same upstream behind `apis: []`, so /v1/responses is translated chunk by chunk
SLOW_TRANSLATED_ROLE = "chat-slow-translated"
EMBED_ROLE = "embeddings-general"  # -> nginx, fixed embedding


@dataclass(frozen=True)
class Upstreams:
    """The three upstream ports. A target that routes by model name gets all three at once (one
    role per upstream); one that cannot (the Rust routers: any model to any worker) is started
    once per upstream, with all three fields set to the same port."""

    json_port: int
    sse_port: int
    slow_port: int

    @classmethod
    def only(cls, port: int) -> Upstreams:
        return cls(port, port, port)


@dataclass(frozen=True)
class Target:
    """One thing to measure. `launch(upstreams, workdir)` returns a process to start, or None
    for `direct` (the load goes to the upstream itself)."""

    name: str
    label: str
    launch: Callable[[Upstreams, Path], TargetProcess | None]
    headers: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    is_aifabric: bool = False
    per_upstream: bool = True  # started once per upstream (cannot pick an upstream by model name)

    @property
    def is_direct(self) -> bool:
        return self.name == "direct"


def ensure_venv(name: str, requirement: str, log: Path) -> Path:
    """bench/.venv-<name> with `requirement` installed; created on first use."""
    venv = BENCH / f".venv-{name}"
    marker = venv / f".installed-{requirement.replace('/', '_')}"
    if not marker.exists():
        print(f"  installing {requirement} into {venv} (once) ...", flush=True)
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", requirement],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        marker.touch()
    return venv


def aifabric_config(up: Upstreams, port: int) -> str:
    """The fabric file of the bench: one vLLM-kind backend per upstream, one role on each."""
    return f"""\
gateway:
  host: 127.0.0.1
  port: {port}
backends:
  bench-json: {{kind: vllm, url: "http://127.0.0.1:{up.json_port}/v1"}}
  bench-sse: {{kind: vllm, url: "http://127.0.0.1:{up.sse_port}/v1"}}
  bench-slow: {{kind: vllm, url: "http://127.0.0.1:{up.slow_port}/v1"}}
  bench-slow-chat-only: {{kind: vllm, url: "http://127.0.0.1:{up.slow_port}/v1", apis: []}}
roles:
  {CHAT_ROLE}:
    kind: chat
    targets: [{{backend: bench-json, model: {SERVED_MODEL}}}]
  {STREAM_ROLE}:
    kind: chat
    targets: [{{backend: bench-sse, model: {SERVED_MODEL}}}]
  {SLOW_ROLE}:
    kind: chat
    targets: [{{backend: bench-slow, model: {SERVED_MODEL}}}]
  {SLOW_TRANSLATED_ROLE}:
    kind: chat
    targets: [{{backend: bench-slow-chat-only, model: {SERVED_MODEL}}}]
  {EMBED_ROLE}:
    kind: embeddings
    targets: [{{backend: bench-json, model: {EMBED_MODEL}}}]
"""


def litellm_config(up: Upstreams) -> str:
    entries = [
        (CHAT_ROLE, SERVED_MODEL, up.json_port),
        (STREAM_ROLE, SERVED_MODEL, up.sse_port),
        (SLOW_ROLE, SERVED_MODEL, up.slow_port),
        (EMBED_ROLE, EMBED_MODEL, up.json_port),
    ]
    models = "".join(
        f"""  - model_name: {name}
    litellm_params: {{model: openai/{model}, api_base: "http://127.0.0.1:{port}/v1", api_key: sk-upstream}}
"""
        for name, model, port in entries
    )
    return f"model_list:\n{models}litellm_settings:\n  telemetry: false\n"


def aifabric_exe() -> str | None:
    exe = REPO / ".venv" / "bin" / "aifabric"
    return str(exe) if exe.exists() else shutil.which("aifabric")


def aifabric_available() -> str | None:
    """None when `aifabric serve` can run here, else why not."""
    exe = aifabric_exe()
    if exe is None:
        return "no aifabric executable (make install)"
    probe = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0 or "--workers" not in probe.stdout:
        return "`aifabric serve --workers` is not available yet"
    return None


@functools.cache
def _aifabric_has_log_level() -> bool:
    exe = aifabric_exe()
    if exe is None:
        return False
    probe = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=30, check=False)
    return "--log-level" in probe.stdout


def make_aifabric(workers: int) -> Target:
    def launch(up: Upstreams, workdir: Path) -> TargetProcess:
        port = free_port()
        cfg = workdir / f"fabric-{port}.yaml"
        cfg.write_text(aifabric_config(up, port))
        exe = aifabric_exe()
        assert exe is not None
        argv = [exe, "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--workers", str(workers)]
        if _aifabric_has_log_level():
            argv += ["--log-level", "error"]  # as the peers run: LiteLLM at ERROR, the routers at error
        return TargetProcess(
            f"aifabric-w{workers}", argv, port, "/health/ready", workdir / f"aifabric-w{workers}.log"
        )

    return Target(
        f"aifabric-w{workers}",
        f"aifabric --workers {workers}",
        launch,
        workers=workers,
        is_aifabric=True,
        per_upstream=False,
    )


def make_litellm(workers: int) -> Target:
    def launch(up: Upstreams, workdir: Path) -> TargetProcess:
        venv = ensure_venv("litellm", f"litellm[proxy]=={LITELLM_VERSION}", workdir / "install-litellm.log")
        port = free_port()
        cfg = workdir / f"litellm-{port}.yaml"
        cfg.write_text(litellm_config(up))
        env = dict(os.environ)
        env.update(
            LITELLM_MASTER_KEY=LITELLM_KEY,
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            LITELLM_TELEMETRY="False",
            LITELLM_LOG="ERROR",
            # No model hub downloads (tokenizers) and no phone-home from any library inside.
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            DISABLE_SCHEMA_UPDATE="true",
        )
        argv = [str(venv / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--num_workers", str(workers)]
        return TargetProcess(
            f"litellm-w{workers}",
            argv,
            port,
            "/health/liveliness",
            workdir / f"litellm-w{workers}.log",
            env=env,
        )

    return Target(
        f"litellm-w{workers}",
        f"LiteLLM {LITELLM_VERSION} ({workers} worker{'s' if workers > 1 else ''})",
        launch,
        headers={"Authorization": f"Bearer {LITELLM_KEY}"},
        workers=workers,
        per_upstream=False,
    )


def make_vllm_router() -> Target:
    def launch(up: Upstreams, workdir: Path) -> TargetProcess:
        venv = ensure_venv(
            "vllm-router", f"vllm-router=={VLLM_ROUTER_VERSION}", workdir / "install-vllm-router.log"
        )
        port = free_port()
        argv = [str(venv / "bin" / "vllm-router"), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--worker-urls", f"http://127.0.0.1:{up.json_port}", "--policy", "round_robin"]
        argv += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
        argv += ["--log-level", "error"]
        return TargetProcess("vllm-router", argv, port, "/health", workdir / "vllm-router.log")

    return Target("vllm-router", f"vllm-router {VLLM_ROUTER_VERSION} (Rust)", launch)


def make_sglang_router() -> Target:
    def launch(up: Upstreams, workdir: Path) -> TargetProcess:
        venv = ensure_venv(
            "sglang-router", f"sglang-router=={SGLANG_ROUTER_VERSION}", workdir / "install-sglang-router.log"
        )
        port = free_port()
        argv = [str(venv / "bin" / "python"), "-m", "sglang_router.launch_router"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        argv += ["--worker-urls", f"http://127.0.0.1:{up.json_port}", "--policy", "round_robin"]
        argv += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
        argv += ["--log-level", "error"]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        return TargetProcess("sglang-router", argv, port, "/health", workdir / "sglang-router.log", env=env)

    return Target("sglang-router", f"sglang-router {SGLANG_ROUTER_VERSION} (Rust)", launch)


def make_direct() -> Target:
    return Target("direct", "direct (nginx)", lambda up, workdir: None)


def all_targets(aifabric_workers: list[int], litellm_workers: list[int]) -> list[Target]:
    """The targets of a full run, in the order they are measured in each round."""
    out = [make_direct()]
    out += [make_aifabric(w) for w in aifabric_workers]
    out += [make_vllm_router(), make_sglang_router()]
    out += [make_litellm(w) for w in litellm_workers]
    return out
