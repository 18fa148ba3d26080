"""Dev-only auth: the server is its own token issuer, shaped like an Auth0 tenant.

For trying the API without an Auth0 tenant. A local RSA key (created on first use, file mode
0600, reused afterwards) signs tokens; the JWKS and OpenID configuration are served in
exactly Auth0's format, so the same :class:`~thermo_bridge_server.auth.Authenticator`
verifies them. The server must only build a :class:`DevIssuer` when dev auth was explicitly
enabled; creating one logs a loud warning. ``thermo-bridge-token`` mints tokens from the
same key file.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import stat
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from thermo_bridge_server.config import DEFAULT_HOMES_CLAIM, AuthSettings

from .tokens import Authenticator

_LOGGER = logging.getLogger(__name__)

DEFAULT_DEV_ISSUER: Final = "http://localhost:8099/"
DEFAULT_DEV_AUDIENCE: Final = "https://thermo-bridge.local/api"
DEFAULT_PERMISSIONS: Final = ("read:devices", "write:devices")
DEV_CLIENT_ID: Final = "thermo-bridge-dev"
DEFAULT_DEV_KEY_PATH: Final = "thermo_bridge_dev_key.pem"  # the standalone server's default (config.py)
_KEY_BITS: Final = 2048
_MAX_TTL: Final = 30 * 24 * 3600


class DevAuthError(Exception):
    """The dev key file cannot be used (unreadable, not an RSA key, ...)."""


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def jwk_thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 thumbprint: a stable kid derived from the key itself."""
    numbers = public_key.public_numbers()
    canonical = json.dumps(
        {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}, separators=(",", ":")
    )
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def self_signed_certificate(private_key: rsa.RSAPrivateKey, common_name: str) -> x509.Certificate:
    """The self-signed certificate Auth0 publishes in ``x5c`` (CN = the tenant domain)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or "localhost")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )


def auth0_jwk(private_key: rsa.RSAPrivateKey, kid: str, *, common_name: str, alg: str = "RS256") -> dict[str, Any]:
    """One key exactly as Auth0's ``/.well-known/jwks.json`` lists it (public parts only)."""
    numbers = private_key.public_key().public_numbers()
    der = self_signed_certificate(private_key, common_name).public_bytes(serialization.Encoding.DER)
    return {
        "kty": "RSA",
        "use": "sig",
        "n": _b64url_uint(numbers.n),
        "e": _b64url_uint(numbers.e),
        "kid": kid,
        "x5t": base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode("ascii"),  # noqa: S324
        "x5c": [base64.b64encode(der).decode("ascii")],
        "alg": alg,
    }


