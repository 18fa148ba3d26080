"""Under Home Assistant's ingress: the panel signs in as the HA user the Supervisor names; forged headers get nothing.

The test's ingress proxy (ingress_proxy.py) connects from 172.30.32.2, bound on loopback, like
the Supervisor's; everything else reaches the server from 127.0.0.1.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import Stack, start_stack
from tests.browser.ingress_proxy import HA_THEME, IngressProxy

HA_USER = ("5f3c0a1b2c3d4e5f60718293a4b5c6d7", "alice", "Alice Example")


@pytest.fixture
def ingress(tmp_path: Path, ingress_address: str) -> Iterator[tuple[Stack, IngressProxy]]:
    broker, server, sim = start_stack(tmp_path, THERMO_BRIDGE_INGRESS="true")
    proxy = IngressProxy(server.url, user=HA_USER)
    proxy.start()
    try:
        yield Stack(broker, server, sim, ""), proxy
    finally:
        proxy.stop()
        sim.stop()
        server.stop()
        broker.stop()


def _post(url: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=b"", headers=headers, method="POST")  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_panel_works_as_the_home_assistant_user(ingress: tuple[Stack, IngressProxy], browser: Browser) -> None:
    stack, proxy = ingress
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = stack.watch(context.new_page())
    page.goto(proxy.url)
    expect(page.locator("tb-app")).to_have_attribute("data-connection", "open")
    expect(page.locator("article[data-device-id]")).to_have_count(3)
    expect(page.get_by_text("Alice Example")).to_be_visible()
    thermostat = page.locator('article[data-device-id="b_thermostat_1"]')
    thermostat.get_by_role("combobox", name="Mode").select_option("cool")
    expect(thermostat.locator('[data-role="command-status"]')).to_have_text("Confirmed by the device")
    assert [c.values for device, c in stack.sim.commands if device == "b_thermostat_1"] == [{"hvac_mode": "cool"}]
    headers = page.evaluate("async () => { const r = await fetch('./'); return Object.fromEntries(r.headers); }")
    assert "frame-ancestors 'self'" in headers["content-security-policy"]  # framed by Home Assistant only
    context.close()
    assert not stack.problems


def test_the_panel_follows_home_assistants_theme(ingress: tuple[Stack, IngressProxy], browser: Browser) -> None:
    stack, proxy = ingress
    context = browser.new_context()
    page = stack.watch(context.new_page())
    page.goto(proxy.ha_url)
    frame = page.frame_locator("iframe")
    expect(frame.locator("article[data-device-id]")).to_have_count(3)
    panel = page.frames[1]
    background = panel.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--tb-bg').trim()")
    assert background == HA_THEME["--primary-background-color"]
    page.evaluate("document.documentElement.style.setProperty('--primary-background-color', '#223344')")
    panel.wait_for_function(
        "getComputedStyle(document.documentElement).getPropertyValue('--tb-bg').trim() === '#223344'"
    )
    context.close()
    assert not stack.problems


def test_forged_ingress_headers_from_another_address_get_nothing(ingress: tuple[Stack, IngressProxy]) -> None:
    stack, proxy = ingress
    forged = {"X-Ingress-Path": proxy.prefix, "X-Remote-User-Id": HA_USER[0], "X-Remote-User-Name": "mallory"}
    status, body = _post(f"{stack.server.url}/api/v1/ingress/token", forged)
    assert status == 403
    assert body["error"]["code"] == "not_ingress"  # type: ignore[index]
    config = urllib.request.Request(f"{stack.server.url}/api/v1/client-config", headers=forged)  # noqa: S310
    with urllib.request.urlopen(config, timeout=5) as response:  # noqa: S310 - loopback
        assert json.loads(response.read())["auth"] == {"mode": "dev"}
    # Through the proxy (172.30.32.2): a token for the user the proxy names, whatever the client sent.
    status, token = _post(f"{proxy.url}api/v1/ingress/token", {"X-Remote-User-Id": "someone_else"})
    assert status == 200
    assert token["sub"] == f"homeassistant|{HA_USER[0]}"
    assert token["permissions"] == ["read:devices", "write:devices"]
    code, device = stack.server.request("GET", "/api/v1/devices/b_thermostat_1", str(token["access_token"]))
    assert code == 200
    assert device["id"] == "b_thermostat_1"


def test_a_server_that_does_not_trust_ingress_mints_nothing_even_from_the_proxy(
    tmp_path: Path, ingress_address: str
) -> None:
    broker, server, sim = start_stack(tmp_path)  # standalone: the ingress option is off
    proxy = IngressProxy(server.url, user=HA_USER)
    proxy.start()
    try:
        status, body = _post(f"{proxy.url}api/v1/ingress/token", {})
        assert status == 403
        assert body["error"]["code"] == "not_ingress"  # type: ignore[index]
    finally:
        proxy.stop()
        sim.stop()
        server.stop()
        broker.stop()
