"""Auth0 token verification, over real HTTP, against a real Auth0-shaped JWKS endpoint.

Every attack in the matrix goes through the middleware of a small aiohttp app (the API's own
routes re-run the isolation cases in test_isolation.py). The JWKS cache behaviour (rotation,
cool-down, shared in-flight fetches, outages) is counted on the JWKS server itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDict
from yarl import URL

from tests.server.jwks import ALT_JWKS_PATH, HOMES_CLAIM, JwksServer, b64url, b64url_json
from thermo_bridge_server.auth import tokens as auth_module
from thermo_bridge_server.auth.bearer import auth_middleware, require_permission
from thermo_bridge_server.auth.devauth import DevAuthError, DevIssuer, load_or_create_key
from thermo_bridge_server.auth.devauth import main as token_main
from thermo_bridge_server.auth.tokens import Authenticator, Principal, parse_jwks
from thermo_bridge_server.config import AuthSettings
from thermo_bridge_server.errors import ApiError, error_response

REALM = 'Bearer realm="thermo_bridge"'
ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """Monotonic clock the tests advance instead of sleeping (cache ages, cool-downs)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def build_app(authenticator: Authenticator) -> web.Application:
    """A small protected API: read needs read:devices, write needs write:devices, /health is open."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as err:
            return error_response(err)

    async def read(request: web.Request) -> web.Response:
        principal = require_permission(request, "read:devices")
        return web.json_response(
            {"sub": principal.sub, "permissions": sorted(principal.permissions), "homes": sorted(principal.homes)}
        )

    async def write(request: web.Request) -> web.Response:
        principal = require_permission(request, "write:devices")
        return web.json_response({"sub": principal.sub, "device": request.match_info["device_id"]})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # Auth0 tokens fit aiohttp's default 8190-byte header limit; raise it so our own size
    # limit (not aiohttp's parser) is what rejects the oversized token.
    app = web.Application(middlewares=[errors, auth_middleware(authenticator)], handler_args={"max_field_size": 65536})
    app.router.add_get("/api/v1/devices", read)
    app.router.add_post("/api/v1/devices/{device_id}/commands", write)
    app.router.add_get("/health", health)
    return app


@dataclass
class Env:
    server: JwksServer
    authenticator: Authenticator
    client: TestClient[web.Request, web.Application]
    clock: FakeClock

    async def get(self, authorization: str | list[str] | None, path: str = "/api/v1/devices") -> aiohttp.ClientResponse:
        if authorization is None:
            return await self.client.get(path)
        if isinstance(authorization, list):
            headers = CIMultiDict([("Authorization", value) for value in authorization])
            return await self.client.get(path, headers=headers)
        return await self.client.get(path, headers={"Authorization": authorization})


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def env(jwks_server: JwksServer, http_session: aiohttp.ClientSession, aiohttp_client: Any) -> Env:
    clock = FakeClock()
    authenticator = Authenticator(jwks_server.settings(), http_session, clock=clock)
    client = await aiohttp_client(build_app(authenticator))
    return Env(jwks_server, authenticator, client, clock)


async def assert_error(resp: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    """The documented error body and the RFC 6750 challenge for this status."""
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert body["error"]["status"] == status
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body


def challenge(resp: aiohttp.ClientResponse) -> str:
    return resp.headers.get("WWW-Authenticate", "")


# --- the attack matrix ---------------------------------------------------------------------


def _tamper_payload(s: JwksServer) -> str:
    header, _payload, signature = s.make_token(permissions=["read:devices"]).split(".")
    forged = b64url_json(s.claims(permissions=["read:devices", "write:devices", "admin"]))
    return f"{header}.{forged}.{signature}"


def _tamper_header(s: JwksServer) -> str:
    _header, payload, signature = s.make_token().split(".")
    forged = b64url_json({"alg": "RS256", "typ": "JWT", "kid": s.current_kid, "x": 1})
    return f"{forged}.{payload}.{signature}"


def _strip_signature(s: JwksServer) -> str:
    header, payload, _signature = s.make_token().split(".")
    return f"{header}.{payload}."


def _flip_signature(s: JwksServer) -> str:
    header, payload, signature = s.make_token().split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[10] ^= 0x01
    return f"{header}.{payload}.{b64url(bytes(raw))}"


def _rotated_out(s: JwksServer) -> str:
    old, _new = s.rotate()
    return s.make_token(kid=old)


def _unknown_kid(s: JwksServer) -> str:
    kid = s.add_key(publish=False)
    return s.make_token(kid=kid)


def _permissions_string(s: JwksServer) -> str:
    payload = s.claims(permissions=None)
    payload["permissions"] = "read:devices write:devices"
    return s.sign({"alg": "RS256", "typ": "JWT", "kid": s.current_kid}, payload)


def _attacker_key_embedded(s: JwksServer) -> str:
    """Signed with the attacker's own key, which rides along in the header (jwk) and a jku URL."""
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = attacker.public_key().public_numbers()
    jwk = {"kty": "RSA", "n": b64url(numbers.n.to_bytes(256, "big")), "e": "AQAB", "kid": s.current_kid}
    return s.make_token(signing_key=attacker, headers={"jwk": jwk, "jku": "https://evil.example/jwks.json"})


