"""Hypothesis against the parts that read what others wrote: the fabric-file loader (an operator's
YAML), the request body (a client's JSON) and the SSE relay (a backend's stream). Whatever comes in,
each answers in its own terms (a FabricConfig or a ConfigError; a dict or a 400; the events passed
through) and never with another exception."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aifabric.config.load import load_config_text
from aifabric.config.schema import FabricConfig
from aifabric.errors import BadRequest, ConfigError
from aifabric.gateway.body import READ_KEYS, RequestBody, parse_json_body
from aifabric.gateway.stream_usage import UsageCounter

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))

# Words of the fabric file, so generated documents reach past "unknown key" into the sections' checks.
_WORDS = st.sampled_from(
    [
        "gateway", "hosts", "backends", "roles", "aliases", "retry", "monitoring", "state", "health",
        "kind", "url", "targets", "backend", "model", "fallbacks", "api_keys", "admin_keys", "tls",
        "cert", "key", "port", "host", "address", "always_on", "weight", "interval", "timeout",
        "max_connections", "head_timeout", "vllm", "openai", "chat", "embeddings", "b1", "r1",
        "http://127.0.0.1:9/v1", "${MISSING}", "30s", "1m", "-1", "<<",
    ]
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    _WORDS,
    st.text(max_size=20),
)
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_WORDS, inner, max_size=5),
    max_leaves=25,
)


def _load(text: str) -> FabricConfig | None:
    try:
        return load_config_text(text, "fuzz.yaml", environ={"KEY": "sk-fuzz-0123"})
    except ConfigError as exc:
        assert exc.problems and all("fuzz.yaml" in str(p) for p in exc.problems)
        return None


@FAST
@given(doc=st.dictionaries(_WORDS, _TREES, max_size=6))
def test_any_fabric_document_loads_or_says_what_is_wrong(
    doc: dict[str, Any], count_case: Counter[str]
) -> None:
    count_case["fabric loader"] += 1
    _load(yaml.safe_dump(doc, allow_unicode=True))


@FAST
@given(text=st.text(max_size=300))
def test_any_text_as_a_fabric_file_loads_or_says_what_is_wrong(text: str, count_case: Counter[str]) -> None:
    count_case["fabric loader"] += 1
    _load(text)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@FAST
@given(raw=st.binary(max_size=300) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_any_body_is_a_json_object_or_a_400(raw: bytes, count_case: Counter[str]) -> None:
    count_case["request body"] += 1
    try:
        payload = parse_json_body(raw)
    except BadRequest as exc:
        assert exc.status == 400 and exc.message
        return
    assert isinstance(payload, dict)


@FAST
@given(
    payload=st.dictionaries(st.text(max_size=8).filter(lambda k: k not in READ_KEYS), _JSON, max_size=5),
    model=st.text(min_size=1, max_size=20),
    target=st.text(min_size=1, max_size=20),
    ascii_only=st.booleans(),
)
def test_the_model_rewrite_changes_the_model_and_nothing_else(
    payload: dict[str, Any], model: str, target: str, ascii_only: bool, count_case: Counter[str]
) -> None:
    count_case["request body"] += 1
    body = {"model": model, **payload}
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    parsed = parse_json_body(raw)
    # Only the keys the gateway reads must be exact in `parsed` (orjson reads an integer below -2**63
    # as a float); what is forwarded is the client's bytes, exact, with only `model` replaced.
    assert parsed["model"] == model
    rewritten = json.loads(RequestBody(raw, parsed).with_model(target))
    assert rewritten == {**body, "model": target}


def _events(texts: list[str]) -> list[bytes]:
    return [b"data: " + orjson.dumps({"id": "c1", "choices": [{"delta": {"content": t}}]}) for t in texts]


@FAST
@given(texts=st.lists(st.text(max_size=10), max_size=8), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_the_usage_counter_passes_every_event_whatever_the_chunking(
    texts: list[str], cuts: list[int], count_case: Counter[str]
) -> None:
    count_case["sse relay"] += 1
    events = _events(texts)
    stream = b"".join(e + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    counter = UsageCounter({"messages": [{"role": "user", "content": "hi"}]})
    out = b"".join(counter.feed(stream[a:b]) for a, b in itertools.pairwise(bounds))
    out += counter.finish()
    passed = [e for e in out.split(b"\n\n") if e]
    assert passed[: len(events)] == events
    usage = orjson.loads(passed[len(events)][len(b"data: ") :])
    assert usage["usage"]["completion_tokens"] == sum(1 for t in texts if t)
    assert passed[-1] == b"data: [DONE]"


@FAST
@given(chunks=st.lists(st.binary(max_size=200), max_size=8))
def test_the_usage_counter_survives_any_bytes(chunks: list[bytes], count_case: Counter[str]) -> None:
    count_case["sse relay"] += 1
    counter = UsageCounter({"prompt": "x"})
    for chunk in chunks:
        counter.feed(chunk)
    assert counter.finish().endswith(b"data: [DONE]\n\n")
