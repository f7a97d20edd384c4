"""What a GGUF file says about the memory its model needs beyond the weights: the KV cache per token.

Read from the file's metadata (the key-value section after the header; the tensors are not touched):

    {arch}.block_count                 layers
    {arch}.attention.head_count_kv     KV heads (grouped-query attention; else head_count)
    {arch}.attention.key_length        per-head key width (else embedding_length / head_count)
    {arch}.attention.value_length      per-head value width (likewise)

llama.cpp keeps K and V for every layer, KV head and cached token, in f16 by default: 2 bytes a value.
For SmolLM2-135M: 30 layers x 3 KV heads x (64 + 64) x 2 B = 23,040 B a token, so llama-server's
`--ctx-size 16384` holds ~360 MiB (docs/local.md). `doctor` adds this to the weights in its memory check.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

__all__ = ["KV_BYTES_PER_VALUE", "GgufError", "kv_cache_bytes_per_token", "read_metadata"]

KV_BYTES_PER_VALUE = 2  # f16, llama.cpp's default cache type

_MAGIC = b"GGUF"
# GGUF value types -> struct format of one value (8: string, 9: array, handled apart).
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


class GgufError(ValueError):
    """The file is not a GGUF file this reader understands (said with the path and why)."""


def read_metadata(path: Path, wanted: frozenset[str] | None = None) -> dict[str, object]:
    """The metadata of the GGUF file at `path` (only the keys in `wanted`, when given: arrays such as
    the tokenizer's vocabulary are skipped, not built)."""
    try:
        with path.open("rb") as f:
            if f.read(4) != _MAGIC:
                raise GgufError(f"{path} is not a GGUF file (no GGUF magic)")
            version = _int(f, "<I")
            if version < 2:
                raise GgufError(f"{path} is GGUF version {version}; versions 2 and 3 are read")
            _int(f, "<Q")  # tensor count
            count = _int(f, "<Q")
            meta: dict[str, object] = {}
            for _ in range(count):
                key = _string(f)
                kind = _int(f, "<I")
                keep = wanted is None or key in wanted
                value = _value(f, kind, keep)
                if keep:
                    meta[key] = value
            return meta
    except GgufError as exc:
        if str(path) in str(exc):
            raise
        raise GgufError(f"cannot read the GGUF metadata of {path}: {exc}") from None
    except (OSError, struct.error, UnicodeDecodeError) as exc:
        raise GgufError(f"cannot read the GGUF metadata of {path}: {exc}") from None


def kv_cache_bytes_per_token(path: Path) -> int:
    """Bytes of llama.cpp's KV cache (f16) one token of context takes for the model at `path`."""
    arch = read_metadata(path, frozenset({"general.architecture"})).get("general.architecture")
    if not isinstance(arch, str):
        raise GgufError(f"{path} names no general.architecture")
    keys = (
        "block_count",
        "attention.head_count",
        "attention.head_count_kv",
        "embedding_length",
        "attention.key_length",
        "attention.value_length",
    )
    meta = read_metadata(path, frozenset(f"{arch}.{k}" for k in keys))

    def number(key: str) -> int | None:
        value = meta.get(f"{arch}.{key}")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    layers, heads, width = number("block_count"), number("attention.head_count"), number("embedding_length")
    if layers is None or heads is None:
        raise GgufError(f"{path} lacks {arch}.block_count or {arch}.attention.head_count")
    kv_heads = number("attention.head_count_kv") or heads
    per_head = width // heads if width is not None else None
    key_len, value_len = (
        number("attention.key_length") or per_head,
        number("attention.value_length") or per_head,
    )
    if key_len is None or value_len is None:
        raise GgufError(f"{path} gives no head width ({arch}.embedding_length or attention.key_length)")
    return layers * kv_heads * (key_len + value_len) * KV_BYTES_PER_VALUE


def _unpack(f: BinaryIO, fmt: str) -> tuple[object, ...]:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise GgufError("the file ends inside its metadata")
    return struct.unpack(fmt, data)


def _int(f: BinaryIO, fmt: str) -> int:
    (value,) = _unpack(f, fmt)
    assert isinstance(value, int)  # the formats passed here are integer ones
    return value


def _string(f: BinaryIO) -> str:
    length = _int(f, "<Q")
    data = f.read(length)
    if len(data) != length:
        raise GgufError("the file ends inside its metadata")
    return data.decode("utf-8")


def _value(f: BinaryIO, kind: int, keep: bool) -> object:
    if kind in _SCALARS:
        return _unpack(f, _SCALARS[kind])[0]
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item_kind = _int(f, "<I")
        count = _int(f, "<Q")
        if not keep and item_kind in _SCALARS:  # skipped whole: one seek
            f.seek(count * struct.calcsize(_SCALARS[item_kind]), 1)
            return None
        items = [_value(f, item_kind, keep) for _ in range(count)]
        return items if keep else None
    raise GgufError(f"unknown GGUF value type {kind}")
