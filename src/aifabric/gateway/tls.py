"""TLS on the gateway's listener (`gateway.tls: {cert, key}`): the server-side SSL context."""

from __future__ import annotations

import ssl

from aifabric.config.schema import TlsConfig
from aifabric.errors import CommandError

__all__ = ["server_tls_context"]


def server_tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server context for HTTP/1.1 with the certificate chain and key of `tls`; TLS 1.2 at least."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise CommandError(
            f"gateway.tls: cannot load the certificate {tls.cert} with the key {tls.key}: {reason}. "
            "Fix: point cert at a PEM certificate (chain) and key at its PEM private key, both readable."
        ) from None
    return context
