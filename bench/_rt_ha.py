"""Home Assistant for bench/realtime_latency.py, run as its own process: the same devices, HA's WebSocket API.

A real HA core (``_ha.py``) with its MQTT integration on the benchmark's broker, our
integration turning the devices into entities, and ``websocket_api`` on HA's http server. It
creates a long-lived access token the way a user does in their profile, waits until every
device's temperature sensor has a state, prints ``{"port", "token", "entities"}`` (entity id
→ device id) and runs until a line arrives on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench import _ha  # noqa: E402


async def run(args: argparse.Namespace) -> None:
    from homeassistant.auth.const import GROUP_ID_ADMIN  # noqa: PLC0415
    from homeassistant.auth.models import TOKEN_TYPE_LONG_LIVED_ACCESS_TOKEN  # noqa: PLC0415
    from homeassistant.setup import async_setup_component  # noqa: PLC0415

    hass = await _ha.start_home_assistant(Path(args.config_dir))
    if not await async_setup_component(hass, "websocket_api", {}):
        raise SystemExit("HA's websocket_api did not set up")
    await _ha.add_mqtt_entry(hass, "127.0.0.1", args.broker_port)
    await _ha.add_thermo_bridge_entry(hass, "thermo_bridge")
    user = await hass.auth.async_create_user("bench", group_ids=[GROUP_ID_ADMIN])
    refresh = await hass.auth.async_create_refresh_token(
        user,
        client_name="bench",
        token_type=TOKEN_TYPE_LONG_LIVED_ACCESS_TOKEN,
        access_token_expiration=timedelta(days=1),
    )
    token = hass.auth.async_create_access_token(refresh)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # the orchestrator has published the devices
    entities: dict[str, str] = {}  # each device's temperature sensor
    climates: dict[str, str] = {}  # each device's climate entity
    async with asyncio.timeout(args.timeout):
        while len(entities) < args.devices or len(climates) < args.devices:
            await asyncio.sleep(0.2)
            entities, climates = {}, {}
            for entry in _ha.platform_entities(hass, "thermo_bridge"):
                state = hass.states.get(entry.entity_id)
                device = _ha.device_key(hass, entry)
                if not device or state is None or state.state in ("unknown", "unavailable"):
                    continue
                if entry.domain == "sensor" and entry.unique_id.endswith("temperature"):
                    entities[entry.entity_id] = device
                elif entry.domain == "climate":
                    climates[entry.entity_id] = device
    await _ha.flush_storage(hass)
    port = hass.http.server_port  # Home Assistant as users run it: its collector is left alone
    print(json.dumps({"port": port, "token": token, "entities": entities, "climates": climates}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await hass.async_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker-port", type=int, required=True)
    parser.add_argument("--config-dir", required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    from homeassistant.runner import create_event_loop  # noqa: PLC0415 - HA's own loop, as it runs

    asyncio.run(run(args), loop_factory=create_event_loop)


if __name__ == "__main__":
    main()
