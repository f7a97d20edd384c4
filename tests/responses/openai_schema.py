"""Validate JSON the gateway produces against OpenAI's own OpenAPI description (vendored excerpt).

    assert_valid("Response", body)              # a translated /v1/responses answer
    assert_valid("ResponseStreamEvent", event)  # each event of a translated stream
    assert_valid("ErrorResponse", error_body)

Draft 2020-12, with the excerpt's root (`components` at the top) as the resource every `$ref` resolves in.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["assert_valid"]

_FILE = Path(__file__).parent / "openapi" / "openai-schemas.json"


@cache
def _root() -> dict[str, Any]:
    root: dict[str, Any] = json.loads(_FILE.read_text())
    return root


@cache
def _validator(name: str) -> Draft202012Validator:
    root = _root()
    schema = {**root, "$ref": f"#/components/schemas/{name}"}
    return Draft202012Validator(schema)


def assert_valid(name: str, obj: Any) -> None:
    """Fail with every violation listed (path and message) when `obj` is not a valid `name`."""
    errors = sorted(_validator(name).iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}" for e in errors]
        raise AssertionError(f"not a valid {name} per OpenAI's OpenAPI description:\n" + "\n".join(lines))
