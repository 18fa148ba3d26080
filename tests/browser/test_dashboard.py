"""The dashboard in a real browser: devices, live state, commands, history, resume, dev token, accessibility."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Locator, Page, ViewportSize, expect

from tests.browser.conftest import Stack
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"


VIEWPORTS: tuple[tuple[str, ViewportSize], ...] = (
    ("desktop", {"width": 1280, "height": 800}),
    ("phone", {"width": 390, "height": 844}),
)


def open_dashboard(stack: Stack, context: BrowserContext) -> Page:
    page = stack.watch(context.new_page())
    page.goto(stack.dashboard_url())
    expect(page.locator("tb-app")).to_have_attribute("data-connection", "open")
    expect(page.locator("article[data-device-id]")).to_have_count(3)
    return page


def card(page: Page, device_id: str) -> Locator:
    return page.locator(f'article[data-device-id="{device_id}"]')


def test_the_page_lists_the_devices_and_shows_a_new_temperature_without_reload(
    stack: Stack, context: BrowserContext
) -> None:
    page = open_dashboard(stack, context)
    expect(page.get_by_role("heading", name="Home: default")).to_be_visible()
    expect(card(page, "b_thermostat_1").get_by_role("heading", name="Simulated thermostat 1")).to_be_visible()
    expect(card(page, "b_sensor_1").locator('[data-key="co2"]')).not_to_have_text("—")
    expect(card(page, "b_thermostat_1").locator('[data-role="availability"]')).to_have_text("Online")
    stack.sim.publish_state("b_thermostat_1", temperature=23.7)
    started = time.monotonic()
    expect(card(page, "b_thermostat_1").locator('[data-key="temperature"]')).to_have_text("23.7°C", timeout=1000)
    assert time.monotonic() - started < 1.0
    log = page.locator("tb-event-log li").first
    expect(log).to_contain_text("Temperature 23.7")
    assert not stack.problems


def test_a_setpoint_is_pending_until_acked_and_a_refusal_shows_the_devices_reason(
    stack: Stack, context: BrowserContext
) -> None:
    page = open_dashboard(stack, context)
    thermostat = card(page, "b_thermostat_2")
    thermostat.get_by_role("combobox", name="Mode").select_option("heat")
    expect(thermostat.locator('[data-role="command-status"]')).to_have_text("Confirmed by the device")
    setpoint = thermostat.locator('output[data-key="target_temperature"]')
    before = float(setpoint.inner_text().removesuffix("°C"))
    raise_ = thermostat.get_by_role("button", name="Raise setpoint")
    raise_.click()
    raise_.click()  # two presses, one command (debounced)
    expect(setpoint).to_have_class("pending")
    expect(thermostat).to_have_attribute("data-pending", "true")
    expect(thermostat.locator('[data-role="command-status"]')).to_have_text("Confirmed by the device")
    expect(thermostat).to_have_attribute("data-pending", "false")
    expect(setpoint).to_have_text(f"{before + 1.0:.1f}°C")
    expect(setpoint).not_to_have_class("pending")
    commands = [
        c for device, c in stack.sim.commands if device == "b_thermostat_2" and "target_temperature" in c.values
    ]
    assert [c.values["target_temperature"] for c in commands] == [before + 1.0]

    stack.sim.refuse_above = before + 1.0
    raise_.click()
    expect(thermostat.locator('[data-role="command-status"]')).to_contain_text(
        f"Refused by the device: setpoint_limited: the installer limited setpoints to {before + 1.0:g} °C"
    )
    expect(setpoint).to_have_text(f"{before + 1.0:.1f}°C")  # the device's value again
    page.locator("tb-event-log").get_by_role("button", name="Commands").click()
    expect(page.locator("tb-event-log li").first).to_contain_text("failed (setpoint_limited")
    assert not stack.problems


def test_the_history_chart_draws_the_stored_points(stack: Stack, context: BrowserContext) -> None:
    for value in (19.0, 19.5, 20.0):
        stack.sim.publish_state("b_sensor_1", temperature=value)
        time.sleep(1.1)
    page = open_dashboard(stack, context)
    tile = card(page, "b_sensor_1")
    tile.get_by_role("button", name="History").click()
    chart = page.locator("tb-history-chart")
    expect(chart).to_have_attribute("data-status", "ready")
    status, history = stack.server.request(
        "GET", "/api/v1/devices/b_sensor_1/history?keys=temperature,humidity,battery&resolution=300s", stack.token
    )
    assert status == 200
    buckets = {point["ts"] for point in history["points"]}
    assert chart.get_attribute("data-points") == str(len(buckets))
    assert chart.get_attribute("data-resolution") == "300"
    chart.get_by_role("button", name="1 h").click()
    expect(chart).to_have_attribute("data-resolution", "13")  # zoomed: finer buckets from the server
    expect(chart).to_have_attribute("data-status", "ready")
    status, fine = stack.server.request(
        "GET", "/api/v1/devices/b_sensor_1/history?keys=temperature,humidity,battery&resolution=13s", stack.token
    )
    assert int(chart.get_attribute("data-points") or 0) >= len({p["ts"] for p in history["points"]})
    assert fine["points"]
    assert not stack.problems


def test_a_server_restart_loses_no_event(stack: Stack, context: BrowserContext) -> None:
    page = open_dashboard(stack, context)
    stack.sim.publish_state("b_thermostat_1", temperature=21.1)
    expect(card(page, "b_thermostat_1").locator('[data-key="temperature"]')).to_have_text("21.1°C")
    stack.server.stop()
    expect(page.locator("tb-app")).not_to_have_attribute("data-connection", "open")
    for value in (21.2, 21.3, 21.4):  # the broker queues them for the server's session
        stack.sim.publish_state("b_thermostat_1", temperature=value)
    stack.server.start()
    expect(page.locator("tb-app")).to_have_attribute("data-connection", "open", timeout=30_000)
    expect(card(page, "b_thermostat_1").locator('[data-key="temperature"]')).to_have_text("21.4°C", timeout=15_000)
    expect(page.locator("tb-app")).to_have_attribute("data-resume", "gapless")
    expect(page.get_by_role("status").filter(has_text="resumed without gaps")).to_be_visible()
    with sqlite3.connect(stack.server.workdir / "server.db") as db:
        (last,) = db.execute("SELECT max(id) FROM events").fetchone()
    # The simulator goes on publishing: the page may already be past `last` when it is read.
    wait_until(
        lambda: int(page.locator("tb-app").get_attribute("data-last-offset") or 0) >= last,
        what="the page's last offset to reach the log's",
    )
    offsets = page.evaluate("document.querySelector('tb-app').offsets")
    assert offsets[-1] >= last
    assert offsets == list(range(offsets[0], offsets[-1] + 1)), "the page missed or repeated an event"
    assert not [p for p in stack.problems if "WebSocket" not in p and "ERR_CONNECTION_REFUSED" not in p]


def test_the_dev_token_leaves_the_address_bar_and_survives_a_reload(stack: Stack, context: BrowserContext) -> None:
    page = open_dashboard(stack, context)
    assert "token" not in page.url
    assert page.evaluate("sessionStorage.getItem('thermo-bridge.dev-token')") == stack.token
    page.reload()
    expect(page.locator("article[data-device-id]")).to_have_count(3)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Access token")).to_be_visible()
    page.get_by_label("Access token").fill(stack.token)
    page.get_by_role("button", name="Use this token").click()
    expect(page.locator("article[data-device-id]")).to_have_count(3)
    assert not stack.problems


def test_no_serious_accessibility_violations_light_and_dark(stack: Stack, browser: Browser) -> None:
    shots = os.environ.get("THERMO_BRIDGE_SCREENSHOTS")
    for scheme in ("light", "dark"):
        for name, viewport in VIEWPORTS:
            # bypass_csp: axe is injected as a script the page's policy would (rightly) refuse.
            context = browser.new_context(
                viewport=viewport, color_scheme=scheme, bypass_csp=True, is_mobile=name == "phone"
            )
            page = open_dashboard(stack, context)
            card(page, "b_thermostat_1").get_by_role("button", name="History").click()
            expect(page.locator("tb-history-chart")).to_have_attribute("data-status", "ready")
            page.add_script_tag(path=str(AXE))
            result = json.loads(
                page.evaluate("async () => JSON.stringify(await axe.run(document, {resultTypes: ['violations']}))")
            )
            bad = [
                (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
                for v in result["violations"]
                if v["impact"] in ("serious", "critical")
            ]
            assert not bad, f"{scheme} {name}: {bad}"
            buttons = page.locator("tb-thermostat-card button").all()
            assert all((b.bounding_box() or {"height": 0})["height"] >= 44 for b in buttons[:6]), "touch targets"
            if shots:
                suffix = "" if scheme == "light" else "-dark"
                page.screenshot(path=str(Path(shots) / f"dashboard-{name}{suffix}.png"), full_page=False)
            context.close()
    assert not stack.problems


def test_keyboard_alone_changes_the_mode(stack: Stack, context: BrowserContext) -> None:
    page = open_dashboard(stack, context)
    mode = card(page, "b_thermostat_1").get_by_role("combobox", name="Mode")
    mode.focus()
    page.keyboard.press("End")  # the last mode, chosen from the keyboard
    expect(card(page, "b_thermostat_1").locator('[data-role="command-status"]')).to_have_text("Confirmed by the device")
    raise_ = card(page, "b_thermostat_1").get_by_role("button", name="Raise setpoint")
    raise_.focus()
    page.keyboard.press("Enter")
    expect(card(page, "b_thermostat_1")).to_have_attribute("data-pending", "true")
    assert not stack.problems
