"""aifabric: one OpenAI-compatible gateway in front of an estate of inference servers."""

__version__ = "0.1.0"
__all__ = ["__version__"]