def _jku_unknown_kid(s: JwksServer) -> str:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return s.make_token(
        signing_key=attacker, headers={"kid": "attacker-kid", "jku": "https://evil.example/.well-known/jwks.json"}
    )


def _oversized(s: JwksServer) -> str:
    return s.make_token(padding="x" * 9000)


NOW = int(time.time())

# (case id, Authorization header value built from the server, status, error code, RFC 6750 error attr)
ATTACKS: list[tuple[str, Callable[[JwksServer], str | None], int, str, str | None]] = [
    ("alg_none", lambda s: "Bearer " + s.make_token(alg="none"), 401, "invalid_token", "invalid_token"),
    ("hs256_with_public_key", lambda s: "Bearer " + s.make_token(alg="HS256"), 401, "invalid_token", "invalid_token"),
    ("hs512_with_public_key", lambda s: "Bearer " + s.make_token(alg="HS512"), 401, "invalid_token", "invalid_token"),
    (
        "alg_lowercase",
        lambda s: "Bearer " + s.make_token(headers={"alg": "rs256"}),
        401,
        "invalid_token",
        "invalid_token",
    ),
    ("rs512_not_allowed", lambda s: "Bearer " + s.make_token(alg="RS512"), 401, "invalid_token", "invalid_token"),
    ("ps256_not_allowed", lambda s: "Bearer " + s.make_token(alg="PS256"), 401, "invalid_token", "invalid_token"),
    ("es256_not_allowed", lambda s: "Bearer " + s.make_token(alg="ES256"), 401, "invalid_token", "invalid_token"),
    ("expired", lambda s: "Bearer " + s.make_token(exp=time.time() - 120), 401, "invalid_token", "invalid_token"),
    (
        "not_yet_valid",
        lambda s: "Bearer " + s.make_token(nbf=time.time() + 300),
        401,
        "invalid_token",
        "invalid_token",
    ),
    ("iat_in_future", lambda s: "Bearer " + s.make_token(iat=time.time() + 300), 401, "invalid_token", "invalid_token"),
    (
        "wrong_issuer",
        lambda s: "Bearer " + s.make_token(iss="https://evil.eu.auth0.com/"),
        401,
        "invalid_token",
        "invalid_token",
    ),
    (
        "issuer_without_trailing_slash",
        lambda s: "Bearer " + s.make_token(iss=s.issuer.rstrip("/")),
        401,
        "invalid_token",
        "invalid_token",
    ),
    (
        "wrong_audience",
        lambda s: "Bearer " + s.make_token(aud="https://other-api.example"),
        401,
        "invalid_token",
        "invalid_token",
    ),
    (
        "audience_list_without_ours",
        lambda s: "Bearer " + s.make_token(aud=["https://other-api.example", f"{s.issuer}userinfo"]),
        401,
        "invalid_token",
        "invalid_token",
    ),
    ("audience_missing", lambda s: "Bearer " + s.make_token(omit=["aud"]), 401, "invalid_token", "invalid_token"),
    ("unknown_kid", lambda s: "Bearer " + _unknown_kid(s), 401, "invalid_token", "invalid_token"),
    ("kid_missing", lambda s: "Bearer " + s.make_token(omit_kid=True), 401, "invalid_token", "invalid_token"),
    ("attacker_key_in_header", lambda s: "Bearer " + _attacker_key_embedded(s), 401, "invalid_token", "invalid_token"),
    ("jku_to_attacker_jwks", lambda s: "Bearer " + _jku_unknown_kid(s), 401, "invalid_token", "invalid_token"),
    ("tampered_payload", lambda s: "Bearer " + _tamper_payload(s), 401, "invalid_token", "invalid_token"),
    ("tampered_header", lambda s: "Bearer " + _tamper_header(s), 401, "invalid_token", "invalid_token"),
    ("signature_stripped", lambda s: "Bearer " + _strip_signature(s), 401, "invalid_token", "invalid_token"),
    ("signature_bit_flipped", lambda s: "Bearer " + _flip_signature(s), 401, "invalid_token", "invalid_token"),
    ("missing_sub", lambda s: "Bearer " + s.make_token(omit=["sub"]), 401, "invalid_token", "invalid_token"),
    ("empty_sub", lambda s: "Bearer " + s.make_token(sub=""), 401, "invalid_token", "invalid_token"),
    ("missing_exp", lambda s: "Bearer " + s.make_token(omit=["exp"]), 401, "invalid_token", "invalid_token"),
    ("missing_iat", lambda s: "Bearer " + s.make_token(omit=["iat"]), 401, "invalid_token", "invalid_token"),
    (
        "permissions_not_a_list",
        lambda s: "Bearer " + _permissions_string(s),
        401,
        "invalid_token",
        "invalid_token",
    ),
    (
        "homes_not_a_list",
        lambda s: "Bearer " + s.make_token(custom={HOMES_CLAIM: "home-a"}),
        401,
        "invalid_token",
        "invalid_token",
    ),
    ("rotated_out_key", lambda s: "Bearer " + _rotated_out(s), 401, "invalid_token", "invalid_token"),
    ("oversized_token", lambda s: "Bearer " + _oversized(s), 401, "invalid_token", "invalid_token"),
    ("garbage_base64", lambda _s: "Bearer abc.def.ghi", 401, "invalid_token", "invalid_token"),
    ("two_segments", lambda s: "Bearer " + s.make_token().rsplit(".", 1)[0], 401, "invalid_token", "invalid_token"),
    (
        "jwe_five_segments",
        lambda s: "Bearer " + s.make_token() + ".AAAA.BBBB",
        401,
        "invalid_token",
        "invalid_token",
    ),
    ("header_not_an_object", lambda _s: "Bearer W10.e30.c2ln", 401, "invalid_token", "invalid_token"),
    (
        "scope_not_a_string",
        lambda s: "Bearer " + s.make_token(permissions=None, custom={"scope": ["read:devices"]}),
        401,
        "invalid_token",
        "invalid_token",
    ),
    (
        "not_json_header",
        lambda _s: "Bearer " + b64url(b"\xff\xfe") + ".e30.c2ln",
        401,
        "invalid_token",
        "invalid_token",
    ),
    ("no_authorization_header", lambda _s: None, 401, "unauthorized", None),
    ("basic_scheme", lambda _s: "Basic dXNlcjpwYXNz", 401, "unauthorized", None),
    ("bearer_without_token", lambda _s: "Bearer", 400, "invalid_request", "invalid_request"),
    ("bearer_extra_parts", lambda s: f"Bearer {s.make_token()} extra", 400, "invalid_request", "invalid_request"),
    ("bearer_bad_characters", lambda _s: "Bearer ab$c.d%ef.g!hi", 400, "invalid_request", "invalid_request"),
]


