"""A LiteLLM config (as `Item`s) -> an `ImportPlan`: the fabric file's parts and every finding."""

from __future__ import annotations

from aifabric.ops.litellm.context import Context
from aifabric.ops.litellm.models import import_models
from aifabric.ops.litellm.plan import ImportPlan
from aifabric.ops.litellm.settings import import_environment, import_fallbacks, import_general, import_router
from aifabric.ops.litellm.source import Item

__all__ = ["convert"]

_ROUTING = ("router_settings", "litellm_settings")  # router_settings first: it wins where both say
_SECTIONS = (*_ROUTING, "general_settings", "environment_variables")
_TOP_WHY = {
    "guardrails": "guardrails: aifabric does not inspect prompts or answers",
    "finetune_settings": "fine-tuning endpoints: aifabric serves chat, completions and embeddings",
    "files_settings": "files endpoints: aifabric serves chat, completions and embeddings",
    "credential_list": "LiteLLM's named credentials: give each backend its api_key",
    "mcp_servers": "MCP servers: aifabric is not an MCP gateway",
    "include": "included files are not read: import the file with the model_list",
}


def convert(root: Item, source: str) -> ImportPlan:
    ctx = Context(source)
    for where, first, kept in root.duplicates:
        ctx.note(
            Item(None, first), where, f"given twice: LiteLLM keeps the one on line {kept}, so does the import"
        )
    sections = root.mapping()
    for name, item in sections.items():
        if name in _SECTIONS and not isinstance(item.value, dict) and item.value is not None:
            ctx.left_out(item, name, "not a mapping of settings")
    if "model_list" in sections:
        import_models(ctx, sections["model_list"])
    for name in _ROUTING:
        if name in sections:
            import_router(ctx, sections[name], name)
    for name in _ROUTING:  # once every role and alias is known
        if name in sections:
            import_fallbacks(ctx, sections[name], name)
    if "general_settings" in sections:
        import_general(ctx, sections["general_settings"], "general_settings")
    if "environment_variables" in sections:
        import_environment(ctx, sections["environment_variables"], "environment_variables")
    for name, item in sections.items():
        if name not in (*_SECTIONS, "model_list"):
            ctx.left_out(item, name, _TOP_WHY.get(name, "not a section the importer knows"))
    for backend in ctx.plan.backends.values():
        backend.health = list(ctx.health_settings)
    if ctx.balance is not None:
        for role in ctx.plan.roles.values():
            role.balance = ctx.balance
    ctx.plan.findings.sort(key=lambda f: f.line or 0)
    return ctx.plan
