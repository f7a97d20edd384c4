"""A local HTTPS stand-in for Azure Key Vault's REST API, enough for `SecretClient.get_secret`.

It speaks what the SDK expects of the real service: a request without a token gets 401 with the
`WWW-Authenticate: Bearer authorization=..., resource=...` challenge; the SDK then asks its credential for
a token and sends it; `GET /secrets/{name}/{version}?api-version=...` answers the secret bundle, or 404
`SecretNotFound`, or 403 `Forbidden` for a disabled secret. TLS with a trustme CA (the test points the
SDK at that CA), on loopback.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import trustme

TOKEN = "standin-access-token"
CHALLENGE = (
    'Bearer authorization="https://login.microsoftonline.com/tenant-standin", '
    'resource="https://vault.azure.net"'
)


@dataclass
class KeyVaultStandIn:
    ca_file: Path
    secrets: dict[str, str] = field(default_factory=dict)
    disabled: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Authorization header)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def start(self, ca: trustme.CA) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                standin.requests.append((self.path, auth))
                if auth != f"Bearer {TOKEN}":
                    self._send(401, {"error": {"code": "Unauthorized", "message": "AKV10000"}}, CHALLENGE)
                    return
                parts = urlsplit(self.path).path.strip("/").split("/")
                if len(parts) < 2 or parts[0] != "secrets":
                    self._send(400, {"error": {"code": "BadParameter", "message": "bad path"}})
                    return
                name = parts[1]
                if name in standin.disabled:
                    self._send(
                        403,
                        {
                            "error": {
                                "code": "Forbidden",
                                "message": "Operation get is not allowed on a disabled secret.",
                            }
                        },
                    )
                    return
                if name not in standin.secrets:
                    message = f"A secret with (name/id) {name} was not found in this key vault."
                    self._send(404, {"error": {"code": "SecretNotFound", "message": message}})
                    return
                sid = f"{standin.url}/secrets/{name}/0123456789abcdef"
                self._send(200, {"value": standin.secrets[name], "id": sid, "attributes": {"enabled": True}})

            def _send(self, status: int, body: object, challenge: str | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                if challenge:
                    self.send_header("WWW-Authenticate", challenge)
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class StaticCredential:
    """A credential that hands out one fixed token, as `azure.core.credentials.TokenCredential` asks."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: object) -> object:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(self.token, 4102444800)  # 2100-01-01
