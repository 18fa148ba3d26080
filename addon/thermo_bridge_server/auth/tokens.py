"""Auth0 access-token verification, independent of the transport that carried the token.

Access tokens are RS256 JWTs issued by an Auth0 tenant for the configured API audience.
The signing keys come from the tenant's JWKS, fetched asynchronously with aiohttp (PyJWT's
``PyJWKClient`` blocks the loop, so it is not used) and cached. An unknown ``kid`` triggers
at most one re-fetch per cool-down, shared by every concurrent caller, so key rotation
works while a flood of forged kids cannot hammer the tenant.

Every entry point (REST's bearer header in ``bearer.py``, the WebSocket's auth message, SSE
tickets) hands the token to :meth:`Authenticator.authenticate`, which returns a
:class:`Principal` or raises an :class:`~thermo_bridge_server.errors.ApiError` in RFC 6750
terms (HTTP renders its headers, other transports its code and message):

* 401 ``invalid_token`` with an ``error_description`` for a token that is malformed,
  expired, wrongly signed, for another issuer/audience, ...;
* 403 ``insufficient_scope`` (``insufficient_scope_error``) for a missing permission;
* 503 ``auth_unavailable`` (``Retry-After``) when the JWKS has never been fetched and cannot
  be fetched now: the token may well be valid, so a 401 would wrongly tell the client to
  throw it away. Once keys are cached, fetch failures keep the cached keys in use.

The token is read strictly before any key is looked up: three segments of canonical
base64url, a header and a payload that are UTF-8 JSON objects with no repeated member (RFC 7515
§4 and RFC 7519 §4 allow rejecting them; a parser keeping the last one would let two readers
see different claims). Only then is the signature checked (PyJWT's algorithm for the header's
``alg``, which must be on our list) and the registered claims typed exactly as RFC 7519 defines
them: ``exp``/``iat``/``nbf`` are JSON numbers (a numeric string, a boolean or null is an
invalid token, whatever PyJWT would coerce), ``sub``/``iss``/``jti`` strings, ``aud`` a string
or a list of strings. Header parameters that carry a key (``jku``, ``jwk``, ``x5u``, ``x5c``)
are refused, never followed.

Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from thermo_bridge_server.config import AuthSettings
from thermo_bridge_server.errors import ApiError

_LOGGER = logging.getLogger(__name__)

REALM: Final = "thermo_bridge"
_ALG_NAME = re.compile(r"[A-Za-z0-9]{1,10}")
# error_description may only contain %x20-21 / %x23-5B / %x5D-7E (no quote, no backslash).
_DESCRIPTION_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_MIN_RSA_BITS: Final = 2048
# OpenID Connect scopes Auth0 puts in ``scope`` next to API permissions; they grant nothing here.
_OIDC_SCOPES: Final = frozenset({"openid", "profile", "email", "address", "phone", "offline_access"})
_MAX_JWKS_BYTES: Final = 512 * 1024
_VERIFIED_CACHE_SIZE: Final = 1024
_JWKS_TIMEOUT: Final = aiohttp.ClientTimeout(total=10)
JWKS_WAIT_SECONDS: Final = 1.0
"""How long a request waits for a JWKS re-fetch once keys are cached (a slow tenant must not
stall requests: known kids go on with the cached keys, an unknown kid gets its 401)."""


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: who, what they may do, which homes they were granted by claim."""

    sub: str
    permissions: frozenset[str]
    homes: frozenset[str] = frozenset()
    expires_at: float | None = None  # the token's exp (epoch seconds); lets long-lived sockets expire
    every_home: bool = False
    """Sees every home without being an admin: only tokens this server minted itself (ingress) say so."""

    def has(self, permission: str) -> bool:
        """Strict membership: ``admin`` does not imply the others unless the API says so."""
        return permission in self.permissions


class JwksUnavailableError(Exception):
    """The JWKS could not be fetched (just now, or recently enough that we do not retry yet)."""


