"""``scripts/demo --ha``: a newcomer's one command, checked the way they would use it.

The demo runs as a user starts it (its own process group, stopped with SIGTERM as Ctrl-C
would); the test logs in to Home Assistant with the printed user and password, finds the
simulated devices as entities, changes a setpoint through Home Assistant and sees it arrive at
the simulated thermostat and come back, in Home Assistant and in the add-on server's API, then
takes the device page's picture the way docs/img/ha-device-page.png was made.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
THERMOSTAT = "sim_thermostat_1"
STARTUP = 240.0


def load_demo_ha() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_ha", ROOT / "scripts" / "demo_ha.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo_ha = load_demo_ha()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``scripts/demo --ha`` running; what it printed (URLs, login, token)."""
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [str(ROOT / "scripts" / "demo"), "--ha"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(tmp_path)},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP
        while "Press Ctrl-C to stop." not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        text = out.read_text()
        match = re.search(r"Home Assistant\s+(http://\S+)\s+user (\S+), password (\S+)", text)
        assert match is not None, text
        api = re.search(r"^export API=(\S+)$", text, re.MULTILINE)
        token = re.search(r"^export TOKEN=(\S+)$", text, re.MULTILINE)
        assert api is not None
        assert token is not None
        work = re.search(r"files\s+(\S+)", text)
        assert work is not None
        yield {
            "ha": match[1],
            "username": match[2],
            "password": match[3],
            "api": api[1],
            "token": token[1],
            "work": work[1],
        }
        proc.send_signal(signal.SIGTERM)  # what Ctrl-C does: the script's trap stops everything
        assert proc.wait(timeout=60) == 143
        assert not Path(work[1]).exists(), "the demo's temporary folder is removed"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


WAIT = 30.0


async def eventually(what: str, check: Any) -> Any:
    """Poll the coroutine function ``check`` until it returns something truthy (at most WAIT s)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return result


@pytest.mark.timeout(400)
async def test_demo_shows_the_devices_in_home_assistant(demo: dict[str, str], tmp_path: Path) -> None:
    url = demo["ha"]
    async with aiohttp.ClientSession() as session:
        code = await demo_ha.login_code(session, url, demo["username"], demo["password"])
        tokens = await demo_ha.exchange_code(session, url, code)
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}

        async def template(source: str) -> str:
            async with session.post(f"{url}/api/template", json={"template": source}, headers=headers) as resp:
                resp.raise_for_status()
                return await resp.text()

        async def state(entity_id: str) -> dict[str, Any]:
            async with session.get(f"{url}/api/states/{entity_id}", headers=headers) as resp:
                resp.raise_for_status()
                result: dict[str, Any] = await resp.json()
                return result

        async def entities() -> list[str]:
            raw = await template("{{ integration_entities('thermo_bridge') | join(' ') }}")
            return raw.split()

        # Two thermostats and two sensors, each a device with its entities.
        async def four_devices() -> list[str]:
            devices = await template(
                "{{ integration_entities('thermo_bridge') | map('device_id') | unique | list | count }}"
            )
            return await entities() if devices.strip() == "4" else []

        found = await eventually("the simulated devices and their entities", four_devices)
        climates = [e for e in found if e.startswith("climate.")]
        assert len(climates) == 2
        assert len([e for e in found if e.startswith("sensor.")]) > 4
        climate = await template(
            "{% for e in integration_entities('thermo_bridge') if e.startswith('climate.')"
            f" and ('thermo_bridge', '{THERMOSTAT}') in device_attr(e, 'identifiers') %}}{{{{ e }}}}{{% endfor %}}"
        )
        assert climate in climates

        async def reported() -> bool:
            return (await state(climate))["state"] not in ("unknown", "unavailable")

        await eventually("the thermostat's first report", reported)
        target = 24.5 if (await state(climate))["attributes"].get("temperature") != 24.5 else 23.0

        # A service call in Home Assistant reaches the simulated device, which applies it and reports.
        body = {"entity_id": climate, "temperature": target}
        async with session.post(f"{url}/api/services/climate/set_temperature", json=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()

        async def ha_follows() -> bool:
            return bool((await state(climate))["attributes"].get("temperature") == target)

        await eventually("Home Assistant to show the new setpoint", ha_follows)

        async def server_follows() -> bool:
            api_headers = {"Authorization": f"Bearer {demo['token']}"}
            async with session.get(f"{demo['api']}/api/v1/devices/{THERMOSTAT}/state", headers=api_headers) as resp:
                resp.raise_for_status()
                values = (await resp.json())["values"]
                return bool(values.get("target_temperature") == target)

        await eventually("the add-on server to have the device's report", server_follows)

        # The device page, as docs/img/ha-device-page.png shows it.
        device_id = (await template(f"{{{{ device_id('{climate}') }}}}")).strip()
        name = (await template(f"{{{{ device_attr('{climate}', 'name') }}}}")).strip()
        picture = tmp_path / "device.png"
        await demo_ha.screenshot(url, tokens, f"/config/devices/device/{device_id}", picture, expect=name)
    with Image.open(picture) as image:
        assert image.size == (1600, 1000)
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 50, "a rendered page, not a blank one"
