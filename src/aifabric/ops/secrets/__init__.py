"""The runbook's "Update Secrets": where each `${VAR}` of the fabric file comes from (`check`), and the
env file filled from a secrets map's sources, Azure Key Vault among them (`sync`)."""

from aifabric.ops.secrets.check import SecretsReport, check_secrets
from aifabric.ops.secrets.smap import SecretsMap, load_secrets_map, parse_secrets_map
from aifabric.ops.secrets.sync import SyncResult, sync_secrets

__all__ = [
    "SecretsMap",
    "SecretsReport",
    "SyncResult",
    "check_secrets",
    "load_secrets_map",
    "parse_secrets_map",
    "sync_secrets",
]
