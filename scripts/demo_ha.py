"""A real Home Assistant for ``scripts/demo --ha``: onboarded, MQTT on the demo broker, Thermo Bridge set up.

Runs Home Assistant core from the dev venv in this process, the way ``bench/_ha.py`` does, with
the integrations a newcomer needs to look around (the frontend and its dependencies, brands,
person, MQTT, Thermo Bridge) and not the default set (text-to-speech, cameras, ...), whose
packages a dev venv does not have. Everything a user would do in the browser goes through the
same paths: onboarding through its HTTP API (the owner account, location, analytics), MQTT and
Thermo Bridge through their config flows. When ready, it writes a JSON file with the URL and
the login, then optionally a screenshot of a device page (taken with headless Chromium once the
device has reported); it runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # HA's loader imports `custom_components` from this repository

from homeassistant import bootstrap, config_entries, core, loader  # noqa: E402
from homeassistant.components.http import config as http_config  # noqa: E402
from homeassistant.core_config import async_process_ha_core_config  # noqa: E402
from homeassistant.helpers import device_registry as dr  # noqa: E402
from homeassistant.helpers import entity_registry as er  # noqa: E402
from homeassistant.setup import async_setup_component  # noqa: E402

_LOGGER = logging.getLogger("demo_ha")
CLIENT_ID_PATH = "/"
ONBOARDED_STEPS = ["core_config", "analytics", "integration"]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def write_config(config_dir: Path) -> None:
    """A configuration folder whose onboarding needs only the owner account."""
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text("homeassistant:\n  name: Thermo Bridge demo\n")
    # Location, analytics and the integrations step are answered here (the location below, no
    # analytics); the owner account is created through onboarding's API by ``onboard``.
    storage = config_dir / ".storage"
    storage.mkdir(exist_ok=True)
    onboarding = {"version": 4, "minor_version": 1, "key": "onboarding", "data": {"done": ONBOARDED_STEPS}}
    (storage / "onboarding").write_text(json.dumps(onboarding))


async def start_home_assistant(config_dir: Path, http_port: int) -> core.HomeAssistant:
    """Home Assistant core with http on loopback and the frontend; no default integrations."""
    await asyncio.to_thread(write_config, config_dir)
    hass = core.HomeAssistant(str(config_dir))
    loader.async_setup(hass)
    hass.config.skip_pip = True
    hass.config_entries = config_entries.ConfigEntries(hass, {})
    await loader.async_get_custom_components(hass)
    if not await bootstrap.async_load_base_functionality(hass):
        raise RuntimeError("Home Assistant could not load its registries")
    for domain in bootstrap.CORE_INTEGRATIONS:
        if not await async_setup_component(hass, domain, {}):
            raise RuntimeError(f"Home Assistant core integration {domain} failed")
    await async_process_ha_core_config(
        hass,
        {
            "unit_system": "metric",
            "time_zone": "Europe/Amsterdam",
            "latitude": 52.37,
            "longitude": 4.89,
            "elevation": 0,
            "country": "NL",
            "currency": "EUR",
        },
    )
    # HA 2026 keeps the HTTP settings in storage (YAML would be migrated as a setting the user
    # must confirm): store loopback and our port as the confirmed ("stable") settings.
    store = await http_config.async_get_and_load_store(hass)
    await store.async_set_pending(
        http_config.HTTP_STORAGE_SCHEMA({"server_host": ["127.0.0.1"], "server_port": http_port})
    )
    await store.async_promote_pending()
    await store.async_mark_yaml_migration_done()
    components: dict[str, dict[str, Any]] = {
        "http": {},
        "frontend": {},
        "brands": {},
        "person": {},
    }
    for domain, conf in components.items():
        if not await async_setup_component(hass, domain, conf):
            raise RuntimeError(f"Home Assistant {domain} failed to set up")
    await hass.async_start()
    return hass


async def onboard(session: aiohttp.ClientSession, url: str, name: str, username: str, password: str) -> None:
    """Create the owner account the way the onboarding page does."""
    client_id = url + CLIENT_ID_PATH
    user = {"client_id": client_id, "name": name, "username": username, "password": password, "language": "en"}
    async with session.post(f"{url}/api/onboarding/users", json=user) as resp:
        resp.raise_for_status()
        await resp.json()


async def exchange_code(session: aiohttp.ClientSession, url: str, code: str) -> dict[str, Any]:
    """An authorization code for tokens (access and refresh), as the frontend does after login."""
    form = {"grant_type": "authorization_code", "code": code, "client_id": url + CLIENT_ID_PATH}
    async with session.post(f"{url}/auth/token", data=form) as resp:
        resp.raise_for_status()
        tokens: dict[str, Any] = await resp.json()
        return tokens


async def login_code(session: aiohttp.ClientSession, url: str, username: str, password: str) -> str:
    """Log in with username and password (the login page's flow); return the authorization code."""
    client_id = url + CLIENT_ID_PATH
    start = {"client_id": client_id, "handler": ["homeassistant", None], "redirect_uri": f"{url}/?auth_callback=1"}
    async with session.post(f"{url}/auth/login_flow", json=start) as resp:
        resp.raise_for_status()
        flow_id = (await resp.json())["flow_id"]
    credentials = {"client_id": client_id, "username": username, "password": password}
    async with session.post(f"{url}/auth/login_flow/{flow_id}", json=credentials) as resp:
        resp.raise_for_status()
        result = await resp.json()
    if result.get("type") != "create_entry":
        raise RuntimeError(f"login failed: {result.get('errors')}")
    code: str = result["result"]
    return code


async def configure(hass: core.HomeAssistant, domain: str, answers: list[dict[str, Any]]) -> config_entries.ConfigEntry:
    """Run an integration's config flow (source user) with these answers, as the UI would."""
    result: Any = await hass.config_entries.flow.async_init(domain, context={"source": config_entries.SOURCE_USER})
    for answer in answers:
        if result.get("type") != "form":
            break
        result = await hass.config_entries.flow.async_configure(result["flow_id"], answer)
    if result.get("type") != "create_entry":
        raise RuntimeError(f"the {domain} config flow did not create an entry: {result}")
    await hass.async_block_till_done()
    entry: config_entries.ConfigEntry = result["result"]
    if entry.state is not config_entries.ConfigEntryState.LOADED:
        raise RuntimeError(f"{domain} did not load: {entry.state} {entry.reason}")
    return entry


def stored_tokens(url: str, tokens: dict[str, Any]) -> str:
    """JavaScript that stores ``tokens`` where the frontend keeps a logged-in browser's tokens."""
    value = {
        **tokens,
        "hassUrl": url,
        "clientId": url + CLIENT_ID_PATH,
        "expires": int((time.time() + tokens["expires_in"]) * 1000),
    }
    return f"localStorage.setItem('hassTokens', {json.dumps(json.dumps(value))})"


PAGE_TEXT_JS = """(() => {
  const walk = (node) => {
    let text = node.shadowRoot ? walk(node.shadowRoot) : "";
    for (const child of node.childNodes) text += child.nodeType === 3 ? child.textContent : walk(child);
    return text;
  };
  return walk(document.body);
})()"""
"""The page's text including shadow DOM (Home Assistant's frontend renders into shadow roots)."""


async def screenshot(
    url: str, tokens: dict[str, Any], path: str, output: Path, *, expect: str, size: tuple[int, int] = (1600, 1000)
) -> None:
    """Open ``path`` logged in with ``tokens`` in headless Chromium; once it shows ``expect``, save a PNG."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    # Chromium's helper processes may still write to the profile as it exits: never fail on cleanup.
    with tempfile.TemporaryDirectory(prefix="demo-chromium-", ignore_cleanup_errors=True) as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(90):
                png = await _capture(Path(profile) / "DevToolsActivePort", url, tokens, path, expect=expect, size=size)
        finally:
            proc.terminate()
            await proc.wait()
    await asyncio.to_thread(output.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(output.write_bytes, png)


async def _capture(
    port_file: Path, url: str, tokens: dict[str, Any], path: str, *, expect: str, size: tuple[int, int]
) -> bytes:
    """Drive the browser over the DevTools protocol: log in, navigate, wait for ``expect``, screenshot."""
    while not await asyncio.to_thread(port_file.exists):  # noqa: ASYNC110 - Chromium writes it when listening
        await asyncio.sleep(0.1)
    port = (await asyncio.to_thread(port_file.read_text)).split()[0]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            page = next(t for t in await resp.json() if t["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 1_000_000))

            async def call(method: str, **params: object) -> dict[str, Any]:
                message_id = next(ids)
                await ws.send_json({"id": message_id, "method": method, "params": params})
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("id") == message_id:
                        if "error" in data:
                            raise RuntimeError(f"{method}: {data['error']}")
                        result: dict[str, Any] = data["result"]
                        return result
                raise RuntimeError("the browser closed the DevTools connection")

            async def page_text() -> str:
                text: str = (await call("Runtime.evaluate", expression=PAGE_TEXT_JS))["result"].get("value", "")
                return text

            await call(
                "Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1, mobile=False
            )
            await call("Page.navigate", url=f"{url}/auth/authorize")  # any page of the origin, to reach its storage
            await call("Runtime.evaluate", expression=stored_tokens(url, tokens))
            await call("Page.navigate", url=url + path)
            while expect not in await page_text():  # noqa: ASYNC110 - the page has no event for "rendered"
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)  # fonts, icons and the cards' animations
            shot = await call("Page.captureScreenshot", format="png")
            return base64.b64decode(shot["data"])


async def run(args: argparse.Namespace) -> int:
    """Start, onboard, configure, report ready, take the screenshot if asked, wait for a stop signal."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = f"http://127.0.0.1:{args.http_port}"
    hass = await start_home_assistant(Path(args.config_dir), args.http_port)
    try:
        async with aiohttp.ClientSession() as session:
            await onboard(session, url, "Demo", args.username, args.password)
            # What the MQTT form sends with its advanced section left as it is.
            advanced = {"set_client_cert": False, "set_ca_cert": "off", "transport": "tcp"}
            await configure(
                hass, "mqtt", [{"broker": args.mqtt_host, "port": args.mqtt_port, "other_settings": advanced}]
            )
            await configure(hass, "thermo_bridge", [{"base_topic": args.base_topic}])
            ready = json.dumps({"url": url, "username": args.username})
            await asyncio.to_thread(Path(args.ready_file).write_text, ready)
            if args.screenshot:  # once the devices (started after "ready") have reported
                await take_device_screenshot(hass, session, url, args)
        await stop.wait()
    finally:
        await hass.async_stop()
    return 0


async def take_device_screenshot(
    hass: core.HomeAssistant, session: aiohttp.ClientSession, url: str, args: argparse.Namespace
) -> None:
    """Wait for the device's first state report, then photograph its device page."""
    async with asyncio.timeout(60):
        while not _reported(hass, device := _device(dr.async_get(hass), args.screenshot_device)):  # noqa: ASYNC110
            await asyncio.sleep(0.2)  # the first state report has no event of its own
    assert device is not None  # noqa: S101 - _reported is False without one
    tokens = await exchange_code(session, url, await login_code(session, url, args.username, args.password))
    page = f"/config/devices/device/{device.id}"
    await screenshot(url, tokens, page, Path(args.screenshot), expect=device.name or args.screenshot_device)


def _device(registry: dr.DeviceRegistry, device_id: str) -> dr.DeviceEntry | None:
    devices = registry.async_get_devices(identifiers={("thermo_bridge", device_id)})
    return devices[0] if devices else None


def _reported(hass: core.HomeAssistant, device: dr.DeviceEntry | None) -> bool:
    if device is None:
        return False
    entities = er.async_entries_for_device(er.async_get(hass), device.id)
    return any((state := hass.states.get(e.entity_id)) is not None and state.state != "unknown" for e in entities)


def main() -> int:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-dir", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--base-topic", default="thermo_bridge")
    parser.add_argument("--username", default="demo")
    parser.add_argument("--password", required=True)
    parser.add_argument("--ready-file", required=True, help="written (JSON) once everything is set up")
    parser.add_argument("--screenshot", help="save a PNG of this device's page here once it reported")
    parser.add_argument("--screenshot-device", default="sim_thermostat_1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from homeassistant.runner import create_event_loop  # noqa: PLC0415 - HA's own event loop, as `hass` runs it

    return asyncio.run(run(args), loop_factory=create_event_loop)


if __name__ == "__main__":
    sys.exit(main())
