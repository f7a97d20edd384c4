"""What a LiteLLM `litellm_params.model` string means in aifabric's terms: backend kind, base URL, key.

LiteLLM names a deployment `provider/model-id` (`hosted_vllm/Qwen/Qwen2.5-7B`), or a bare OpenAI model
name (`gpt-4o`). aifabric speaks the OpenAI API to every backend, so a provider maps when it serves that
API: self-hosted servers (vLLM, Ollama, llamafile) by their kind, OpenAI-compatible clouds as kind
`openai` at their documented base URL. Providers with their own wire format (Anthropic, Bedrock,
Vertex, ...) have no kind here and are reported, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aifabric.config.schema import ROLE_KINDS

__all__ = ["NO_KIND", "PROVIDERS", "Provider", "infer_role_kind", "mode_role_kind", "split_model"]


@dataclass(frozen=True)
class Provider:
    name: str  # LiteLLM's provider prefix
    kind: str  # aifabric backend kind
    base: str | None = None  # base URL when the entry has no api_base; None: api_base is required
    key_env: str | None = None  # the variable LiteLLM reads the key from when the entry names none
    base_env: str | None = None  # the variable LiteLLM reads the base URL from when there is none
    suffix: str = ""  # appended to api_base to reach the OpenAI API (LiteLLM gives some the origin)
    role_kind: str | None = None  # every model of this provider serves this kind of request
    self_hosted: bool = False  # a server of the estate (gets a hosts: entry), not a cloud


_PROVIDERS = (
    Provider("openai", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    Provider(
        "text-completion-openai",
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        role_kind="completions",
    ),
    Provider("custom_openai", "openai"),
    # Azure OpenAI's v1 API takes the OpenAI wire format with the deployment name as `model`.
    Provider("azure", "openai", None, "AZURE_API_KEY", "AZURE_API_BASE", "/openai/v1"),
    Provider(
        "azure_text", "openai", None, "AZURE_API_KEY", "AZURE_API_BASE", "/openai/v1", role_kind="completions"
    ),
    Provider("hosted_vllm", "vllm", self_hosted=True),
    Provider("vllm", "vllm", self_hosted=True),  # the in-process engine in LiteLLM: only with an api_base
    # LiteLLM calls Ollama's native API at the origin; its OpenAI API is under /v1.
    Provider("ollama", "ollama", "http://localhost:11434", suffix="/v1", self_hosted=True),
    Provider("ollama_chat", "ollama", "http://localhost:11434", suffix="/v1", self_hosted=True),
    Provider("llamafile", "llamacpp", self_hosted=True),  # llamafile is llama.cpp's server
    Provider("lm_studio", "openai", self_hosted=True),
    Provider("openrouter", "openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    Provider("groq", "openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    Provider("mistral", "openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    Provider("deepseek", "openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    Provider("together_ai", "openai", "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    Provider("fireworks_ai", "openai", "https://api.fireworks.ai/inference/v1", "FIREWORKS_AI_API_KEY"),
    Provider("xai", "openai", "https://api.x.ai/v1", "XAI_API_KEY"),
    Provider("deepinfra", "openai", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
    Provider("nvidia_nim", "openai", "https://integrate.api.nvidia.com/v1", "NVIDIA_NIM_API_KEY"),
    Provider("gemini", "openai", "https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY"),
)
PROVIDERS = {p.name: p for p in _PROVIDERS}

# Providers LiteLLM has that speak their own API: why each has no aifabric kind.
NO_KIND = {
    "anthropic": "Anthropic's Messages API is not an OpenAI-compatible backend",
    "bedrock": "AWS Bedrock needs AWS request signing, not an OpenAI-compatible backend",
    "vertex_ai": "Vertex AI needs Google credentials and its own API",
    "sagemaker": "SageMaker endpoints need AWS request signing",
    "cohere": "Cohere's API is not OpenAI-compatible",
    "huggingface": "Hugging Face inference endpoints differ by task; write openai/MODEL with the api_base "
    "of a TGI/TEI/vLLM server instead",
    "replicate": "Replicate's API is not OpenAI-compatible",
    "auto_router": "a LiteLLM routing feature, not a backend",
}

# Bare model names LiteLLM sends to OpenAI (it looks them up in its model map; these are OpenAI's).
_OPENAI_BARE = re.compile(
    r"^(gpt-|gpt4|chatgpt-|o1|o3|o4|text-embedding-|text-davinci|davinci|babbage|dall-e|gpt-image|"
    r"whisper|tts-|omni-moderation|text-moderation|codex-)"
)
_ANTHROPIC_BARE = re.compile(r"^claude-")


def split_model(model: str, custom_provider: str | None = None) -> tuple[str | None, str]:
    """(provider, model id the backend serves) of a LiteLLM model string. Provider None: unknown."""
    if custom_provider:
        return custom_provider, model
    head, sep, rest = model.partition("/")
    if sep and (head in PROVIDERS or head in NO_KIND):
        return head, rest
    if _OPENAI_BARE.match(model):
        return "openai", model
    if _ANTHROPIC_BARE.match(model):
        return "anthropic", model
    if sep:
        return head, rest  # an unknown provider, reported by its prefix
    return None, model


# model_info.mode -> role kind, where aifabric has the kind.
_MODES = {
    "chat": "chat",
    "completion": "completions",
    "embedding": "embeddings",
    "responses": "chat",
    "rerank": "rerank",
    "audio_transcription": "transcription",
}


def mode_role_kind(mode: str) -> str | None:
    kind = _MODES.get(mode, mode)
    return kind if kind in ROLE_KINDS else None


_EMBEDDING = re.compile(r"(embed|^bge-|/bge-|e5-|gte-|minilm|nomic-embed|mxbai)", re.IGNORECASE)
_COMPLETION = re.compile(r"^(gpt-3\.5-turbo-instruct|davinci-002|babbage-002)")
# Role kinds known by the model's name (by OpenAI's and common naming).
_NAMED = (
    (re.compile(r"^whisper|transcribe"), "transcription", "a speech-to-text model"),
    (re.compile(r"rerank", re.IGNORECASE), "rerank", "a reranker"),
)
# Names that are clearly none of the role kinds.
_OTHER = (
    (re.compile(r"^(dall-e|gpt-image)"), "image generation"),
    (re.compile(r"^tts-"), "text to speech"),
    (re.compile(r"moderation"), "moderation"),
)


def infer_role_kind(provider: Provider, model_id: str) -> tuple[str | None, str]:
    """The role kind an entry without `model_info.mode` clearly is, and how that was decided.
    (None, what it is) when it is something aifabric has no role kind for."""
    if provider.role_kind:
        return provider.role_kind, f"{provider.name}/ serves completions"
    for pattern, what in _OTHER:
        if pattern.search(model_id):
            return None, what
    for pattern, kind, what in _NAMED:
        if pattern.search(model_id):
            return kind, f"'{model_id}' is {what} by its name"
    if _EMBEDDING.search(model_id):
        return "embeddings", f"'{model_id}' is an embeddings model by its name"
    if provider.name == "openai" and _COMPLETION.match(model_id):
        return "completions", f"'{model_id}' is a completions model"
    return "chat", ""