# Why each attack must fail: the RFC 6750 error_description proves the right check caught it.
REASONS: dict[str, str | None] = {
    "alg_none": "algorithm none not allowed",
    "hs256_with_public_key": "algorithm HS256 not allowed",
    "hs512_with_public_key": "algorithm HS512 not allowed",
    "alg_lowercase": "algorithm rs256 not allowed",
    "rs512_not_allowed": "algorithm RS512 not allowed",
    "ps256_not_allowed": "algorithm PS256 not allowed",
    "es256_not_allowed": "algorithm ES256 not allowed",
    "expired": "token expired",
    "not_yet_valid": "token not yet valid",
    "iat_in_future": "token not yet valid",
    "wrong_issuer": "wrong issuer",
    "issuer_without_trailing_slash": "wrong issuer",
    "wrong_audience": "wrong audience",
    "audience_list_without_ours": "wrong audience",
    "audience_missing": "claim aud missing",
    "unknown_kid": "unknown signing key",
    "kid_missing": "token header has no key id",
    "attacker_key_in_header": "keys in the token header are not accepted",
    "jku_to_attacker_jwks": "keys in the token header are not accepted",
    "tampered_payload": "signature verification failed",
    "tampered_header": "signature verification failed",
    "signature_stripped": "signature missing",
    "signature_bit_flipped": "signature verification failed",
    "missing_sub": "claim sub missing",
    "empty_sub": "claim sub missing",
    "missing_exp": "claim exp missing",
    "missing_iat": "claim iat missing",
    "permissions_not_a_list": "claim permissions must be a list of strings",
    "homes_not_a_list": "homes claim must be a list of strings",
    "rotated_out_key": "unknown signing key",
    "oversized_token": "token larger than 8192 bytes",
    "garbage_base64": "unreadable token header",
    "two_segments": "not a signed JWT",
    "jwe_five_segments": "not a signed JWT",
    "header_not_an_object": "unreadable token header",
    "scope_not_a_string": "claim scope must be a space-separated string",
    "not_json_header": "unreadable token header",
    "no_authorization_header": None,
    "basic_scheme": None,
    "bearer_without_token": "Bearer scheme without a token",
    "bearer_extra_parts": "unexpected data after the token",
    "bearer_bad_characters": "token contains characters not allowed in a bearer token",
}


def test_attack_matrix_is_complete() -> None:
    assert len(ATTACKS) >= 20
    assert [a[0] for a in ATTACKS] == list(REASONS)


