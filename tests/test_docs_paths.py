"""The code maps in README.md and docs/ name files that exist (a module moved is a map to update)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "aifabric"

# `gateway/forward.py`, `src/aifabric/alerts/budget.py`, `tests/http/test_server_limits.py`: a path
# with at least one folder to a Python file; or a folder of the package or the repository
# (`aifabric/ops/doctor/`, `tests/fuzz/`; not LiteLLM's model prefixes like `groq/`).
_FILE = r"(?:[a-z_0-9]+/)+[a-z_0-9]+\.py\b"
_FOLDER = r"(?:src|aifabric|tests|bench|deploy|docs)/(?:[a-z_0-9]+/)*(?=[`\s),])"
_PATH = re.compile(rf"(?<![\w./-])({_FILE}|{_FOLDER})")
# The runbook's own scripts (../seed), which aifabric replaces: named as what a reader had, not ours.
_RUNBOOK = {"scripts/tests/ai_fabric_smoke_test.py"}


def _exists(path: str) -> bool:
    bases = (ROOT, ROOT / "src", SRC)
    return any((base / path).exists() for base in bases) or (SRC / path.removeprefix("aifabric/")).exists()


def _named_paths() -> list[tuple[str, int, str]]:
    named = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for match in _PATH.finditer(line):
                named.append((doc.name, number, match.group(1)))
    return named


def test_the_docs_name_only_files_that_exist() -> None:
    named = _named_paths()
    assert any(path == "gateway/forward.py" for _, _, path in named)  # the pattern finds the maps

    missing = [
        f"{doc}:{line}: {path}" for doc, line, path in named if path not in _RUNBOOK and not _exists(path)
    ]

    assert missing == []
