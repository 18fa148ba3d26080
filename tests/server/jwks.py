"""A local Auth0 look-alike for tests: JWKS + OpenID configuration on loopback, and a token factory.

The documents are shaped exactly like an Auth0 tenant's (keys with kty, use, n, e, kid, x5t,
x5c, alg; the discovery document's fields). Keys can be added, published, unpublished and
rotated at run time; every request is counted per path; the JWKS endpoint can be made to
fail or to answer slowly. ``make_token`` builds real RSA-signed access tokens, and also the
malformed/forged ones the attack matrix needs (alg none, HS256 keyed with the public key,
ES256, tampered parts, ...).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from thermo_bridge_server.auth.devauth import auth0_jwk, auth0_openid_configuration
from thermo_bridge_server.config import AuthSettings

DEFAULT_AUDIENCE = "https://api.thermo-bridge.test"
HOMES_CLAIM = "https://thermo-bridge.dev/homes"
JWKS_PATH = "/.well-known/jwks.json"
OPENID_PATH = "/.well-known/openid-configuration"
ALT_JWKS_PATH = "/elsewhere/jwks.json"

# RSA key generation costs tens of ms: share a pool across tests (kids stay unique per server).
_KEY_POOL: list[rsa.RSAPrivateKey] = []


def _pooled_key(index: int) -> rsa.RSAPrivateKey:
    while len(_KEY_POOL) <= index:
        _KEY_POOL.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _KEY_POOL[index]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(obj: Mapping[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


class JwksServer:
    """An aiohttp app on a free loopback port serving an Auth0-shaped JWKS and discovery document."""

    def __init__(self, *, audience: str = DEFAULT_AUDIENCE, common_name: str = "thermo-bridge-test.eu.auth0.com"):
        self.audience = audience
        self.common_name = common_name
        self.requests: Counter[str] = Counter()
        self.status = 200  # set to e.g. 500 to simulate an outage of the JWKS endpoint
        self.delay = 0.0  # seconds before the JWKS answers (lets concurrent fetches overlap)
        self.raw_body: bytes | None = None  # served instead of the JWKS when set (garbage documents)
        self.redirect = False  # answer the JWKS path with a 302 to ALT_JWKS_PATH (same document)
        self.extra_keys: list[dict[str, Any]] = []  # raw JWKs published after ours (EC, enc, ...)
        self._keys: dict[str, rsa.RSAPrivateKey] = {}
        self._jwks: dict[str, dict[str, Any]] = {}
        self._published: list[str] = []
        self._next_pool = 0
        self.current_kid = ""
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(JWKS_PATH, self._jwks_handler)
        app.router.add_get(OPENID_PATH, self._openid_handler)
        app.router.add_get(ALT_JWKS_PATH, self._jwks_handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        if not self._keys:
            self.add_key(make_current=True)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{JWKS_PATH}"

    @property
    def jwks_requests(self) -> int:
        return self.requests[JWKS_PATH]

    def settings(self, **overrides: Any) -> AuthSettings:
        values: dict[str, Any] = {"issuer": self.issuer, "audience": self.audience}
        values.update(overrides)
        return AuthSettings(**values)

    # -- keys -------------------------------------------------------------------------
    def add_key(self, kid: str | None = None, *, publish: bool = True, make_current: bool = False) -> str:
        """Create a signing key (from the shared pool); publish it in the JWKS unless told not to."""
        kid = kid or f"kid-{secrets.token_hex(8)}"
        key = _pooled_key(self._next_pool)
        self._next_pool += 1
        self._keys[kid] = key
        self._jwks[kid] = auth0_jwk(key, kid, common_name=self.common_name)
        if publish:
            self.publish(kid)
        if make_current:
            self.current_kid = kid
        return kid

    def publish(self, kid: str) -> None:
        if kid not in self._published:
            self._published.append(kid)

    def unpublish(self, kid: str) -> None:
        """Remove the key from the JWKS; tokens can still be signed with it (a rotated-out key)."""
        if kid in self._published:
            self._published.remove(kid)

    def rotate(self) -> tuple[str, str]:
        """Auth0's 'rotate signing key': a new current key; the old one stops being published."""
        old = self.current_kid
        new = self.add_key(make_current=True)
        self.unpublish(old)
        return old, new

    def private_key(self, kid: str | None = None) -> rsa.RSAPrivateKey:
        return self._keys[kid or self.current_kid]

    def public_pem(self, kid: str | None = None) -> bytes:
        return (
            self.private_key(kid)
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def jwks_document(self) -> dict[str, Any]:
        return {"keys": [self._jwks[kid] for kid in self._published] + list(self.extra_keys)}

    # -- tokens -----------------------------------------------------------------------
    def claims(
        self,
        sub: str = "auth0|alice",
        permissions: Iterable[str] | None = ("read:devices", "write:devices"),
        *,
        homes: Iterable[str] | None = None,
        scope: str | None = None,
        exp: float | None = None,
        iat: float | None = None,
        nbf: float | None = None,
        iss: str | None = None,
        aud: str | list[str] | None = None,
        omit: Iterable[str] = (),
        custom: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """An Auth0-style access-token payload (RBAC on: a ``permissions`` list).

        ``custom`` adds namespaced claims (names that are not Python identifiers).
        """
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer if iss is None else iss,
            "sub": sub,
            "aud": [self.audience, f"{self.issuer}userinfo"] if aud is None else aud,
            "iat": now if iat is None else int(iat),
            "exp": now + 3600 if exp is None else int(exp),
            "azp": "test-client-id",
            "scope": "openid profile email" if scope is None else scope,
        }
        if nbf is not None:
            payload["nbf"] = int(nbf)
        if permissions is not None:
            payload["permissions"] = list(permissions)
        if homes is not None:
            payload[HOMES_CLAIM] = list(homes)
        payload.update(extra)
        payload.update(custom or {})
        for name in omit:
            payload.pop(name, None)
        return payload

    def make_token(
        self,
        sub: str = "auth0|alice",
        permissions: Iterable[str] | None = ("read:devices", "write:devices"),
        *,
        kid: str | None = None,
        alg: str = "RS256",
        headers: Mapping[str, Any] | None = None,
        omit_kid: bool = False,
        signing_key: rsa.RSAPrivateKey | None = None,
        **claims: Any,
    ) -> str:
        """A token signed like Auth0 would (``alg`` RS256 by default) with the given claims.

        ``alg`` may also be ``none``, ``HS256`` (HMAC keyed with the public key PEM: the classic
        key-confusion forgery), ``RS384``/``RS512`` (RSA key, other hash), ``ES256`` (a fresh EC key).
        """
        kid = kid or self.current_kid
        payload = self.claims(sub, permissions, **claims)
        header: dict[str, Any] = {"alg": alg, "typ": "JWT", "kid": kid}
        if omit_kid:
            del header["kid"]
        header.update(headers or {})
        return self.sign(header, payload, kid=kid, key=signing_key)

    def sign(
        self,
        header: Mapping[str, Any],
        payload: Mapping[str, Any],
        *,
        kid: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        """Encode and sign exactly this header and payload (the header's alg decides how).

        ``key`` signs with a key of the caller's (an attacker's) instead of the server's ``kid``.
        """
        alg = str(header["alg"]).upper()
        signing_input = f"{b64url_json(header)}.{b64url_json(payload)}"
        if alg == "NONE":
            return signing_input + "."
        if alg.startswith("HS"):
            digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
            mac = hmac.new(self.public_pem(kid), signing_input.encode(), digest).digest()
            return f"{signing_input}.{b64url(mac)}"
        signer: Any = ec.generate_private_key(ec.SECP256R1()) if alg.startswith("ES") else key or self.private_key(kid)
        algorithm = jwt.get_algorithm_by_name(alg)
        signature = algorithm.sign(signing_input.encode(), algorithm.prepare_key(signer))
        return f"{signing_input}.{b64url(signature)}"

    def sign_raw(self, header: str | bytes, payload: str | bytes, *, key: rsa.RSAPrivateKey | None = None) -> str:
        """RS256 over exactly these header and payload bytes (repeated members, odd numbers, ...)."""
        raw = [part.encode() if isinstance(part, str) else part for part in (header, payload)]
        signing_input = f"{b64url(raw[0])}.{b64url(raw[1])}"
        algorithm = jwt.get_algorithm_by_name("RS256")
        signature = algorithm.sign(signing_input.encode(), key or self.private_key())
        return f"{signing_input}.{b64url(signature)}"

    # -- handlers ---------------------------------------------------------------------
    async def _jwks_handler(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.json_response({"error": "unavailable"}, status=self.status)
        if self.redirect and request.path == JWKS_PATH:
            raise web.HTTPFound(ALT_JWKS_PATH)
        if self.raw_body is not None:
            return web.Response(body=self.raw_body, content_type="application/json")
        return web.json_response(
            self.jwks_document(),
            headers={"Cache-Control": "public, max-age=15, stale-while-revalidate=15, stale-if-error=86400"},
        )

    async def _openid_handler(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        return web.json_response(auth0_openid_configuration(self.issuer))