@pytest.mark.parametrize(("case", "authorization", "status", "code", "error"), ATTACKS, ids=[a[0] for a in ATTACKS])
async def test_attack_rejected(
    env: Env,
    case: str,
    authorization: Callable[[JwksServer], str | None],
    status: int,
    code: str,
    error: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    value = authorization(env.server)
    resp = await env.get(value)
    await assert_error(resp, status, code)
    header = challenge(resp)
    assert header.startswith(REALM)
    if error is None:
        assert header == REALM  # no error attribute when no bearer credentials were sent
    else:
        assert f'error="{error}"' in header
        assert f'error_description="{REASONS[case]}"' in header
    assert env.authenticator.stats.accepted == 0
    # The credential itself never reaches the logs.
    if value and len(value) > 20:
        assert value.split()[-1] not in caplog.text


async def test_missing_permission_is_403_insufficient_scope(env: Env) -> None:
    token = env.server.make_token(permissions=["read:devices"])
    resp = await env.client.post("/api/v1/devices/t1/commands", headers={"Authorization": f"Bearer {token}"})
    body = await assert_error(resp, 403, "insufficient_scope")
    assert body["error"]["details"] == {"required_permission": "write:devices"}
    header = challenge(resp)
    assert header.startswith(REALM)
    assert 'error="insufficient_scope"' in header
    assert 'scope="write:devices"' in header


async def test_multiple_authorization_headers_are_invalid_request(env: Env) -> None:
    token = env.server.make_token()
    resp = await env.get([f"Bearer {token}", f"Bearer {token}"])
    await assert_error(resp, 400, "invalid_request")


# --- what valid tokens give --------------------------------------------------------------


async def test_valid_token_gives_principal(env: Env) -> None:
    token = env.server.make_token("auth0|alice", ["read:devices"], homes=["home-a", "home-b"])
    resp = await env.get(f"Bearer {token}")
    assert resp.status == 200
    assert await resp.json() == {"sub": "auth0|alice", "permissions": ["read:devices"], "homes": ["home-a", "home-b"]}


async def test_scope_claim_permissions_work(env: Env) -> None:
    token = env.server.make_token("auth0|bob", None, scope="openid read:devices write:devices")
    resp = await env.client.post("/api/v1/devices/t1/commands", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200
    assert await resp.json() == {"sub": "auth0|bob", "device": "t1"}


async def test_audience_as_plain_string_and_lowercase_scheme(env: Env) -> None:
    token = env.server.make_token(aud=env.server.audience)
    resp = await env.get(f"bearer {token}")
    assert resp.status == 200


async def test_small_clock_skew_within_leeway_is_accepted(env: Env) -> None:
    now = time.time()
    token = env.server.make_token(exp=now - 10, iat=now + 10, nbf=now + 10)
    resp = await env.get(f"Bearer {token}")
    assert resp.status == 200


async def test_configurable_claim_names(jwks_server: JwksServer, http_session: aiohttp.ClientSession) -> None:
    settings = jwks_server.settings(
        permissions_claim="https://x/perms", homes_claim="https://x/homes", scope_claim="scp"
    )
    authenticator = Authenticator(settings, http_session)
    token = jwks_server.make_token(
        "auth0|carol",
        ["admin"],  # the default claim name is not read any more
        scope="openid",
        custom={"https://x/perms": ["read:devices"], "https://x/homes": ["h1"], "scp": "write:devices"},
    )
    principal = await authenticator.authenticate(token)
    assert principal == Principal(
        sub="auth0|carol",
        permissions=frozenset({"read:devices", "write:devices"}),
        homes=frozenset({"h1"}),
        expires_at=principal.expires_at,
    )
    assert principal.expires_at is not None
    assert principal.expires_at > time.time()
    assert not principal.has("admin")


async def test_unprotected_paths_and_preflight_pass(env: Env) -> None:
    resp = await env.get(None, "/health")
    assert resp.status == 200
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    resp = await env.client.options("/api/v1/devices", headers=preflight)
    assert resp.status != 401  # CORS pre-flights carry no credentials (the API's CORS layer answers them)
    resp = await env.client.options("/api/v1/devices")
    await assert_error(resp, 401, "unauthorized")  # a bare OPTIONS is not a way around auth


async def test_unknown_route_under_prefix_needs_auth_before_404(env: Env) -> None:
    resp = await env.get(None, "/api/v1/nothing-here")
    await assert_error(resp, 401, "unauthorized")
    resp = await env.get(f"Bearer {env.server.make_token()}", "/api/v1/nothing-here")
    assert resp.status == 404


async def test_key_alg_pins_the_algorithm(jwks_server: JwksServer, http_session: aiohttp.ClientSession) -> None:
    """With RS256 and RS384 both allowed, a key published as RS256 cannot verify an RS384 token."""
    authenticator = Authenticator(jwks_server.settings(algorithms=("RS256", "RS384")), http_session)
    assert (await authenticator.authenticate(jwks_server.make_token())).sub == "auth0|alice"
    with pytest.raises(ApiError) as err:
        await authenticator.authenticate(jwks_server.make_token(alg="RS384"))
    assert err.value.status == 401
    assert "does not match" in err.value.headers["WWW-Authenticate"]


# --- the JWKS cache ----------------------------------------------------------------------


async def test_keys_are_cached_and_refreshed_after_cache_seconds(env: Env) -> None:
    token = env.server.make_token()
    for _ in range(10):
        assert (await env.get(f"Bearer {token}")).status == 200
    assert env.server.jwks_requests == 1
    env.clock.advance(601)
    assert (await env.get(f"Bearer {token}")).status == 200
    assert env.server.jwks_requests == 2


async def test_key_rotation_fetches_new_kid_once(env: Env) -> None:
    server = env.server
    assert (await env.get(f"Bearer {server.make_token()}")).status == 200
    assert server.jwks_requests == 1
    old, new = server.rotate()
    new_token = server.make_token(kid=new)
    for _ in range(5):
        assert (await env.get(f"Bearer {new_token}")).status == 200
    assert server.jwks_requests == 2  # one re-fetch for the new kid, then cached
    assert env.authenticator.key_ids == {new}
    resp = await env.get(f"Bearer {server.make_token(kid=old)}")
    await assert_error(resp, 401, "invalid_token")
    assert server.jwks_requests == 2  # the rotated-out kid is inside the cool-down: no fetch


async def test_verified_token_cache_rechecks_expiry(
    jwks_server: JwksServer, http_session: aiohttp.ClientSession
) -> None:
    authenticator = Authenticator(jwks_server.settings(leeway=0), http_session)
    exp = int(time.time()) + 1
    token = jwks_server.make_token(exp=exp)
    await authenticator.authenticate(token)
    await authenticator.authenticate(token)
    assert authenticator.stats.cache_hits == 1
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)  # until the token has really expired
    with pytest.raises(ApiError) as err:
        await authenticator.authenticate(token)
    assert err.value.status == 401
    assert "token expired" in err.value.headers["WWW-Authenticate"]


async def test_verified_token_cache_drops_tokens_of_a_revoked_key(env: Env) -> None:
    server = env.server
    token = server.make_token()
    assert (await env.get(f"Bearer {token}")).status == 200
    assert (await env.get(f"Bearer {token}")).status == 200
    assert env.authenticator.stats.cache_hits == 1
    server.rotate()  # the old key is revoked: no longer published
    env.clock.advance(601)  # the next request refreshes the expired JWKS
    resp = await env.get(f"Bearer {token}")
    await assert_error(resp, 401, "invalid_token")
    assert "unknown signing key" in challenge(resp)
    assert server.jwks_requests == 2


async def test_bogus_kid_flood_hits_jwks_once_per_cooldown(env: Env) -> None:
    server = env.server
    assert (await env.get(f"Bearer {server.make_token()}")).status == 200
    assert server.jwks_requests == 1
    bogus = [server.make_token(headers={"kid": f"bogus-{i}"}) for i in range(60)]
    # Concurrently and then one after the other: still one fetch in the cool-down window.
    results = await asyncio.gather(*(env.get(f"Bearer {token}") for token in bogus[:30]))
    assert {r.status for r in results} == {401}
    for token in bogus[30:]:
        assert (await env.get(f"Bearer {token}")).status == 401
    assert server.jwks_requests == 2
    env.clock.advance(59)
    assert (await env.get(f"Bearer {bogus[0]}")).status == 401
    assert server.jwks_requests == 2
    env.clock.advance(2)  # cool-down (60 s) over: one more fetch allowed
    for token in bogus[:10]:
        assert (await env.get(f"Bearer {token}")).status == 401
    assert server.jwks_requests == 3
    # Valid tokens kept working throughout.
    assert (await env.get(f"Bearer {server.make_token()}")).status == 200
    assert env.authenticator.stats.rejected_by_reason["unknown signing key"] == 71


async def test_concurrent_first_requests_share_one_fetch(
    jwks_server: JwksServer, http_session: aiohttp.ClientSession
) -> None:
    jwks_server.delay = 0.2
    authenticator = Authenticator(jwks_server.settings(), http_session)
    token = jwks_server.make_token()
    principals = await asyncio.gather(*(authenticator.authenticate(token) for _ in range(25)))
    assert {p.sub for p in principals} == {"auth0|alice"}
    assert jwks_server.jwks_requests == 1
    assert authenticator.stats.jwks_fetches == 1


async def test_cancelled_request_does_not_cancel_shared_fetch(
    jwks_server: JwksServer, http_session: aiohttp.ClientSession
) -> None:
    jwks_server.delay = 0.2
    authenticator = Authenticator(jwks_server.settings(), http_session)
    token = jwks_server.make_token()
    first = asyncio.create_task(authenticator.authenticate(token))
    second = asyncio.create_task(authenticator.authenticate(token))
    await asyncio.sleep(0.05)
    first.cancel()
    assert (await second).sub == "auth0|alice"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert jwks_server.jwks_requests == 1


async def test_close_cancels_a_fetch_in_flight(jwks_server: JwksServer, http_session: aiohttp.ClientSession) -> None:
    jwks_server.delay = 0.5
    authenticator = Authenticator(jwks_server.settings(), http_session)
    prefetch = asyncio.create_task(authenticator.prefetch())
    await asyncio.sleep(0.05)
    assert not prefetch.done()
    await authenticator.close()
    with pytest.raises(asyncio.CancelledError):
        await prefetch
    assert authenticator.key_ids == frozenset()
    jwks_server.delay = 0
    assert await authenticator.prefetch() is True  # still usable afterwards
    await authenticator.close()  # idempotent, nothing in flight


async def test_jwks_outage_before_first_fetch_is_503_then_recovers(env: Env) -> None:
    server = env.server
    server.status = 500
    token = server.make_token()
    resp = await env.get(f"Bearer {token}")
    await assert_error(resp, 503, "auth_unavailable")
    assert int(resp.headers["Retry-After"]) >= 1
    assert server.jwks_requests == 1
    # Within the retry window nobody hammers the endpoint.
    for _ in range(5):
        await assert_error(await env.get(f"Bearer {token}"), 503, "auth_unavailable")
    assert server.jwks_requests == 1
    server.status = 200
    env.clock.advance(6)
    assert (await env.get(f"Bearer {token}")).status == 200
    assert server.jwks_requests == 2
    assert env.authenticator.stats.jwks_fetch_failures == 1


async def test_jwks_outage_after_caching_keeps_serving_cached_keys(env: Env) -> None:
    server = env.server
    token = server.make_token()
    assert (await env.get(f"Bearer {token}")).status == 200
    server.status = 503
    env.clock.advance(700)  # the cache expired while the tenant is down
    assert (await env.get(f"Bearer {token}")).status == 200
    assert (await env.get(f"Bearer {token}")).status == 200
    assert server.jwks_requests == 2  # one failed refresh, then the retry window
    server.status = 200
    env.clock.advance(6)
    assert (await env.get(f"Bearer {token}")).status == 200
    assert server.jwks_requests == 3


async def test_jwks_redirect_is_not_followed(env: Env) -> None:
    env.server.redirect = True
    resp = await env.get(f"Bearer {env.server.make_token()}")
    await assert_error(resp, 503, "auth_unavailable")
    assert env.server.requests[ALT_JWKS_PATH] == 0


async def test_url_spellings_cannot_bypass_auth(env: Env) -> None:
    """However the path is spelled, a protected handler is never reached without a token."""
    for path in (
        "/api/v1/devices",
        "/api/v1/devices/",
        "/api/v1/devices?x=1",
        "/api/v1/./devices",
        "/api/v1/x/../devices",
        "/api/v1%2Fdevices",
        "/api/v1/%64evices",
        "/api//v1/devices",
        "/health/../api/v1/devices",
    ):
        resp = await env.client.get(URL(path, encoded=True))
        assert resp.status in (401, 404), (path, resp.status)
        if resp.status == 404:
            continue
        await assert_error(resp, 401, "unauthorized")
    token = env.server.make_token()
    resp = await env.client.get(URL("/api/v1/%64evices", encoded=True), headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200


async def test_unreachable_jwks_is_503_not_a_crash(http_session: aiohttp.ClientSession) -> None:
    settings = AuthSettings(issuer="http://127.0.0.1:9/", audience="x")  # discard port: nothing listens
    authenticator = Authenticator(settings, http_session)
    assert await authenticator.prefetch() is False
    server = JwksServer()
    server.add_key(make_current=True)
    with pytest.raises(ApiError) as err:
        await authenticator.authenticate(server.make_token())
    assert err.value.status == 503
    assert err.value.code == "auth_unavailable"


@pytest.mark.parametrize(
    "body", [b"<html>maintenance</html>", b'{"keys": 5}', b"[]", b'{"keys": [{"kty": "RSA", "kid": "k", "n": 1}]}']
)
async def test_garbage_jwks_document_is_a_fetch_failure(env: Env, body: bytes) -> None:
    env.server.raw_body = body
    resp = await env.get(f"Bearer {env.server.make_token()}")
    # No usable keys were ever obtained: either the fetch failed (503) or the set is empty (401).
    assert resp.status in (401, 503)
    assert env.authenticator.key_ids == frozenset()
    env.server.raw_body = None
    env.clock.advance(601)
    assert (await env.get(f"Bearer {env.server.make_token()}")).status == 200


async def test_broken_key_is_skipped(env: Env) -> None:
    env.server.extra_keys.append({"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"})
    # A broken key is skipped, the good one still works.
    assert (await env.get(f"Bearer {env.server.make_token()}")).status == 200
    assert "broken" not in env.authenticator.key_ids
    with pytest.raises(ValueError, match="keys"):
        parse_jwks({"keys": "nope"}, ["RS256"])
    with pytest.raises(ValueError, match="keys"):
        parse_jwks([], ["RS256"])


async def test_non_signing_and_non_rsa_keys_are_ignored(env: Env) -> None:
    server = env.server
    enc_kid = server.add_key(publish=False)
    enc_jwk = dict(server._jwks[enc_kid], use="enc")
    ec_jwk = {
        "kty": "EC",
        "use": "sig",
        "crv": "P-256",
        "kid": "ec-key",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        "alg": "ES256",
    }
    rs512_kid = server.add_key(publish=False)
    rs512_jwk = dict(server._jwks[rs512_kid], alg="RS512")
    server.extra_keys += [enc_jwk, ec_jwk, rs512_jwk]
    assert (await env.get(f"Bearer {server.make_token()}")).status == 200
    assert env.authenticator.key_ids == {server.current_kid}
    resp = await env.get(f"Bearer {server.make_token(kid=enc_kid)}")
    await assert_error(resp, 401, "invalid_token")
    assert "unknown signing key" in challenge(resp)


def test_parse_jwks_skips_weak_and_incomplete_keys() -> None:
    server = JwksServer()
    good_kid = server.add_key()
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
    weak_numbers = weak.public_key().public_numbers()
    document = server.jwks_document()
    document["keys"] += [
        {"kty": "RSA", "use": "sig", "kid": "weak", "n": b64url(weak_numbers.n.to_bytes(128, "big")), "e": "AQAB"},
        {k: v for k, v in document["keys"][0].items() if k != "kid"},  # no kid
        {**document["keys"][0], "kid": ""},
        "not a key",
        {**document["keys"][0], "kid": "no-use-field", "use": None},
    ]
    document["keys"][-1].pop("use")
    keys = parse_jwks(document, ["RS256"])
    assert set(keys) == {good_kid, "no-use-field"}  # "use" is optional in a JWK


async def test_oversized_jwks_document_is_refused(env: Env) -> None:
    env.server.raw_body = b'{"keys": [' + b" " * (600 * 1024) + b"]}"
    resp = await env.get(f"Bearer {env.server.make_token()}")
    await assert_error(resp, 503, "auth_unavailable")
    assert env.authenticator.stats.jwks_fetch_failures == 1


async def test_verified_cache_is_bounded(
    jwks_server: JwksServer, http_session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "_VERIFIED_CACHE_SIZE", 3)
    authenticator = Authenticator(jwks_server.settings(), http_session)
    tokens = [jwks_server.make_token(f"auth0|u{i}") for i in range(5)]
    for token in tokens:
        await authenticator.authenticate(token)
    assert len(authenticator._verified) == 3
    await authenticator.authenticate(tokens[-1])
    assert authenticator.stats.cache_hits == 1
    assert (await authenticator.authenticate(tokens[0])).sub == "auth0|u0"  # evicted: verified again
    assert authenticator.stats.cache_hits == 1


async def test_require_permission_without_middleware_is_401(aiohttp_client: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        try:
            require_permission(request, "read:devices")
        except ApiError as err:
            return error_response(err)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/x", handler)
    client = await aiohttp_client(app)
    await assert_error(await client.get("/x"), 401, "unauthorized")


def test_settings_refuse_symmetric_and_unknown_algorithms() -> None:
    for algorithms in (("HS256",), ("RS256", "none"), ("ES256",), ()):
        with pytest.raises(ValueError):  # noqa: PT011
            AuthSettings(issuer="https://t.eu.auth0.com/", audience="a", algorithms=algorithms)
    with pytest.raises(ValueError, match="issuer"):
        AuthSettings(issuer="", audience="a")
    with pytest.raises(ValueError, match="audience"):
        AuthSettings(issuer="https://t.eu.auth0.com/", audience="")
    settings = AuthSettings(issuer="https://t.eu.auth0.com/", audience="a")
    assert settings.effective_jwks_url == "https://t.eu.auth0.com/.well-known/jwks.json"


async def test_plain_http_jwks_refused_except_loopback(http_session: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError, match="https"):
        Authenticator(AuthSettings(issuer="http://tenant.example/", audience="a"), http_session)
    Authenticator(AuthSettings(issuer="http://localhost:1/", audience="a"), http_session)


# --- the Auth0 shape -----------------------------------------------------------------------


async def test_test_server_documents_are_shaped_like_auth0(env: Env, http_session: aiohttp.ClientSession) -> None:
    async with http_session.get(env.server.jwks_url) as resp:
        jwks = await resp.json()
    async with http_session.get(env.server.issuer + ".well-known/openid-configuration") as resp:
        config = await resp.json()
    assert_auth0_jwks(jwks)
    assert_auth0_openid_configuration(config, env.server.issuer)


def assert_auth0_jwks(jwks: dict[str, Any]) -> None:
    assert list(jwks) == ["keys"]
    assert jwks["keys"]
    for key in jwks["keys"]:
        assert list(key) == ["kty", "use", "n", "e", "kid", "x5t", "x5c", "alg"]
        assert (key["kty"], key["use"], key["alg"], key["e"]) == ("RSA", "sig", "RS256", "AQAB")
        der = base64.b64decode(key["x5c"][0], validate=True)
        assert key["x5t"] == b64url(hashlib.sha1(der).digest())  # noqa: S324
        cert = x509.load_der_x509_certificate(der)
        public = cert.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        numbers = public.public_numbers()
        n = int.from_bytes(base64.urlsafe_b64decode(key["n"] + "=" * (-len(key["n"]) % 4)), "big")
        assert numbers.n == n
        assert "=" not in key["n"]
        assert "d" not in key  # never a private parameter


def assert_auth0_openid_configuration(config: dict[str, Any], issuer: str) -> None:
    assert config["issuer"] == issuer
    assert issuer.endswith("/")
    assert config["jwks_uri"] == f"{issuer}.well-known/jwks.json"
    assert config["token_endpoint"] == f"{issuer}oauth/token"
    assert config["authorization_endpoint"] == f"{issuer}authorize"
    assert config["userinfo_endpoint"] == f"{issuer}userinfo"
    assert "RS256" in config["id_token_signing_alg_values_supported"]
    assert config["subject_types_supported"] == ["public"]
    for field in ("response_types_supported", "scopes_supported", "claims_supported", "end_session_endpoint"):
        assert field in config


# --- dev auth ------------------------------------------------------------------------------


async def test_dev_issuer_key_file_created_0600_and_reused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key_path = tmp_path / "secrets" / "dev_key.pem"
    first = DevIssuer(key_path, issuer="http://127.0.0.1:8099", audience="aud")
    assert first.issuer == "http://127.0.0.1:8099/"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert "DEV AUTH IS ENABLED" in caplog.text
    second = DevIssuer(key_path, issuer="http://127.0.0.1:8099/", audience="aud")
    assert second.kid == first.kid
    assert second.jwks()["keys"][0]["n"] == first.jwks()["keys"][0]["n"]
    assert not [p for p in key_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_dev_key_with_loose_mode_is_tightened_and_garbage_refused(tmp_path: Path) -> None:
    key_path = tmp_path / "k.pem"
    load_or_create_key(key_path)
    os.chmod(key_path, 0o644)
    load_or_create_key(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(DevAuthError, match="PEM"):
        DevIssuer(bad)
    with pytest.raises(DevAuthError, match="http"):
        DevIssuer(key_path, issuer="localhost:8099")


async def test_dev_issuer_tokens_verify_through_its_own_routes(
    tmp_path: Path, aiohttp_client: Any, http_session: aiohttp.ClientSession
) -> None:
    """Served over HTTP like Auth0, the dev JWKS verifies the dev tokens with the normal Authenticator."""
    issuer_app = web.Application()
    holder: dict[str, DevIssuer] = {}

    async def jwks(request: web.Request) -> web.StreamResponse:
        return await holder["issuer"].routes()[0].handler(request)

    async def oidc(request: web.Request) -> web.StreamResponse:
        return await holder["issuer"].routes()[1].handler(request)

    issuer_app.router.add_get("/.well-known/jwks.json", jwks)
    issuer_app.router.add_get("/.well-known/openid-configuration", oidc)
    client = await aiohttp_client(issuer_app)
    base = str(client.make_url("/"))
    dev = DevIssuer(tmp_path / "key.pem", issuer=base, audience="https://dev.api")
    holder["issuer"] = dev
    assert [r.path for r in dev.routes()] == ["/.well-known/jwks.json", "/.well-known/openid-configuration"]

    async with http_session.get(dev.jwks_url) as resp:
        assert_auth0_jwks(await resp.json())
        assert resp.headers["Content-Type"].startswith("application/json")
    async with http_session.get(base + ".well-known/openid-configuration") as resp:
        assert_auth0_openid_configuration(await resp.json(), dev.issuer)

    fetching = Authenticator(dev.settings(), http_session)
    token = dev.mint("dev|ann", ["read:devices"], homes=["home-1"], ttl=60)
    principal = await fetching.authenticate(token)
    assert principal.sub == "dev|ann"
    assert principal.permissions == {"read:devices"}
    assert principal.homes == {"home-1"}
    assert fetching.stats.jwks_fetches == 1

    pinned = dev.authenticator(http_session)
    assert (await pinned.authenticate(token)).sub == "dev|ann"
    assert pinned.stats.jwks_fetches == 0
    # A dev token is not accepted by a different dev key, nor after expiry.
    other = DevIssuer(tmp_path / "other.pem", issuer=base, audience="https://dev.api", warn=False)
    with pytest.raises(ApiError):
        await pinned.authenticate(other.mint("dev|eve"))
    with pytest.raises(ApiError):
        await pinned.authenticate(dev.mint("dev|ann", exp=int(time.time()) - 3600))
    with pytest.raises(ValueError, match="ttl"):
        dev.mint("dev|ann", ttl=0)


def test_token_cli_prints_a_verifiable_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "key.pem"
    code = token_main(
        [
            "--key",
            str(key),
            "--issuer",
            "http://127.0.0.1:8099/",
            "--audience",
            "https://dev.api",
            "--sub",
            "dev|cli",
            "--permissions",
            "read:devices,write:devices",
            "admin",
            "--homes",
            "home-1",
            "home-2",
            "--ttl",
            "120",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert "DEV" in err
    token = out.strip()
    dev = DevIssuer(key, issuer="http://127.0.0.1:8099/", audience="https://dev.api", warn=False)

    async def verify() -> Principal:
        async with aiohttp.ClientSession() as session:
            return await dev.authenticator(session).authenticate(token)

    principal = asyncio.run(verify())
    assert principal.sub == "dev|cli"
    assert principal.permissions == {"read:devices", "write:devices", "admin"}
    assert principal.homes == {"home-1", "home-2"}
    assert principal.expires_at is not None
    assert 60 < principal.expires_at - time.time() <= 120


def test_token_cli_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("junk")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "addon")}
    proc = subprocess.run(
        [sys.executable, "-m", "thermo_bridge_server.auth.devauth", "--key", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "not an unencrypted PEM private key" in proc.stderr
    assert proc.stdout == ""
    # Without --key it uses the standalone server's default file in the working directory.
    env.pop("THERMO_BRIDGE_DEV_KEY_PATH", None)
    proc = subprocess.run(
        [sys.executable, "-m", "thermo_bridge_server.auth.devauth", "--sub", "dev|x", "--ttl", "60"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    default_key = tmp_path / "thermo_bridge_dev_key.pem"
    assert stat.S_IMODE(default_key.stat().st_mode) == 0o600
    issuer = DevIssuer(default_key, warn=False)  # defaults match the CLI's: http://localhost:8099/
    claims = jwt.decode(proc.stdout.strip(), issuer.public_key, algorithms=["RS256"], audience=issuer.audience)
    assert claims["sub"] == "dev|x"
    assert claims["iss"] == "http://localhost:8099/"
    # A key location that cannot be created is a clear error, not a traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "thermo_bridge_server.auth.devauth", "--key", str(bad / "sub" / "key.pem")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "dev auth key" in proc.stderr
    assert "Traceback" not in proc.stderr
