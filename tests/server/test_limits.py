"""Limits and abuse against a real server: per-address limits, the page's own policy, admin audit lines.

The per-user limits, the connection caps, the frame size and the body size have their tests
next to their features (test_api.py, test_realtime.py); here are the limits that apply before
anyone is authenticated, and a check that every limit's error is documented.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from tests.server.api_stack import ADMIN, ServerStack
from tests.server.realtime_client import WsClient
from thermo_bridge_server.app import COMPONENTS
from thermo_bridge_server.http.middlewares import (
    API_CSP,
    auth_origin,
    page_csp,
    page_security_headers,
    served_under_ingress,
)
from thermo_bridge_server.ratelimit import ClientAddress

ROOT = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture
async def tight(tmp_path: Path) -> AsyncIterator[ServerStack]:
    """A server that allows 3 refused requests and 3 WebSocket handshakes per address."""

    async def page(request: web.Request) -> web.Response:
        """What the dashboard's page handler does: its own policy, with the tenant's origin."""
        auth = request.app[COMPONENTS].authenticator.settings
        headers = page_security_headers(auth_origin(auth.issuer), ingress=served_under_ingress(request))
        return web.Response(text="<!doctype html><title>t</title>", content_type="text/html", headers=headers)

    stack = ServerStack(
        tmp_path,
        thermostats=1,
        sensors=0,
        prefix="l",
        env={
            "rate_limit_unauthenticated_per_minute": "3",
            "ws_handshakes_per_minute": "3",
            "ws_allow_no_origin": "true",
        },
        extra_routes=[web.get("/dashboard", page)],
    )
    await stack.start()
    yield stack
    await stack.stop()


async def test_requests_refused_with_401_are_limited_per_address(tight: ServerStack) -> None:
    api = tight.api
    bad = tight.jwks.make_token(exp=0)
    refused = [
        await api.call("GET", "/api/v1/devices"),
        await api.call("GET", "/api/v1/devices", token=bad),
        await api.call("GET", "/api/v1/events", params={"ticket": "guessed"}),
    ]
    assert [r.status for r in refused] == [401, 401, 401]
    # The bucket is empty: a fourth refusal is 429, on every entry point that answers 401.
    for method, path, kwargs in (
        ("GET", "/api/v1/devices", {"token": bad}),
        ("POST", "/api/v1/events/tickets", {}),
        ("GET", "/api/v1/events", {"params": {"ticket": "guessed-again"}}),
        ("GET", "/api/v1/nothing-here", {}),
    ):
        resp = await api.call(method, path, **kwargs)
        assert resp.status == 429, (path, resp.text)
        assert resp.error["code"] == "rate_limited"
        retry = int(resp.headers["Retry-After"])
        assert 1 <= retry <= 20  # 3 a minute: one more every 20 s
        assert resp.error["details"] == {"retry_after": retry}
        assert "WWW-Authenticate" not in resp.headers
    # A valid token is never refused by it (behind a proxy everybody shares one address).
    good = tight.jwks.make_token("auth0|alice", ADMIN)
    ok = await api.call("GET", "/api/v1/devices", token=good)
    assert ok.status == 200
    assert (await api.call("POST", "/api/v1/events/tickets", token=good)).status == 201
    # Public endpoints do not count.
    assert (await api.call("GET", "/health")).status in (200, 503)
    assert (await api.call("GET", "/api/v1/openapi.json")).status == 200
    assert tight.components.metrics.http.rate_limited >= 4


async def test_websocket_handshakes_are_limited_per_address(tight: ServerStack) -> None:
    token = tight.jwks.make_token("auth0|alice", ADMIN)
    clients = [WsClient(tight.api.base_url) for _ in range(4)]
    try:
        for client in clients[:3]:
            assert (await client.connect(token))["type"] == "auth_ok"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await clients[3].connect(token)
        assert refused.value.status == 429
        assert refused.value.headers is not None
        assert 1 <= int(refused.value.headers["Retry-After"]) <= 20
        async with aiohttp.ClientSession() as session:
            # The refusal is the documented error body (a plain GET gets it too, as JSON).
            ws_url = tight.api.base_url + "/api/v1/ws"
            headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
            headers["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
            async with session.get(ws_url, headers=headers) as resp:
                assert resp.status == 429
                body = await resp.json()
                assert body["error"]["code"] == "rate_limited"
        assert tight.components.realtime.figures()["handshakes_rate_limited_total"] >= 2
    finally:
        for client in clients:
            await client.close()


async def test_api_and_page_security_headers(tight: ServerStack) -> None:
    api = await tight.api.call("GET", "/health")
    assert api.headers["Content-Security-Policy"] == API_CSP == "default-src 'none'; frame-ancestors 'none'"
    index = await tight.api.call("GET", "/")  # the dashboard: its own policy, as below
    assert index.headers["Content-Security-Policy"] == page_csp(tight.jwks.issuer.rstrip("/"), ingress=False)
    page = await tight.api.call("GET", "/dashboard")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    policy = dict(d.split(" ", 1) for d in page.headers["Content-Security-Policy"].split("; "))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == f"'self' {tight.jwks.issuer.rstrip('/')}"
    assert policy["frame-ancestors"] == "'none'"  # not through ingress: never framed
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"  # the shared headers fill in the rest
    assert page.headers["Cache-Control"] == "no-cache"
    # Someone claiming to be ingress from another address is not believed.
    forged = await tight.api.call("GET", "/dashboard", headers={"X-Ingress-Path": "/api/hassio_ingress/x"})
    assert "frame-ancestors 'none'" in forged.headers["Content-Security-Policy"]


def test_page_csp_directives() -> None:
    tenant = auth_origin("https://tenant.eu.auth0.com/")
    assert tenant == "https://tenant.eu.auth0.com"
    assert auth_origin("http://user@127.0.0.1:8099/") == "http://127.0.0.1:8099"
    direct = page_csp(tenant, ingress=False)
    framed = page_csp(tenant, ingress=True)
    directives = [d.split(" ", 1)[0] for d in direct.split("; ")]
    assert directives == [
        "default-src",
        "script-src",
        "style-src",
        "img-src",
        "font-src",
        "manifest-src",
        "connect-src",
        "base-uri",
        "form-action",
        "frame-ancestors",
    ]
    assert "connect-src 'self' https://tenant.eu.auth0.com;" in direct
    assert "img-src 'self' data:" in direct
    assert "'unsafe-inline'" not in direct
    assert "'unsafe-eval'" not in direct
    assert direct.endswith("frame-ancestors 'none'")
    assert framed.endswith("frame-ancestors 'self'")
    assert "connect-src 'self';" in page_csp(None, ingress=False)
    assert page_security_headers(tenant, ingress=True)["X-Frame-Options"] == "SAMEORIGIN"


async def test_admin_actions_are_logged_with_the_admin(tight: ServerStack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="thermo_bridge_server")
    admin = tight.jwks.make_token("auth0|the-admin", ADMIN)
    resp = await tight.api.call("PUT", "/api/v1/admin/grants/auth0|bob", token=admin, json_body={"homes": ["beta"]})
    assert resp.status == 200
    resp = await tight.api.call("PUT", "/api/v1/admin/grants/auth0|bob", token=admin, json_body={"homes": ["gamma"]})
    assert resp.status == 200
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("thermo_bridge_server")]
    assert "Admin 'auth0|the-admin' set the grants of 'auth0|bob' to ['beta'] (were [])" in lines
    assert "Admin 'auth0|the-admin' set the grants of 'auth0|bob' to ['gamma'] (were ['beta'])" in lines
    device = next(iter(tight.sim.devices))
    resp = await tight.api.call("PUT", f"/api/v1/admin/devices/{device}/home", token=admin, json_body={"home": "alpha"})
    assert resp.status == 200
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("thermo_bridge_server")]
    assert f"Admin 'auth0|the-admin' moved device {device} from home default to alpha" in lines


LIMIT_CODES = {
    "rate_limited": "429",
    "too_many_connections": "429",
    "too_many_subscriptions": "429",
    "too_many_requests": "429",
    "payload_too_large": "413",
}
WS_CLOSE_CODES = ("1009", "4008", "4029")


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "counted"),
    [
        ((), "127.0.0.1", ["203.0.113.7"], "127.0.0.1"),  # no trusted proxy: the header is not read
        (("10.0.0.0/8",), "127.0.0.1", ["203.0.113.7"], "127.0.0.1"),  # an untrusted peer's header is not read
        (("127.0.0.1",), "127.0.0.1", [], "127.0.0.1"),  # a trusted proxy without the header: the proxy
        (("127.0.0.1",), "127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        # What the client claimed sits left of what the proxy saw: only the proxy's hop counts.
        (("127.0.0.1",), "127.0.0.1", ["1.1.1.1, 203.0.113.7"], "203.0.113.7"),
        (("127.0.0.1",), "127.0.0.1", ["1.1.1.1", "203.0.113.7"], "203.0.113.7"),
        # Two trusted proxies in a row (10.0.0.5 forwarded to 127.0.0.1): the hop before them.
        (("127.0.0.1", "10.0.0.0/8"), "127.0.0.1", ["198.51.100.2, 203.0.113.7, 10.0.0.5"], "203.0.113.7"),
        (("127.0.0.1",), "127.0.0.1", ["not-an-address"], "127.0.0.1"),
        (("::1",), "::1", ["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_the_client_address_behind_trusted_proxies(
    trusted: tuple[str, ...], peer: str, forwarded: list[str], counted: str
) -> None:
    headers = CIMultiDict(("X-Forwarded-For", value) for value in forwarded)
    request = make_mocked_request("GET", "/api/v1/devices", headers=headers).clone(remote=peer)
    assert ClientAddress(trusted)(request) == counted


@pytest_asyncio.fixture
async def behind_proxy(tmp_path: Path) -> AsyncIterator[ServerStack]:
    """A server behind a reverse proxy on loopback, 2 refused requests per client address."""
    stack = ServerStack(
        tmp_path,
        thermostats=1,
        sensors=0,
        prefix="p",
        env={"rate_limit_unauthenticated_per_minute": "2", "trusted_proxies": "127.0.0.1"},
    )
    await stack.start()
    yield stack
    await stack.stop()


async def test_behind_a_trusted_proxy_each_client_has_its_own_limit(behind_proxy: ServerStack) -> None:
    api = behind_proxy.api

    async def refused_as(client: str) -> int:
        async with aiohttp.ClientSession() as session:
            url = api.base_url + "/api/v1/devices"
            async with session.get(url, headers={"X-Forwarded-For": client}) as resp:
                return resp.status

    assert [await refused_as("203.0.113.7") for _ in range(3)] == [401, 401, 429]
    # Another client behind the same proxy is not throttled by the first one's refusals.
    assert [await refused_as("198.51.100.2") for _ in range(3)] == [401, 401, 429]
    # A client cannot pick a fresh bucket by claiming an address: the proxy's hop counts.
    assert await refused_as("192.0.2.99, 203.0.113.7") == 429


def test_every_limit_is_documented() -> None:
    websocket = (ROOT / "docs" / "websocket.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for code in (*LIMIT_CODES, *WS_CLOSE_CODES):
        assert f"`{code}`" in websocket or f"| {code} |" in websocket, f"docs/websocket.md lacks {code}"
    for code in (
        "rate_limited",
        "payload_too_large",
        "rate_limit_unauthenticated_per_minute",
        "ws_handshakes_per_minute",
    ):
        assert re.search(rf"`{code}`", readme), f"README lacks {code}"
