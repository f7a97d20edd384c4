"""From a fabric file's `local:` launch spec to the command line of the process that serves it.

    backends:
      local-chat:
        kind: llama-cpp-python
        url: http://127.0.0.1:8101/v1
        local: {engine: llama-cpp-python, model: smollm2-135m-instruct, port: 8101, context: 2048}

Engines:
- `llama-server`: llama.cpp's own server (the embedded default's chat engine). `make up` builds it
  (scripts/llama-server.sh) and links it into the venv's bin directory; else it is looked up on PATH.
  `/health` answers 503 while the model loads, 200 when ready. `parallel` slots decode together
  (continuous batching); each gets `context` tokens, so `--ctx-size` is context x parallel.
- `llama-cpp-python`: `python -m llama_cpp.server` on a GGUF. It has no /health and loads before it
  listens, so readiness is `GET /v1/models` answering 200 (connection refused while loading).
  `--interrupt_requests False`: its default cuts a running stream when another request arrives.
- `aifabric-embed`: `python -m aifabric.local.embed_server` (ONNX sentence embeddings); `GET /health`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from aifabric.config.schema import BackendConfig, FabricConfig, LocalLaunch
from aifabric.core.paths import local_socket, state_dir
from aifabric.errors import LocalBackendError
from aifabric.local.cores import default_threads
from aifabric.local.models import resolve_model
from aifabric.local.requantize import find_quantizer, requantized

__all__ = [
    "ProcessSpec",
    "default_log_dir",
    "find_llama_server",
    "local_backends",
    "process_spec",
    "with_local_ports",
]


@dataclass(frozen=True)
class ProcessSpec:
    """One process the supervisor runs, and how to tell it is ready."""

    name: str
    argv: tuple[str, ...]
    host: str
    port: int
    ready_path: str  # GET this; 200 means ready
    env: dict[str, str] = field(default_factory=dict)  # added to the supervisor's environment
    unset_env: frozenset[str] = frozenset()  # names (upper case) removed from it, whatever their case
    unset_env_prefixes: tuple[str, ...] = ()  # and names (upper case) that start with one of these
    on_demand: bool = False  # `local.start: on_demand`: not started with the others, but when needed


# llama-cpp-python's server reads its settings from the environment too, case-insensitively and with no
# prefix, and `PORT`/`HOST` there even override --port/--host (llama_cpp/server/__main__.py). A shell
# with PORT set (as `make up PORT=9000` does) would move it onto the gateway's port, HOST=0.0.0.0 would
# expose it, API_KEY would lock the gateway out. The fields of its Settings (0.3.36), plus CONFIG_FILE:
_LLAMA_SERVER_ENV = frozenset(
    name.upper()
    for name in [
        "api_key",
        "cache",
        "cache_size",
        "cache_type",
        "chat_format",
        "chat_template_kwargs",
        "clip_model_path",
        "config_file",
        "disable_ping_events",
        "draft_model",
        "draft_model_num_pred_tokens",
        "embedding",
        "flash_attn",
        "hf_model_repo_id",
        "hf_pretrained_model_name_or_path",
        "hf_tokenizer_config_path",
        "host",
        "interrupt_requests",
        "kv_overrides",
        "last_n_tokens_size",
        "logits_all",
        "lora_base",
        "lora_path",
        "main_gpu",
        "model",
        "model_alias",
        "mul_mat_q",
        "n_batch",
        "n_ctx",
        "n_gpu_layers",
        "n_threads",
        "n_threads_batch",
        "n_ubatch",
        "numa",
        "offload_kqv",
        "port",
        "root_path",
        "rope_freq_base",
        "rope_freq_scale",
        "rope_scaling_type",
        "rpc_servers",
        "seed",
        "split_mode",
        "ssl_certfile",
        "ssl_keyfile",
        "tensor_split",
        "type_k",
        "type_v",
        "use_mlock",
        "use_mmap",
        "verbose",
        "vocab_only",
        "yarn_attn_factor",
        "yarn_beta_fast",
        "yarn_beta_slow",
        "yarn_ext_factor",
        "yarn_orig_ctx",
    ]
)


# llama-server reads every flag from a LLAMA_ARG_* variable too (the flag wins when both are given), and
# LLAMA_API_KEY would lock the gateway out (it sends no key to a local backend): none of them is passed.
_LLAMA_CPP_ENV = frozenset({"LLAMA_API_KEY", "HF_TOKEN"})
_LLAMA_CPP_ENV_PREFIXES = ("LLAMA_ARG_",)
LLAMA_SERVER_FIX = (
    'make up (it builds llama-server once and links it into .venv/bin), or: ln -s "$(scripts/llama-server.sh)'
    '/llama-server" .venv/bin/, or put a llama-server of your own on PATH'
)


def find_llama_server() -> Path | None:
    """llama.cpp's server: the one `make` linked beside this interpreter, else the first on PATH."""
    beside = Path(sys.executable).parent / "llama-server"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("llama-server")
    return Path(found) if found else None


def local_backends(config: FabricConfig) -> list[BackendConfig]:
    """The backends of `config` that `aifabric up` launches, in the file's order."""
    return [b for b in config.backends.values() if b.local is not None]


