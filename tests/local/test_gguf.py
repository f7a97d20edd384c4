"""The GGUF metadata reader behind doctor's KV-cache estimate: a file written here byte by byte, the
bundled SmolLM2 model, and files that are not GGUF."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from aifabric.local.gguf import GgufError, kv_cache_bytes_per_token, read_metadata
from aifabric.local.models import resolve_model


def text(value: str) -> bytes:
    data = value.encode()
    return struct.pack("<Q", len(data)) + data


def entry(key: str, kind: int, payload: bytes) -> bytes:
    return text(key) + struct.pack("<I", kind) + payload


def gguf(entries: list[bytes], version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, 0, len(entries)) + b"".join(entries)


def vocab(words: list[str]) -> bytes:
    return struct.pack("<IQ", 8, len(words)) + b"".join(text(w) for w in words)  # an array of strings


def test_metadata_of_every_kind_is_read_and_arrays_are_skipped_unless_wanted(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(
        gguf(
            [
                entry("general.architecture", 8, text("qwen2")),
                entry("tokenizer.ggml.tokens", 9, vocab(["a", "bb", "ccc"])),
                entry("qwen2.scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<3f", 0.5, 1.5, 2.5)),
                entry("qwen2.block_count", 4, struct.pack("<I", 24)),
                entry("qwen2.attention.head_count", 4, struct.pack("<I", 14)),
                entry("qwen2.attention.head_count_kv", 4, struct.pack("<I", 2)),
                entry("qwen2.embedding_length", 10, struct.pack("<Q", 896)),
                entry("qwen2.rope.freq_base", 6, struct.pack("<f", 1000000.0)),
                entry("qwen2.use_parallel_residual", 7, struct.pack("<?", True)),
            ]
        )
    )
    meta = read_metadata(path)
    assert meta["tokenizer.ggml.tokens"] == ["a", "bb", "ccc"] and meta["qwen2.block_count"] == 24
    assert meta["qwen2.scores"] == [0.5, 1.5, 2.5] and meta["qwen2.use_parallel_residual"] is True
    assert read_metadata(path, frozenset({"qwen2.block_count"})) == {"qwen2.block_count": 24}
    # 24 layers x 2 KV heads x (64 + 64) per-head widths (896 / 14) x 2 B (f16)
    assert kv_cache_bytes_per_token(path) == 24 * 2 * 128 * 2


def test_explicit_key_and_value_widths_win_over_the_embedding_split(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(
        gguf(
            [
                entry("general.architecture", 8, text("gemma3")),
                entry("gemma3.block_count", 4, struct.pack("<I", 18)),
                entry("gemma3.attention.head_count", 4, struct.pack("<I", 4)),
                entry("gemma3.attention.head_count_kv", 4, struct.pack("<I", 1)),
                entry("gemma3.embedding_length", 4, struct.pack("<I", 640)),
                entry("gemma3.attention.key_length", 4, struct.pack("<I", 256)),
                entry("gemma3.attention.value_length", 4, struct.pack("<I", 256)),
            ]
        )
    )
    assert kv_cache_bytes_per_token(path) == 18 * 1 * (256 + 256) * 2


def test_the_bundled_smollm2_needs_23040_bytes_a_token() -> None:
    model = resolve_model("smollm2-135m-instruct", "llama-server")
    assert kv_cache_bytes_per_token(model.path) == 30 * 3 * (64 + 64) * 2


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"PK\x03\x04 a zip file", "no GGUF magic"),
        (b"GGUF" + struct.pack("<I", 1), "version 1"),
        (gguf([entry("general.architecture", 8, text("llama"))])[:-3], "ends inside its metadata"),
        (gguf([entry("x", 13, b"")]), "unknown GGUF value type 13"),
        (gguf([entry("general.architecture", 8, text("llama"))]), "lacks llama.block_count"),
    ],
    ids=["zip", "version-1", "truncated", "unknown-type", "no-layers"],
)
def test_a_file_that_is_not_a_readable_gguf_is_a_clear_error(tmp_path: Path, data: bytes, why: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(GgufError, match=why) as error:
        kv_cache_bytes_per_token(path)
    assert str(path) in str(error.value)