def _www_authenticate(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    parts = [f'Bearer realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{_DESCRIPTION_UNSAFE.sub("?", description)}"')
    if scope:
        parts.append(f'scope="{_DESCRIPTION_UNSAFE.sub("?", scope)}"')
    return ", ".join(parts)


def missing_token_error() -> ApiError:
    """401 for a request without bearer credentials (no error attribute, RFC 6750 §3.1)."""
    return ApiError(
        401,
        "unauthorized",
        "Authentication required: send an Auth0 access token as 'Authorization: Bearer <token>'.",
        headers={"WWW-Authenticate": _www_authenticate()},
    )


def _bearer_error(status: int, error: str, message: str, description: str) -> ApiError:
    """An RFC 6750 error: ``error`` is both the body's code and the WWW-Authenticate error attribute."""
    return ApiError(
        status, error, f"{message}: {description}.", headers={"WWW-Authenticate": _www_authenticate(error, description)}
    )


def invalid_token_error(description: str) -> ApiError:
    """401 invalid_token with the reason in the body and in error_description."""
    return _bearer_error(401, "invalid_token", "Invalid access token", description)


def invalid_request_error(description: str) -> ApiError:
    """400 invalid_request for a malformed Authorization header (RFC 6750 §3.1)."""
    return _bearer_error(400, "invalid_request", "Malformed Authorization header", description)


def insufficient_scope_error(permission: str) -> ApiError:
    """403 insufficient_scope naming the permission the token lacks."""
    return ApiError(
        403,
        "insufficient_scope",
        f"The access token lacks the '{permission}' permission.",
        details={"required_permission": permission},
        headers={
            "WWW-Authenticate": _www_authenticate(
                "insufficient_scope", f"requires the {permission} permission", scope=permission
            )
        },
    )


def require(principal: Principal, permission: str) -> Principal:
    """``principal`` if it holds ``permission``; else ApiError 403 insufficient_scope."""
    if not principal.has(permission):
        raise insufficient_scope_error(permission)
    return principal


def _auth_unavailable_error(retry_after: float) -> ApiError:
    return ApiError(
        503,
        "auth_unavailable",
        "The identity provider's signing keys cannot be fetched right now; retry shortly.",
        headers={"Retry-After": str(max(1, round(retry_after)))},
    )


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SigningKey:
    """One trusted RSA public key; ``alg`` pins its algorithm when the JWKS names one."""

    kid: str
    key: RSAPublicKey
    alg: str | None


@dataclass(frozen=True)
class LocalIssuer:
    """Tokens this server signs itself (the ingress panel's): their key, issuer and audience.

    Verified by the same checks as the tenant's; the key id picks which issuer's rules apply,
    so a token signed with the local key but naming the tenant (or the reverse) is refused.
    """

    key: SigningKey
    issuer: str
    audience: str


def parse_jwks(document: object, algorithms: Iterable[str]) -> dict[str, SigningKey]:
    """Usable signing keys by kid; keys that are not RSA signing keys for our algorithms are skipped."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("JWKS document has no 'keys' list")
    allowed = set(algorithms)
    keys: dict[str, SigningKey] = {}
    for raw in document["keys"]:
        if not isinstance(raw, Mapping):
            continue
        kid = raw.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if raw.get("kty") != "RSA" or raw.get("use", "sig") != "sig":
            continue  # encryption keys and EC/OKP/oct keys are never used for our signatures
        alg = raw.get("alg")
        if alg is not None and alg not in allowed:
            continue
        # Only the public parameters: a JWKS that (wrongly) publishes "d" must not matter.
        data = {k: raw[k] for k in ("kty", "n", "e") if k in raw}
        try:
            public = jwt.PyJWK(data, algorithm="RS256").key
        except (jwt.PyJWTError, ValueError, TypeError) as err:  # bad base64, n too small, ...
            _LOGGER.warning("Ignoring unusable JWKS key %s: %s", kid, err)
            continue
        if not isinstance(public, RSAPublicKey) or public.key_size < _MIN_RSA_BITS:
            _LOGGER.warning("Ignoring JWKS key %s: not an RSA key of at least %d bits", kid, _MIN_RSA_BITS)
            continue
        keys[kid] = SigningKey(kid, public, alg if isinstance(alg, str) else None)
    return keys


_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")
# NumericDate (RFC 7519 §2): a JSON number of seconds since the epoch; this range is what a
# date can be (1970 up to the end of year 9999), so no comparison meets inf or an overflow.
_MAX_NUMERIC_DATE: Final = 253_402_300_799
# Header parameters that carry or point at a key: the keys come from the JWKS, never the token.
_KEY_HEADERS: Final = ("jku", "jwk", "x5u", "x5c")
MAX_SUB_LENGTH: Final = 256


def _b64url_decode(segment: str, part: str) -> bytes:
    """Base64url without padding (RFC 7515 §2), in its one canonical spelling."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise _RejectedError(f"token {part} is not base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    # Unused trailing bits must be zero: otherwise several strings decode to the same bytes.
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != segment:
        raise _RejectedError(f"token {part} is not base64url")
    return data


class _DuplicateMemberError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: a repeated member name is refused, never resolved to one of its values."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateMemberError
    return obj


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _json_object(segment: str, part: str) -> dict[str, Any]:
    """A segment's strict JSON object: UTF-8, no NaN/Infinity, no repeated member."""
    data = _b64url_decode(segment, part)
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except _DuplicateMemberError:
        raise _RejectedError(f"token {part} repeats a member") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _RejectedError(f"unreadable token {part}") from None
    if not isinstance(value, dict):
        raise _RejectedError(f"unreadable token {part}")
    return value


def _numeric_date(claims: Mapping[str, Any], name: str) -> float:
    """An RFC 7519 NumericDate claim: a JSON number (a string, boolean or null is not one)."""
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _MAX_NUMERIC_DATE:
        raise _RejectedError(f"claim {name} must be a NumericDate")
    return float(value)


def _claims(claims: Mapping[str, Any], settings: AuthSettings, now: float, local: LocalIssuer | None = None) -> None:
    """The registered claims, typed as RFC 7519 defines them, then checked against this API (or ``local``'s)."""
    for name in ("exp", "iat", "iss", "aud", "sub"):
        if name not in claims:
            raise _RejectedError(f"claim {name} missing")
    exp = _numeric_date(claims, "exp")
    iat = _numeric_date(claims, "iat")
    nbf = _numeric_date(claims, "nbf") if "nbf" in claims else None
    for name in ("iss", "sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise _RejectedError(f"claim {name} must be a string")
    sub: str = claims["sub"]
    if not sub.strip():
        raise _RejectedError("claim sub missing")
    if len(sub) > MAX_SUB_LENGTH or not sub.isprintable():
        raise _RejectedError(f"claim sub must be at most {MAX_SUB_LENGTH} printable characters")
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise _RejectedError("claim aud must be a string or a list of strings")
    leeway = settings.leeway
    if exp <= now - leeway:
        raise _RejectedError("token expired")
    if (nbf is not None and nbf > now + leeway) or iat > now + leeway:
        raise _RejectedError("token not yet valid")
    if claims["iss"] != (local.issuer if local else settings.issuer):
        raise _RejectedError("wrong issuer")
    if (local.audience if local else settings.audience) not in audiences:
        raise _RejectedError("wrong audience")


class _RejectedError(Exception):
    """Internal: the token is not acceptable; the message is the RFC 6750 error_description.

    ``reason`` is what the rejection is counted as: a fixed string, so descriptions that echo
    the token (an algorithm's name) cannot grow the counters without bound.
    """

    def __init__(self, description: str, reason: str | None = None) -> None:
        super().__init__(description)
        self.reason = reason or description


@dataclass
class AuthStats:
    """Counters for /metrics."""

    jwks_fetches: int = 0
    jwks_fetch_failures: int = 0
    accepted: int = 0
    cache_hits: int = 0  # accepted from the verified-token cache (no signature check needed)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)


class Authenticator:
    """Verifies Auth0 access tokens and turns them into Principals."""

    def __init__(
        self,
        settings: AuthSettings,
        session: aiohttp.ClientSession,
        *,
        static_jwks: Mapping[str, Any] | None = None,
        local: LocalIssuer | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``static_jwks`` pins the keys (dev mode: the server is its own issuer); nothing is fetched."""
        self.settings = settings
        self._session = session
        self._clock = clock
        self._wall_clock = wall_clock
        self._verified: dict[str, tuple[Principal, SigningKey]] = {}
        self._url = settings.effective_jwks_url
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None
        self._last_unknown_kid_fetch: float | None = None
        self._failed_at: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._static = static_jwks is not None
        self._local = local
        self.stats = AuthStats()
        if static_jwks is not None:
            self._keys = parse_jwks(static_jwks, settings.algorithms)
        elif urlsplit(self._url).scheme != "https" and not _is_loopback(self._url):
            raise ValueError(f"jwks_url must use https (got {self._url})")

    @property
    def key_ids(self) -> frozenset[str]:
        """The kids currently trusted (for diagnostics and tests)."""
        return frozenset(self._keys)

    async def prefetch(self) -> bool:
        """Warm the key cache at start-up; a failure is logged, not raised (requests retry later)."""
        if self._static:
            return True
        try:
            await self._refresh()
        except JwksUnavailableError:
            return False
        return True

    async def close(self) -> None:
        """Cancel a JWKS fetch still in flight (server shutdown); the cache is kept."""
        task = self._inflight
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    async def authenticate(self, token: str) -> Principal:
        """Verify ``token`` fully; raise ApiError 401 (or 503 while keys are unobtainable)."""
        try:
            principal = await self._authenticate(token)
        except _RejectedError as err:
            self.stats.rejected_by_reason[err.reason] += 1
            raise invalid_token_error(str(err)) from None
        except ApiError as err:
            self.stats.rejected_by_reason[err.code] += 1
            raise
        self.stats.accepted += 1
        return principal

    async def _authenticate(self, token: str) -> Principal:
        settings = self.settings
        if len(token) > settings.max_token_bytes:
            raise _RejectedError(f"token larger than {settings.max_token_bytes} bytes")
        segments = token.split(".")
        if len(segments) != 3 or not segments[0] or not segments[1]:
            raise _RejectedError("not a signed JWT")
        cached = self._verified.get(token)
        if cached is not None:
            principal, signing_key = cached
            if principal.expires_at is not None and principal.expires_at > self._wall_clock() - settings.leeway:
                # _key_for refreshes an expired JWKS, so a revoked key stops cached tokens too.
                current = await self._key_for(signing_key.kid)
                if current is signing_key:
                    self.stats.cache_hits += 1
                    return principal
                if current is None:
                    self._verified.pop(token, None)
                    raise _RejectedError("unknown signing key")
            self._verified.pop(token, None)  # expired, or the key set was re-fetched: verify from scratch
        header = _json_object(segments[0], "header")
        alg = header.get("alg")
        # Decide the algorithm from our allow-list before any key is looked up: never let the
        # token choose (alg=none, HS256 keyed with the public key, ES*, ...).
        if not isinstance(alg, str) or alg not in settings.algorithms:
            shown = alg if isinstance(alg, str) and _ALG_NAME.fullmatch(alg) else "in header"
            raise _RejectedError(f"algorithm {shown} not allowed", "algorithm not allowed")
        if "crit" in header:
            raise _RejectedError("critical header parameters are not supported")
        if any(name in header for name in _KEY_HEADERS):
            raise _RejectedError("keys in the token header are not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _RejectedError("token header has no key id")
        if not segments[2]:
            raise _RejectedError("signature missing")
        signature = _b64url_decode(segments[2], "signature")
        # Parsed in full before any key is looked up: a malformed token never causes a JWKS fetch.
        claims = _json_object(segments[1], "payload")
        local = self._local if self._local is not None and kid == self._local.key.kid else None
        key = await self._key_for(kid)
        if key is None:
            raise _RejectedError("unknown signing key")
        if key.alg is not None and key.alg != alg:
            raise _RejectedError("algorithm does not match the signing key")
        algorithm = jwt.get_algorithm_by_name(alg)
        signing_input = f"{segments[0]}.{segments[1]}".encode("ascii")
        if not algorithm.verify(signing_input, key.key, signature):
            raise _RejectedError("signature verification failed")
        _claims(claims, settings, self._wall_clock(), local)
        principal = self._principal(claims, every_home=local is not None)
        # Clients reuse a token for many requests: remember the verified result until exp
        # (exp and the key are re-checked on every hit; nbf/iat only get more valid with time).
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, key)
        return principal

    def _principal(self, claims: Mapping[str, Any], *, every_home: bool = False) -> Principal:
        settings = self.settings
        permissions: set[str] = set()
        raw_permissions = claims.get(settings.permissions_claim)
        if raw_permissions is not None:
            if not isinstance(raw_permissions, list) or not all(isinstance(p, str) for p in raw_permissions):
                raise _RejectedError(f"claim {settings.permissions_claim} must be a list of strings")
            permissions.update(raw_permissions)
        raw_scope = claims.get(settings.scope_claim)
        if raw_scope is not None:
            if not isinstance(raw_scope, str):
                raise _RejectedError(f"claim {settings.scope_claim} must be a space-separated string")
            permissions.update(scope for scope in raw_scope.split() if scope not in _OIDC_SCOPES)
        raw_homes = claims.get(settings.homes_claim)
        homes: frozenset[str] = frozenset()
        if raw_homes is not None:
            if not isinstance(raw_homes, list) or not all(isinstance(h, str) and h for h in raw_homes):
                raise _RejectedError("homes claim must be a list of strings")
            homes = frozenset(raw_homes)
        return Principal(
            sub=claims["sub"],
            permissions=frozenset(permissions),
            homes=homes,
            expires_at=float(claims["exp"]),
            every_home=every_home,
        )

    async def _key_for(self, kid: str) -> SigningKey | None:
        if self._local is not None and kid == self._local.key.kid:
            return self._local.key
        if self._static:
            return self._keys.get(kid)
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self.settings.jwks_cache_seconds:
            # First use or cache expired. If the tenant is down or slow, keep using the cached keys
            # (the fetch goes on in the background and replaces them when it succeeds).
            try:
                await self._refresh(wait=JWKS_WAIT_SECONDS if self._keys else None)
            except JwksUnavailableError:
                if not self._keys:
                    raise _auth_unavailable_error(self._retry_in()) from None
            else:
                return self._keys.get(kid)  # just fetched: an unknown kid is unknown, no second fetch
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._inflight is None:
            # Only one re-fetch per cool-down, however many bogus kids arrive.
            last = self._last_unknown_kid_fetch
            if last is not None and now - last < self.settings.unknown_kid_cooldown:
                return None
            self._last_unknown_kid_fetch = now
            _LOGGER.info("Unknown signing key id; re-fetching the JWKS")
        try:
            await self._refresh(wait=JWKS_WAIT_SECONDS)
        except JwksUnavailableError:
            return None
        return self._keys.get(kid)

    def _retry_in(self) -> float:
        if self._failed_at is None:
            return self.settings.jwks_retry_seconds
        return max(0.0, self.settings.jwks_retry_seconds - (self._clock() - self._failed_at))

    async def _refresh(self, wait: float | None = None) -> None:
        """Fetch the JWKS; concurrent callers share one in-flight request.

        With ``wait`` (keys are cached), only the caller that starts the fetch waits for it,
        at most that many seconds; anyone else, or a fetch that takes longer, gets
        JwksUnavailableError at once (and goes on with the cache). The fetch itself runs to
        its own timeout.
        """
        started = self._inflight is None
        if started:
            if self._failed_at is not None and self._clock() - self._failed_at < self.settings.jwks_retry_seconds:
                raise JwksUnavailableError("JWKS fetch recently failed")
            self._inflight = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight.add_done_callback(self._clear_inflight)
        fetch = self._inflight
        assert fetch is not None  # noqa: S101 - set just above or still in flight
        if wait is None:
            # shield: a cancelled request must not cancel the fetch others are waiting for.
            await asyncio.shield(fetch)
            return
        if not started:
            raise JwksUnavailableError("JWKS fetch in progress")
        done, _ = await asyncio.wait({fetch}, timeout=wait)
        if not done:
            raise JwksUnavailableError("JWKS fetch still in progress")
        fetch.result()

    def _clear_inflight(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # mark retrieved; waiters get it through the shield

    async def _fetch(self) -> None:
        self.stats.jwks_fetches += 1
        try:
            # No redirects: the keys come from the configured URL or not at all.
            async with self._session.get(
                self._url, timeout=_JWKS_TIMEOUT, headers={"Accept": "application/json"}, allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                body = await resp.content.read(_MAX_JWKS_BYTES + 1)
                if len(body) > _MAX_JWKS_BYTES:
                    raise ValueError("document too large")
            keys = parse_jwks(json.loads(body), self.settings.algorithms)
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, jwt.PyJWTError) as err:
            self.stats.jwks_fetch_failures += 1
            self._failed_at = self._clock()
            _LOGGER.warning("Fetching the JWKS from %s failed: %s", self._url, err or type(err).__name__)
            raise JwksUnavailableError(str(err)) from None
        if not keys:
            _LOGGER.warning("The JWKS at %s has no usable RSA signing keys", self._url)
            if self._keys:  # a broken document must not revoke every cached key
                self.stats.jwks_fetch_failures += 1
                self._failed_at = self._clock()
                raise JwksUnavailableError("no usable keys in the JWKS document")
        added = set(keys) - set(self._keys)
        removed = set(self._keys) - set(keys)
        if self._fetched_at is not None and (added or removed):
            _LOGGER.info("JWKS rotated: %d key(s) added, %d removed", len(added), len(removed))
        self._keys = keys
        self._fetched_at = self._clock()
        self._failed_at = None
