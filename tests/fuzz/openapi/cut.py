"""Regenerate openai-served.json: the operations of OpenAI's OpenAPI description that aifabric serves
(chat completions, completions, embeddings, models, responses), with every schema they reference,
nothing else.

    git -C openai-openapi show COMMIT:openapi.json > /tmp/openapi.json
    python tests/fuzz/openapi/cut.py /tmp/openapi.json COMMIT

openai/openai-openapi is MIT-licensed (see NOTICE beside this file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SERVED = {
    "/chat/completions": ("post",),
    "/completions": ("post",),
    "/embeddings": ("post",),
    "/models": ("get",),
    "/models/{model}": ("get",),
    "/responses": ("post",),
    "/responses/input_tokens": ("post",),
    "/responses/{response_id}": ("get",),
}


def closure(spec: dict[str, Any], roots: Any) -> dict[str, dict[str, Any]]:
    """Every `#/components/<kind>/<name>` reachable from `roots`, by kind."""
    seen: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str) and value.startswith("#/components/"):
                    _, _, kind, name = value.split("/", 3)
                    if name not in seen.setdefault(kind, {}):
                        seen[kind][name] = spec["components"][kind][name]
                        walk(seen[kind][name])
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(roots)
    return {kind: dict(sorted(items.items())) for kind, items in sorted(seen.items())}


def main() -> None:
    source, commit = sys.argv[1], sys.argv[2]
    spec = json.loads(Path(source).read_text())
    paths = {
        path: {method: spec["paths"][path][method] for method in methods} for path, methods in SERVED.items()
    }
    for path, item in paths.items():  # path-level parameters (`{model}`) come along
        if "parameters" in spec["paths"][path]:
            item["parameters"] = spec["paths"][path]["parameters"]
    out = {
        "openapi": spec["openapi"],
        "info": {
            "title": f"{spec['info']['title']}: the operations aifabric serves",
            "version": spec["info"]["version"],
            "description": f"openai/openai-openapi {commit} openapi.json, cut to {', '.join(SERVED)}",
        },
        "paths": paths,
        "components": closure(spec, paths),
    }
    target = Path(__file__).with_name("openai-served.json")
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
