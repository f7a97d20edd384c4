"""`local.requantize: q8_0`: the bundled Q4_1 GGUF re-encoded once by the real llama-quantize (built
beside llama-server by `make`), cached, served by the default's chat backends; what cannot be made
is said with its fix before anything starts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from aifabric.config.defaults import load_default_config
from aifabric.config.load import REQUANTIZE
from aifabric.errors import LocalBackendError
from aifabric.local.gguf import read_metadata
from aifabric.local.launch import find_llama_server, process_spec
from aifabric.local.models import resolve_model
from aifabric.local.requantize import REQUANTIZE_TYPES, find_quantizer, requantized

FILE_TYPE = frozenset({"general.file_type"})
Q4_1, Q8_0 = 3, 7  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_1 and _Q8_0


def smollm2() -> Path:
    return resolve_model("smollm2-135m-instruct", "llama-server").path


def quantizer() -> Path:
    found = find_quantizer(find_llama_server())
    assert found is not None, "make builds llama-quantize beside llama-server (scripts/llama-server.sh)"
    return found


def test_the_config_s_values_are_the_ones_it_can_make() -> None:
    assert set(REQUANTIZE) == set(REQUANTIZE_TYPES) == {"q8_0"}


def test_the_q4_1_gguf_is_re_encoded_once_as_q8_0_and_then_read_from_the_cache(tmp_path: Path) -> None:
    source = smollm2()
    assert read_metadata(source, FILE_TYPE)["general.file_type"] == Q4_1
    said: list[str] = []
    made = requantized("chat", source, "q8_0", quantizer(), cache=tmp_path, say=said.append)
    assert made.parent == tmp_path and made.name.startswith("SmolLM2-135M-Instruct.Q4_1.Q8_0-")
    meta = read_metadata(made)
    assert meta["general.file_type"] == Q8_0
    # The same model: its architecture, vocabulary and chat template are carried over.
    original = read_metadata(source)
    carried = ["general.architecture", "llama.block_count", "tokenizer.ggml.tokens"]
    carried.append("tokenizer.chat_template")
    for key in carried:
        assert meta[key] == original[key], key
    said_once = f"chat: re-encoding {source.name} as Q8_0 for batched decoding (once; cached in {tmp_path})"
    assert said == [said_once]
    assert [p.name for p in tmp_path.iterdir()] == [made.name], "no temporary file is left behind"

    stamp = made.stat().st_mtime_ns
    again = requantized("chat", source, "q8_0", quantizer(), cache=tmp_path, say=said.append)
    assert again == made and made.stat().st_mtime_ns == stamp and len(said) == 1, "made once"
    # A file of the asked type already is served as it is.
    assert requantized("chat", made, "q8_0", quantizer(), cache=tmp_path / "other") == made


def test_the_default_chat_backends_serve_the_q8_0_copy() -> None:
    config = load_default_config()
    for name in ("local-chat-fast", "local-chat-deep"):
        argv = list(process_spec(config.backends[name]).argv)
        served = Path(argv[argv.index("--model") + 1])
        assert served.name.startswith("SmolLM2-135M-Instruct.Q4_1.Q8_0-") and served.is_file()
        assert read_metadata(served, FILE_TYPE)["general.file_type"] == Q8_0


def test_without_llama_quantize_the_fix_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    lone = tmp_path / "bin"
    lone.mkdir()
    (lone / "llama-server").write_text("#!/bin/sh\n")
    assert find_quantizer(lone / "llama-server") is None
    with pytest.raises(LocalBackendError) as err:
        requantized("local-chat-fast", smollm2(), "q8_0", None, cache=tmp_path / "cache")
    message = str(err.value)
    assert "local-chat-fast" in message and "llama-quantize" in message
    assert "make up" in message and "remove requantize" in message
    assert not (tmp_path / "cache").exists()


def test_a_quantizer_that_fails_is_reported_with_its_words_and_leaves_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "llama-quantize"
    broken.write_text("#!/bin/sh\necho 'llama_model_quantize: failed to quantize: out of disk' >&2\nexit 1\n")
    broken.chmod(0o755)
    cache = tmp_path / "cache"
    with pytest.raises(LocalBackendError) as err:
        requantized("chat", smollm2(), "q8_0", broken, cache=cache)
    assert "out of disk" in str(err.value) and "exit 1" in str(err.value)
    assert "remove requantize" in str(err.value)
    assert os.listdir(cache) == [], "the partial file is removed"


def test_a_file_that_is_not_gguf_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(LocalBackendError, match=r"backend 'chat'.*model.gguf is not a GGUF file"):
        requantized("chat", bogus, "q8_0", quantizer(), cache=tmp_path / "cache")