def auth0_openid_configuration(issuer: str) -> dict[str, Any]:
    """The discovery document as an Auth0 tenant serves it (endpoints under the issuer)."""
    base = issuer if issuer.endswith("/") else issuer + "/"
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}authorize",
        "token_endpoint": f"{base}oauth/token",
        "device_authorization_endpoint": f"{base}oauth/device/code",
        "userinfo_endpoint": f"{base}userinfo",
        "mfa_challenge_endpoint": f"{base}mfa/challenge",
        "jwks_uri": f"{base}.well-known/jwks.json",
        "registration_endpoint": f"{base}oidc/register",
        "revocation_endpoint": f"{base}oauth/revoke",
        "scopes_supported": [
            "openid",
            "profile",
            "offline_access",
            "name",
            "given_name",
            "family_name",
            "nickname",
            "email",
            "email_verified",
            "picture",
            "created_at",
            "identities",
            "phone",
            "address",
        ],
        "response_types_supported": [
            "code",
            "token",
            "id_token",
            "code token",
            "code id_token",
            "token id_token",
            "code token id_token",
        ],
        "code_challenge_methods_supported": ["S256", "plain"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["public"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "claims_supported": [
            "aud",
            "auth_time",
            "created_at",
            "email",
            "email_verified",
            "exp",
            "family_name",
            "given_name",
            "iat",
            "identities",
            "iss",
            "name",
            "nickname",
            "phone_number",
            "picture",
            "sub",
        ],
        "request_uri_parameter_supported": False,
        "request_parameter_supported": False,
        "id_token_signing_alg_values_supported": ["HS256", "RS256", "PS256"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "PS256"],
        "end_session_endpoint": f"{base}oidc/logout",
    }


def load_or_create_key(path: str | os.PathLike[str]) -> tuple[rsa.RSAPrivateKey, bool]:
    """The RSA key in ``path`` (PEM), creating it with mode 0600 on first use; (key, created)."""
    key_path = Path(path)
    created = False
    try:
        pem = key_path.read_bytes()
    except FileNotFoundError:
        try:
            pem = _create_key_file(key_path)
        except OSError as err:
            raise DevAuthError(f"cannot create the dev auth key {key_path}: {err.strerror}") from None
        created = True
    except OSError as err:
        raise DevAuthError(f"cannot read the dev auth key {key_path}: {err.strerror}") from None
    if not created:
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if mode & 0o077:
            _LOGGER.warning("Dev auth key %s was readable by others (mode %o); setting 0600", key_path, mode)
            key_path.chmod(0o600)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise DevAuthError(f"{key_path} is not an unencrypted PEM private key: {err}") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < _KEY_BITS:
        raise DevAuthError(f"{key_path} is not an RSA private key of at least {_KEY_BITS} bits")
    return key, created


def _create_key_file(key_path: Path) -> bytes:
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # Write a private temp file, then hard-link it into place: the key is never visible
    # half-written or with a looser mode, and a concurrent creator's key wins cleanly.
    tmp = key_path.with_name(f".{key_path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, key_path)
        except FileExistsError:
            return key_path.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    return pem


def _normalise_issuer(issuer: str) -> str:
    parts = urlsplit(issuer)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DevAuthError(f"dev issuer must be an http(s) base URL, got {issuer!r}")
    return issuer if issuer.endswith("/") else issuer + "/"


class DevIssuer:
    """A local Auth0 look-alike: signs tokens and serves its JWKS + OpenID configuration."""

    def __init__(
        self,
        key_path: str | os.PathLike[str],
        *,
        issuer: str = DEFAULT_DEV_ISSUER,
        audience: str = DEFAULT_DEV_AUDIENCE,
        homes_claim: str = DEFAULT_HOMES_CLAIM,
        warn: bool = True,
    ) -> None:
        """Load or create the key (blocking file I/O and RSA generation: call at start-up)."""
        self.issuer = _normalise_issuer(issuer)
        self.audience = audience
        self.homes_claim = homes_claim
        self.key_path = Path(key_path)
        self._key, created = load_or_create_key(self.key_path)
        self.kid = jwk_thumbprint(self._key.public_key())
        self._jwk = auth0_jwk(self._key, self.kid, common_name=urlsplit(self.issuer).hostname or "localhost")
        if warn:
            _LOGGER.warning(
                "\n%s\nDEV AUTH IS ENABLED: this server issues and accepts its own tokens (issuer %s).\n"
                "Anyone holding the key file %s%s can mint tokens. Never use this in production;\n"
                "configure an Auth0 tenant instead.\n%s",
                "!" * 78,
                self.issuer,
                self.key_path,
                " (just created)" if created else "",
                "!" * 78,
            )

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The verification key (what the JWKS publishes)."""
        return self._key.public_key()

    @property
    def jwks_url(self) -> str:
        """Where the JWKS is served (under the issuer, like Auth0)."""
        return f"{self.issuer}.well-known/jwks.json"

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (public key only)."""
        return {"keys": [dict(self._jwk)]}

    def openid_configuration(self) -> dict[str, Any]:
        """The discovery document, Auth0-shaped."""
        return auth0_openid_configuration(self.issuer)

    def settings(self, **overrides: Any) -> AuthSettings:  # noqa: ANN401
        """AuthSettings that accept this issuer's tokens."""
        values: dict[str, Any] = {
            "issuer": self.issuer,
            "audience": self.audience,
            "jwks_url": self.jwks_url,
            "homes_claim": self.homes_claim,
        }
        values.update(overrides)
        return AuthSettings(**values)

    def authenticator(self, session: aiohttp.ClientSession, **overrides: Any) -> Authenticator:  # noqa: ANN401
        """An Authenticator pinned to this key: no HTTP round trip to ourselves."""
        return Authenticator(self.settings(**overrides), session, static_jwks=self.jwks())

    def mint(
        self,
        sub: str,
        permissions: Iterable[str] = DEFAULT_PERMISSIONS,
        homes: Iterable[str] = (),
        ttl: float = 3600,
        **claims: Any,  # noqa: ANN401
    ) -> str:
        """A signed access token shaped like Auth0's (RBAC permissions claim, namespaced homes)."""
        if not sub:
            raise ValueError("sub must not be empty")
        if not 0 < ttl <= _MAX_TTL:
            raise ValueError(f"ttl must be between 1 and {_MAX_TTL} seconds")
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": [self.audience, f"{self.issuer}userinfo"],
            "iat": now,
            "exp": now + int(ttl),
            "scope": "openid profile email",
            "azp": DEV_CLIENT_ID,
            "permissions": sorted(set(permissions)),
        }
        home_list = sorted(set(homes))
        if home_list:
            payload[self.homes_claim] = home_list
        payload.update(claims)
        return jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def routes(self) -> list[web.RouteDef]:
        """``/.well-known/jwks.json`` and ``/.well-known/openid-configuration`` (unauthenticated)."""

        async def jwks_handler(_request: web.Request) -> web.Response:
            return web.json_response(self.jwks(), headers={"Cache-Control": "public, max-age=15"})

        async def openid_handler(_request: web.Request) -> web.Response:
            return web.json_response(self.openid_configuration(), headers={"Cache-Control": "public, max-age=15"})

        return [
            web.get("/.well-known/jwks.json", jwks_handler),
            web.get("/.well-known/openid-configuration", openid_handler),
        ]


def _split_list(values: Sequence[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or ():
        out.extend(part for part in value.replace(",", " ").split() if part)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``thermo-bridge-token``: print a dev token signed with the server's dev key."""
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="thermo-bridge-token",
        description="Mint a DEV-ONLY access token for a thermo_bridge server running with dev auth.",
    )
    parser.add_argument(
        "--key",
        default=env.get("THERMO_BRIDGE_DEV_KEY_PATH", DEFAULT_DEV_KEY_PATH),
        help="the server's dev key file, created if missing (default: env THERMO_BRIDGE_DEV_KEY_PATH, "
        "else %(default)s as the standalone server uses)",
    )
    parser.add_argument(
        "--issuer",
        default=env.get("THERMO_BRIDGE_DEV_ISSUER", DEFAULT_DEV_ISSUER),
        help="the server's base URL, its issuer (default %(default)s; env THERMO_BRIDGE_DEV_ISSUER)",
    )
    parser.add_argument(
        "--audience",
        default=env.get("THERMO_BRIDGE_DEV_AUDIENCE", DEFAULT_DEV_AUDIENCE),
        help="API audience (default %(default)s)",
    )
    parser.add_argument("--sub", default="dev|user", help="subject (user id), default %(default)s")
    parser.add_argument(
        "--permissions",
        nargs="*",
        default=list(DEFAULT_PERMISSIONS),
        help="permissions, space or comma separated (default: read:devices write:devices)",
    )
    parser.add_argument("--homes", nargs="*", default=[], help="homes granted by claim")
    parser.add_argument(
        "--homes-claim",
        default=env.get("THERMO_BRIDGE_AUTH0_HOMES_CLAIM", DEFAULT_HOMES_CLAIM),
        help="the claim the homes go in: the server's auth0_homes_claim (default %(default)s; "
        "env THERMO_BRIDGE_AUTH0_HOMES_CLAIM)",
    )
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        issuer = DevIssuer(
            args.key, issuer=args.issuer, audience=args.audience, homes_claim=args.homes_claim, warn=False
        )
        token = issuer.mint(args.sub, _split_list(args.permissions), _split_list(args.homes), ttl=args.ttl)
    except (DevAuthError, ValueError) as err:
        print(f"thermo-bridge-token: {err}", file=sys.stderr)
        return 2
    print("DEV token (dev auth only, never valid against Auth0):", file=sys.stderr)
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
