"""Bundled model names resolve to files that installed packages ship; launch specs become commands."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from aifabric.config.defaults import DEFAULT_CONFIG_PATH, load_default_config
from aifabric.config.load import load_config_text
from aifabric.errors import LocalBackendError
from aifabric.local.launch import find_llama_server, local_backends, process_spec, with_local_ports
from aifabric.local.models import BUNDLED_MODELS, resolve_model


def test_every_bundled_model_is_installed_and_resolves_to_its_file() -> None:
    for name, bundled in BUNDLED_MODELS.items():
        resolved = resolve_model(name, bundled.engines[0])
        assert resolved.path.is_file() and resolved.path.name == bundled.filename
        assert resolved.path.stat().st_size > 10_000_000  # real weights, not a pointer file


def test_the_embeddings_model_comes_with_its_tokenizer() -> None:
    resolved = resolve_model("all-minilm-l6-v2-int8", "aifabric-embed")
    assert resolved.tokenizer is not None and resolved.tokenizer.is_file()


def test_a_bundled_model_for_another_engine_is_refused_with_the_right_names() -> None:
    with pytest.raises(LocalBackendError, match=r"is for the aifabric-embed engine.*smollm2-135m-instruct"):
        resolve_model("all-minilm-l6-v2-int8", "llama-cpp-python")


def test_an_unknown_model_that_is_no_file_lists_the_bundled_ones(tmp_path: Path) -> None:
    with pytest.raises(LocalBackendError, match=r"neither a bundled model \(smollm2-135m-instruct\) nor"):
        resolve_model(str(tmp_path / "missing.gguf"), "llama-cpp-python")


def test_a_model_given_as_a_path_is_used_as_is(tmp_path: Path) -> None:
    gguf = tmp_path / "my-model.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf), "llama-cpp-python").path == gguf
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    with pytest.raises(LocalBackendError, match=r"tokenizer for .* not found"):
        resolve_model(str(onnx), "aifabric-embed")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert resolve_model(str(onnx), "aifabric-embed").tokenizer == tmp_path / "tokenizer.json"


def test_the_embedded_default_is_a_fabric_file_read_by_the_normal_loader() -> None:
    config = load_default_config()
    assert config.source == str(DEFAULT_CONFIG_PATH)
    assert list(config.roles) == ["chat-fast", "chat-deep", "embeddings-general"]
    assert config.aliases == {
        "local/chat": "chat-fast",
        "local/reasoner": "chat-deep",
        "local/embed": "embeddings-general",
    }
    assert {b.name: (b.kind, b.url) for b in local_backends(config)} == {
        "local-chat-fast": ("llamacpp", "http://127.0.0.1:8101/v1"),
        "local-chat-deep": ("llamacpp", "http://127.0.0.1:8102/v1"),
        "local-embed": ("aifabric-embed", "http://127.0.0.1:8103/v1"),
    }


def test_the_default_chat_roles_run_on_llama_server_with_their_context_per_request() -> None:
    config = load_default_config()
    for name, context, slots in (("local-chat-fast", 2048, 8), ("local-chat-deep", 8192, 2)):
        spec = process_spec(config.backends[name])
        argv = list(spec.argv)
        assert argv[0] == str(find_llama_server())
        # The bundled Q4_1 GGUF, re-encoded as Q8_0 for batched decoding (tests/local/test_requantize.py).
        assert Path(argv[argv.index("--model") + 1]).name.startswith("SmolLM2-135M-Instruct.Q4_1.Q8_0-")
        assert argv[argv.index("--alias") + 1] == "smollm2-135m-instruct"
        # llama-server splits --ctx-size evenly over its slots: each request keeps the role's context.
        assert argv[argv.index("--parallel") + 1] == str(slots)
        assert argv[argv.index("--ctx-size") + 1] == str(context * slots)
        assert {"--metrics", "--jinja"} <= set(argv)
        # The GGUF's template adds a system prompt that derails the 135M model (see local.models).
        assert argv[argv.index("--chat-template") + 1] == "chatml"
        assert argv[argv.index("--host") + 1] == "127.0.0.1"
        assert spec.ready_path == "/health"  # 503 while it loads, 200 when ready
        assert "LLAMA_API_KEY" in spec.unset_env and spec.unset_env_prefixes == ("LLAMA_ARG_",)


def test_llama_server_is_looked_for_beside_the_interpreter_then_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_bin, elsewhere = tmp_path / "venv-bin", tmp_path / "elsewhere"
    venv_bin.mkdir()
    elsewhere.mkdir()
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(elsewhere))
    assert find_llama_server() is None
    with pytest.raises(LocalBackendError) as err:
        process_spec(load_default_config().backends["local-chat-fast"])
    assert f"needs llama.cpp's llama-server, which is neither in {venv_bin} nor on PATH" in str(err.value)
    assert "make up" in str(err.value) and "scripts/llama-server.sh" in str(err.value)
    for place in (elsewhere, venv_bin):  # on PATH is found; beside the interpreter comes first
        binary = place / "llama-server"
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
        assert find_llama_server() == binary


def test_a_llama_cpp_python_backend_runs_the_server_with_safe_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine is an extra the default no longer installs: its packages are stood in for on the path,
    # so this test says the same on a fresh machine as on one where llama-cpp-python was installed.
    for name in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    deep = load_default_config().backends["local-chat-deep"]
    assert deep.local is not None
    backend = replace(
        deep,
        kind="llama-cpp-python",
        local=replace(deep.local, engine="llama-cpp-python", parallel=None, requantize=None),
    )
    spec = process_spec(backend)
    argv = list(spec.argv)
    assert argv[1:3] == ["-m", "llama_cpp.server"]
    assert Path(argv[argv.index("--model") + 1]).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert argv[argv.index("--n_ctx") + 1] == "8192"
    assert argv[argv.index("--model_alias") + 1] == "smollm2-135m-instruct"
    assert argv[argv.index("--interrupt_requests") + 1] == "False"  # else a second request cuts a stream
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert (spec.port, spec.ready_path) == (8102, "/v1/models")
    # It reads PORT and HOST from the environment over its flags, and every setting besides.
    assert {"PORT", "HOST", "API_KEY", "MODEL", "N_GPU_LAYERS", "CONFIG_FILE"} <= spec.unset_env


def test_extra_args_and_threads_reach_the_command() -> None:
    config = load_default_config()
    backend = config.backends["local-embed"]
    assert backend.local is not None
    backend = replace(backend, local=replace(backend.local, threads=3, extra_args=("--tokenizer", "x")))
    spec = process_spec(backend)
    assert spec.argv[1:3] == ("-m", "aifabric.local.embed_server")
    assert spec.argv[-2:] == ("--tokenizer", "x")
    assert spec.argv[spec.argv.index("--threads") + 1] == "3"
    assert spec.ready_path == "/health"


def test_local_ports_can_be_moved_and_urls_follow() -> None:
    config = with_local_ports(load_default_config(), 20500)
    assert [(b.local.port if b.local else None, b.url) for b in local_backends(config)] == [
        (20500, "http://127.0.0.1:20500/v1"),
        (20501, "http://127.0.0.1:20501/v1"),
        (20502, "http://127.0.0.1:20502/v1"),
    ]


def test_the_embeddings_server_is_reached_on_a_unix_socket_that_follows_its_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    config = load_default_config()
    embed = config.backends["local-embed"]
    assert embed.unix_socket == f"{tmp_path}/aifabric/embed-8103.sock"
    spec = process_spec(embed)
    assert spec.argv[spec.argv.index("--unix-socket") + 1] == embed.unix_socket
    assert spec.port == 8103  # and its TCP port, for clients that go to it straight
    # The llama-servers stay on TCP only (llama-server listens on one or the other).
    assert [b.unix_socket for b in local_backends(config) if b.kind == "llamacpp"] == [None, None]
    moved = with_local_ports(config, 20500).backends["local-embed"]
    assert moved.unix_socket == f"{tmp_path}/aifabric/embed-20502.sock"
    # Without a runtime directory, a private one under /tmp (a socket's path is at most 107 bytes).
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert load_default_config().backends["local-embed"].unix_socket == (
        f"{tempfile.gettempdir()}/aifabric-{os.getuid()}/embed-8103.sock"
    )


def test_a_unix_socket_written_in_the_file_is_kept_where_the_ports_move(tmp_path: Path) -> None:
    text = (
        "backends:\n"
        "  emb: {kind: aifabric-embed, unix_socket: /run/emb.sock,\n"
        "        local: {engine: aifabric-embed, model: all-minilm-l6-v2-int8, port: 8103}}\n"
        "roles:\n"
        "  e: {kind: embeddings, targets: [{backend: emb, model: all-minilm-l6-v2-int8}]}\n"
    )
    config = with_local_ports(load_config_text(text, "fabric.yaml", environ={}), 20500)
    assert config.backends["emb"].unix_socket == "/run/emb.sock"


def test_a_missing_engine_is_named_with_the_install_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    fast = load_default_config().backends["local-chat-fast"]
    assert fast.local is not None
    backend = replace(fast, kind="llama-cpp-python", local=replace(fast.local, engine="llama-cpp-python"))
    with pytest.raises(LocalBackendError) as err:
        process_spec(backend)
    message = str(err.value)
    assert "needs the llama-cpp-python engine, but llama_cpp" in message and "not installed" in message
    assert "scripts/llama-wheel.sh" in str(err.value)