# What each engine imports, and how to get it: said before a process is started, not as a crash loop.
_ENGINE_MODULES = {
    "llama-cpp-python": (
        ("llama_cpp", "uvicorn", "fastapi", "sse_starlette"),
        # Not `make up`: the embedded default runs llama-server, and the Makefile no longer installs it.
        'pip install "$(scripts/llama-wheel.sh)[server]" (llama-cpp-python built with portable CPU flags; '
        "a native build crashes on CPUs that advertise AVX-512)",
    ),
    "aifabric-embed": (("onnxruntime", "tokenizers", "numpy"), "pip install 'aifabric[local]'"),
}


def _require_engine(backend: str, engine: str) -> None:
    if engine == "llama-server":
        if find_llama_server() is None:
            raise LocalBackendError(
                f"backend {backend!r} needs llama.cpp's llama-server, which is neither in "
                f"{Path(sys.executable).parent} nor on PATH; run: {LLAMA_SERVER_FIX}"
            )
        return
    modules, fix = _ENGINE_MODULES[engine]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise LocalBackendError(
            f"backend {backend!r} needs the {engine} engine, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed in {sys.prefix}; run: {fix}"
        )


def process_spec(backend: BackendConfig, say: Callable[[str], None] | None = None) -> ProcessSpec:
    """The command for a local backend. Resolves the model first, so a missing package is named now;
    with `local.requantize`, the re-encoded weights are made now too (once, cached), said by `say`."""
    local = backend.local
    if local is None:
        raise LocalBackendError(f"backend {backend.name!r} has no `local:` launch spec")
    host = urlsplit(backend.url).hostname or "127.0.0.1"
    threads = local.threads or default_threads()
    # Python children write logs through pipes to files: unbuffered so a crash leaves its last words.
    env = {"PYTHONUNBUFFERED": "1"}
    _require_engine(backend.name, local.engine)
    prefixes: tuple[str, ...] = ()
    if local.engine == "llama-server":
        model = resolve_model(local.model, "llama-server")
        binary = find_llama_server()
        assert binary is not None  # _require_engine said so
        weights = model.path
        if local.requantize is not None:
            quantizer = find_quantizer(binary)
            weights = requantized(backend.name, model.path, local.requantize, quantizer, say=say)
        slots = local.parallel or 1
        argv = [
            str(binary),
            "--model", str(weights),
            "--alias", local.alias or local.model,
            "--ctx-size", str(local.context * slots),  # split evenly: `context` tokens per slot
            "--parallel", str(slots),
            "--threads", str(threads),
            "--threads-batch", str(threads),
            "--host", host,
            "--port", str(local.port),
            "--metrics",  # load signals for the prober (/slots is on by default)
            "--jinja",  # chat templates as Jinja (tool calls, the Responses and Messages APIs)
            "--no-webui",
        ]  # fmt: skip
        if model.chat_template:  # a bundled model whose own template does not serve it well
            argv += ["--chat-template", model.chat_template]
        ready_path = "/health"
        unset = _LLAMA_CPP_ENV
        prefixes = _LLAMA_CPP_ENV_PREFIXES
        env = {}
    elif local.engine == "llama-cpp-python":
        model = resolve_model(local.model, "llama-cpp-python")
        argv = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model.path),
            "--model_alias", local.alias or local.model,
            "--n_ctx", str(local.context),
            "--n_threads", str(threads),
            "--host", host,
            "--port", str(local.port),
            "--interrupt_requests", "False",
        ]  # fmt: skip
        ready_path = "/v1/models"
        unset = _LLAMA_SERVER_ENV
    elif local.engine == "aifabric-embed":
        resolve_model(local.model, "aifabric-embed")
        argv = [
            sys.executable, "-m", "aifabric.local.embed_server",
            "--model", local.model,
            "--threads", str(threads),
            "--host", host,
            "--port", str(local.port),
        ]  # fmt: skip
        if backend.unix_socket:  # the gateway's way in (config.load gives one by default)
            argv += ["--unix-socket", backend.unix_socket]
        ready_path = "/health"
        unset = frozenset()
    else:  # pragma: no cover - the schema's Literal keeps other engines out
        raise LocalBackendError(f"backend {backend.name!r}: unknown local engine {local.engine!r}")
    return ProcessSpec(
        name=backend.name,
        argv=(*argv, *local.extra_args),
        host=host,
        port=local.port,
        ready_path=ready_path,
        env=env,
        unset_env=unset,
        unset_env_prefixes=prefixes,
        on_demand=local.start == "on_demand",
    )


def with_local_ports(config: FabricConfig, base: int) -> FabricConfig:
    """`config` with its local backends renumbered `base`, `base+1`, ... (URLs follow the ports).

    For running a second fabric beside the first, and for tests that must not collide with port 8000.
    """
    backends = dict(config.backends)
    for offset, backend in enumerate(local_backends(config)):
        assert backend.local is not None
        port = base + offset
        parts = urlsplit(backend.url)
        netloc = f"{parts.hostname or '127.0.0.1'}:{port}"
        local: LocalLaunch = replace(backend.local, port=port)
        # The default socket of an embeddings server is named after its port: it moves with it.
        moved = backend.unix_socket == local_socket(backend.local.port)
        backends[backend.name] = replace(
            backend,
            local=local,
            url=urlunsplit(parts._replace(netloc=netloc)),
            unix_socket=local_socket(port) if moved else backend.unix_socket,
        )
    return replace(config, backends=backends)


def default_log_dir(config: FabricConfig) -> Path:
    """Where `aifabric up` writes its local backends' logs: monitoring.log_dir, else the XDG state dir."""
    if config.monitoring.log_dir:
        return Path(config.monitoring.log_dir).expanduser()
    return state_dir() / "logs"
