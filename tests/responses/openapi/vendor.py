"""Regenerate openai-schemas.json: the schemas of OpenAI's OpenAPI description that the gateway's own
JSON is checked against, with everything they reference, and nothing else (the whole file is 3 MB).

    python tests/responses/openapi/vendor.py PATH/TO/openai-openapi/openapi.json COMMIT

openai/openai-openapi is MIT-licensed (see NOTICE beside this file). The output has `components` at
its root, so `#/components/schemas/X` references resolve with Draft 2020-12 as written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOTS = (
    "Response",
    "ResponseStreamEvent",
    "ErrorResponse",
    "TokenCountsResource",
    "ListModelsResponse",
    "Model",
    "CreateTranscriptionResponseJson",
    "CreateTranscriptionResponseStreamEvent",
)


def closure(schemas: dict[str, Any], roots: tuple[str, ...]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    name = value.rsplit("/", 1)[-1]
                    if name not in seen:
                        seen[name] = schemas[name]
                        walk(schemas[name])
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for root in roots:
        seen[root] = schemas[root]
        walk(schemas[root])
    return dict(sorted(seen.items()))


def main() -> None:
    source, commit = sys.argv[1], sys.argv[2]
    spec = json.loads(Path(source).read_text())
    out = {
        "$comment": f"openai/openai-openapi {commit} openapi.json, schemas reachable from {', '.join(ROOTS)}",
        "openapi_version": spec["info"]["version"],
        "components": {"schemas": closure(spec["components"]["schemas"], ROOTS)},
    }
    target = Path(__file__).with_name("openai-schemas.json")
    target.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
    print(f"wrote {target} ({target.stat().st_size} bytes, {len(out['components']['schemas'])} schemas)")


if __name__ == "__main__":
    main()
