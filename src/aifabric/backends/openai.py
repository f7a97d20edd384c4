"""Any OpenAI-compatible cloud: `GET /v1/models` with the key, probed sparingly.

Listing models costs no tokens and proves both reachability and that the api_key is accepted.

The kind covers servers of many makes, and what they serve beyond chat completions differs: OpenAI's
own API serves the Responses API, its input-token count and transcription; Azure OpenAI's v1 API
(`https://<resource>.openai.azure.com/openai/v1`) serves Responses and transcription; what every
compatible server serves is chat completions (and completions, embeddings): DeepSeek, Mistral,
Together, a vLLM or LM Studio declared as `openai`, ... So the native set is read from the URL
(`openai_native_apis`): any other URL gets the others translated, and a backend's `apis:` in the fabric
file overrides the rule either way (a cloud that documents its own /v1/responses: `apis: [responses]`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aifabric.backends.base import BackendAdapter, ProbeContext
from aifabric.config.schema import BackendConfig, ClientApi
from aifabric.core import ProbeResult

__all__ = ["ADAPTER", "AZURE_HOST_SUFFIXES", "OPENAI_HOST", "OpenAIAdapter", "openai_native_apis"]

OPENAI_HOST = "api.openai.com"
# Azure OpenAI resources (and Azure AI Foundry's OpenAI endpoint), whose v1 API lives under /openai/v1.
AZURE_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")

_OPENAI_APIS = frozenset({ClientApi.RESPONSES, ClientApi.INPUT_TOKENS, ClientApi.TRANSCRIPTION})
# Azure documents /responses and /audio/transcriptions on its v1 API, no /responses/input_tokens.
_AZURE_V1_APIS = frozenset({ClientApi.RESPONSES, ClientApi.TRANSCRIPTION})


def openai_native_apis(url: str) -> frozenset[ClientApi]:
    """The APIs an `openai`-kind backend at `url` serves natively, as its server documents them."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host == OPENAI_HOST:
        return _OPENAI_APIS
    if host.endswith(AZURE_HOST_SUFFIXES) and parts.path.rstrip("/").endswith("/openai/v1"):
        return _AZURE_V1_APIS
    return frozenset()


class OpenAIAdapter(BackendAdapter):
    kind = "openai"
    probe_paths = ("/v1/models",)
    min_probe_interval = 300.0
    # The most any server of the kind serves natively (OpenAI's own API); per backend, see
    # `native_apis_for`.
    native_apis = _OPENAI_APIS

    def native_apis_for(self, backend: BackendConfig) -> frozenset[ClientApi]:
        return openai_native_apis(backend.url)

    async def _probe(self, ctx: ProbeContext) -> ProbeResult:
        return self.up(ctx, await ctx.models(self))


ADAPTER = OpenAIAdapter()
