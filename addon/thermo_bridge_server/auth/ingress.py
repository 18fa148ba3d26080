"""Tokens for Home Assistant users in the add-on's panel (ingress).

The Supervisor authenticates the HA user and forwards the panel's requests from its ingress
proxy with ``X-Remote-User-Id``/``-Name``/``-Display-Name``. The page cannot hold an Auth0
token there, so the server mints a short-lived RS256 token for that user with a key it keeps in
memory only (a restart invalidates every such token; the page just asks again). The token goes
through the same :class:`~thermo_bridge_server.auth.tokens.Authenticator` as every other one
(its own issuer and audience, told apart by the key id), so the WebSocket, SSE and REST treat
the panel like any client. Whether a request really came through ingress is decided by the
HTTP layer (``http.middlewares.served_under_ingress``), never here.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable
from typing import Final

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from .devauth import jwk_thumbprint
from .tokens import LocalIssuer, SigningKey

INGRESS_ISSUER: Final = "urn:thermo-bridge:ingress"
INGRESS_AUDIENCE: Final = "urn:thermo-bridge:panel"
INGRESS_TOKEN_TTL: Final = 300
"""Seconds a panel token lives; the page fetches the next one before it expires."""
SUB_PREFIX: Final = "homeassistant|"
_USER_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY_BITS: Final = 2048


def valid_user_id(value: str | None) -> bool:
    """Whether ``value`` looks like a Home Assistant user id (32 hex digits today; a safe superset)."""
    return value is not None and _USER_ID.fullmatch(value) is not None


class IngressIssuer:
    """Mints panel tokens; its key is made at start-up (blocking: call it in a thread)."""

    def __init__(self, permissions: Iterable[str], *, ttl: int = INGRESS_TOKEN_TTL) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)
        self.kid = "ingress-" + jwk_thumbprint(self._key.public_key())[:16]
        self.permissions = tuple(sorted(set(permissions)))
        self.ttl = ttl

    def local_issuer(self) -> LocalIssuer:
        """What the Authenticator needs to verify these tokens."""
        return LocalIssuer(SigningKey(self.kid, self._key.public_key(), "RS256"), INGRESS_ISSUER, INGRESS_AUDIENCE)

    def mint(self, user_id: str, *, name: str | None = None) -> tuple[str, int]:
        """A token for HA user ``user_id`` (sub ``homeassistant|<id>``) and when it expires (epoch seconds)."""
        if not valid_user_id(user_id):
            raise ValueError("not a Home Assistant user id")
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": INGRESS_ISSUER,
            "aud": INGRESS_AUDIENCE,
            "sub": SUB_PREFIX + user_id,
            "iat": now,
            "exp": now + self.ttl,
            "jti": secrets.token_hex(8),
            "permissions": list(self.permissions),
        }
        if name:
            claims["name"] = name[:128]
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})
        return token, now + self.ttl
