"""The entry linked to the real Thermo Bridge server: its device, figures, token and commands.

HA's real MQTT client on a private mosquitto; the server (``python -m thermo_bridge_server``,
dev auth) and the simulator as processes on the same broker. Linking goes through the flows a
user sees: the add-on's Supervisor discovery, a LAN (zeroconf) discovery with the pasted token,
reconfigure and reauthentication.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from ipaddress import ip_address
from pathlib import Path

import pytest
from homeassistant.components import mqtt
from homeassistant.config_entries import SOURCE_HASSIO, SOURCE_REAUTH, SOURCE_ZEROCONF, ConfigEntry, ConfigEntryState
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE, EntityCategory
from homeassistant.core import Event, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.device_registry import DeviceEntryType
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)

from custom_components.thermo_bridge import async_remove_config_entry_device
from custom_components.thermo_bridge.const import CONF_BASE_TOPIC, DOMAIN, EVENT_THERMO_BRIDGE_COMMAND
from custom_components.thermo_bridge.diagnostics import (
    async_get_config_entry_diagnostics,
    async_get_device_diagnostics,
)
from custom_components.thermo_bridge.server import UPDATE_INTERVAL
from tests.broker import Mosquitto, free_port
from tests.waiting import wait_for

from .conftest import get_device
from .live import THERMOSTAT, WAIT, start_simulator
from .server_process import ServerProcess

SERVER_ID = "server:thermo_bridge"


@pytest.fixture
async def mqtt_hass(
    hass: HomeAssistant, socket_enabled: None, mock_hass_config: None, mosquitto: Mosquitto
) -> AsyncIterator[HomeAssistant]:
    """HA with its MQTT integration connected to the private broker."""
    entry = MockConfigEntry(
        domain=mqtt.DOMAIN, data={"broker": mosquitto.host, "port": mosquitto.port, "discovery": False}
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_for(lambda: mqtt.is_connected(hass), timeout=WAIT, what="HA's MQTT client to connect")
    yield hass
    # While the broker is still up: ours first, then HA's MQTT, which disconnects cleanly.
    for config_entry in sorted(hass.config_entries.async_entries(), key=lambda e: e.domain != DOMAIN):
        if config_entry.state is ConfigEntryState.LOADED:
            assert await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()


@pytest.fixture
async def simulator(hass: HomeAssistant, mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[None]:
    """``thermo-bridge-sim`` with one thermostat and one sensor (retained configs, so order does not matter)."""
    log = tmp_path / "simulator.log"
    process = await hass.async_add_executor_job(start_simulator, mosquitto, log)
    await wait_for(lambda: "devices on" in log.read_text(), timeout=WAIT, what="the simulator to announce")
    yield
    process.terminate()
    await hass.async_add_executor_job(process.wait, WAIT)


def entity(registry: er.EntityRegistry, platform: str, key: str) -> str:
    entity_id = registry.async_get_entity_id(platform, DOMAIN, f"{SERVER_ID}:{key}")
    assert entity_id is not None, f"no {platform} for the server's {key}"
    return entity_id


def state(hass: HomeAssistant, entity_id: str) -> str | None:
    current = hass.states.get(entity_id)
    return None if current is None else current.state


async def link_add_on(hass: HomeAssistant, server: ServerProcess, **changes: object) -> ConfigEntry:
    """The add-on's discovery as the Supervisor hands it over, confirmed by the user."""
    info = HassioServiceInfo(
        config={**server.discovery_config(), **changes}, name="Thermo Bridge", slug="local_thermo_bridge", uuid="a" * 32
    )
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_HASSIO}, data=info)
    assert result["step_id"] == "hassio_confirm"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    return result["result"]


def zeroconf_info(
    server: ServerProcess, base_topic: str = "thermo_bridge", port: int | None = None
) -> ZeroconfServiceInfo:
    return ZeroconfServiceInfo(
        ip_address=ip_address(server.host),
        ip_addresses=[ip_address(server.host)],
        hostname="thermo-bridge.local.",
        name="thermo_bridge._thermo-bridge._tcp.local.",
        port=port or server.port,
        type="_thermo-bridge._tcp.local.",
        properties={"version": "0.1.0", "api_path": "/api/v1", "base_topic": base_topic},
    )


async def poll(hass: HomeAssistant) -> None:
    """Let the poll interval pass once."""
    async_fire_time_changed(hass, dt_util.utcnow() + UPDATE_INTERVAL)
    await hass.async_block_till_done()


async def test_the_add_on_shows_as_a_device_with_its_figures(
    mqtt_hass: HomeAssistant,
    server: ServerProcess,
    device_registry: dr.DeviceRegistry,
    entity_registry: er.EntityRegistry,
) -> None:
    hass = mqtt_hass
    entry = await link_add_on(hass, server)
    assert entry.data["token"] == server.token
    online = entity(entity_registry, "binary_sensor", "online")
    await wait_for(lambda: state(hass, online) == STATE_ON, timeout=WAIT, what="the server to be online")

    session = async_get_clientsession(hass)
    async with session.get(f"{server.url}/health/live") as response:
        version = (await response.json())["version"]
    device = get_device(device_registry, SERVER_ID)
    assert device is not None
    assert (device.name, device.manufacturer, device.model) == ("Thermo Bridge server", "Thermo Bridge", "add-on")
    assert device.sw_version == version
    assert device.entry_type is DeviceEntryType.SERVICE
    # Visit opens the add-on's panel: the add-on's own host name is the Supervisor's internal one.
    assert device.configuration_url == "homeassistant://hassio/ingress/local_thermo_bridge"
    async with session.get(server.url + "/") as response:
        assert response.status == 200
        page = await response.text()
        assert "<title>Thermo Bridge</title>" in page  # the dashboard
        assert "<tb-app>" in page

    figures = {key: entity(entity_registry, "sensor", key) for key in ("web_clients", "rejected_total")}
    assert state(hass, figures["web_clients"]) == "0"
    assert state(hass, figures["rejected_total"]) == "0"
    rate = hass.states.get(entity(entity_registry, "sensor", "messages_per_minute"))
    assert rate is not None
    assert float(rate.state) >= 0
    assert rate.attributes["unit_of_measurement"] == "messages/min"
    size = hass.states.get(entity(entity_registry, "sensor", "database_bytes"))
    assert size is not None
    assert size.attributes["unit_of_measurement"] == "MB"
    assert float(size.state) > 0
    for entity_id in (online, *figures.values()):
        registered = entity_registry.async_get(entity_id)
        assert registered is not None
        assert registered.entity_category is EntityCategory.DIAGNOSTIC

    # Something the server rejects shows at the next poll.
    await mqtt.async_publish(hass, "thermo_bridge/intruder/state", "not json")

    async def counted() -> bool:
        await poll(hass)
        return state(hass, figures["rejected_total"]) == "1"

    await wait_for(counted, timeout=WAIT, interval=0.5, what="the rejected message to be counted")

    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    assert diagnostics["entry"]["data"]["token"] == "**REDACTED**"
    assert diagnostics["server"]["last_update_success"] is True
    assert diagnostics["server"]["status"]["version"] == version
    assert await async_get_device_diagnostics(hass, entry, device) == {"server": diagnostics["server"]}
    # The server's device stays while the entry is linked to it.
    assert await async_remove_config_entry_device(hass, entry, device) is False


async def test_losing_the_server_leaves_the_thermostats_alone(
    mqtt_hass: HomeAssistant,
    server: ServerProcess,
    simulator: None,
    entity_registry: er.EntityRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hass = mqtt_hass
    await link_add_on(hass, server)
    online = entity(entity_registry, "binary_sensor", "online")
    clients = entity(entity_registry, "sensor", "web_clients")
    await wait_for(lambda: state(hass, online) == STATE_ON, timeout=WAIT, what="the server to be online")
    await wait_for(
        lambda: entity_registry.async_get_entity_id("climate", DOMAIN, f"{THERMOSTAT}_climate"),
        timeout=WAIT,
        what="the simulated thermostat",
    )
    climate = entity_registry.async_get_entity_id("climate", DOMAIN, f"{THERMOSTAT}_climate")
    assert climate is not None
    await wait_for(lambda: state(hass, climate) not in (None, STATE_UNAVAILABLE), timeout=WAIT, what="its state")

    await hass.async_add_executor_job(server.stop)
    caplog.set_level(logging.ERROR, "custom_components.thermo_bridge")
    await poll(hass)
    await wait_for(lambda: state(hass, online) == STATE_OFF, timeout=WAIT, what="the server to be offline")
    assert state(hass, clients) == STATE_UNAVAILABLE
    assert state(hass, online) == STATE_OFF  # available: off, not unknown
    assert state(hass, climate) not in (None, STATE_UNAVAILABLE)  # the devices come from MQTT
    assert "did not give its status" in caplog.text
    await poll(hass)  # still down: logged once, not at every poll
    assert caplog.text.count("did not give its status") == 1

    await hass.async_add_executor_job(server.start)  # same port, same token file
    await poll(hass)
    await wait_for(lambda: state(hass, clients) == "0", timeout=WAIT, what="the server's figures to come back")
    assert state(hass, online) == STATE_ON


async def test_a_command_through_the_server_fires_thermo_bridge_command(
    mqtt_hass: HomeAssistant, server: ServerProcess, simulator: None, device_registry: dr.DeviceRegistry
) -> None:
    """POST /api/v1/devices/{id}/commands on the real server → the device acks → the report → the bus."""
    hass = mqtt_hass
    await link_add_on(hass, server)
    await wait_for(lambda: get_device(device_registry, THERMOSTAT), timeout=WAIT, what="the thermostat in HA")
    token = await hass.async_add_executor_job(server.mint, "auth0|alice", "read:devices", "write:devices")

    async def known_to_server() -> bool:
        status, _ = await hass.async_add_executor_job(server.request, "GET", f"/api/v1/devices/{THERMOSTAT}", token)
        return status == 200

    await wait_for(known_to_server, timeout=WAIT, what="the server to know the thermostat")
    events: list[Event] = async_capture_events(hass, EVENT_THERMO_BRIDGE_COMMAND)
    status, body = await hass.async_add_executor_job(
        server.request,
        "POST",
        f"/api/v1/devices/{THERMOSTAT}/commands",
        token,
        {"values": {"target_temperature": 22.5}},
    )
    assert status == 202, body
    await wait_for(lambda: events, timeout=WAIT, what="thermo_bridge_command")
    device = get_device(device_registry, THERMOSTAT)
    assert device is not None
    assert events[0].data == {
        "device_id": device.id,
        "bridge_device_id": THERMOSTAT,
        "command_id": body["id"],
        "values": {"target_temperature": 22.5},
        "user": "auth0|alice",
        "status": "acked",
        "reason": None,
    }
    await asyncio.sleep(0.5)
    assert len(events) == 1  # once per command


async def test_a_refused_token_asks_for_the_current_one(
    mqtt_hass: HomeAssistant, server: ServerProcess, entity_registry: er.EntityRegistry
) -> None:
    hass = mqtt_hass
    entry = await link_add_on(hass, server, token="an-old-token")
    await wait_for(
        lambda: list(entry.async_get_active_flows(hass, {SOURCE_REAUTH})), timeout=WAIT, what="a reauthentication"
    )
    flows = list(entry.async_get_active_flows(hass, {SOURCE_REAUTH}))
    online = entity(entity_registry, "binary_sensor", "online")
    assert state(hass, online) == STATE_OFF

    flow_id = flows[0]["flow_id"]
    result = await hass.config_entries.flow.async_configure(flow_id, {"token": "still-wrong"})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_confirm"
    assert result["errors"] == {"token": "invalid_token"}
    assert result["description_placeholders"]["address"] == f"127.0.0.1:{server.port}"
    result = await hass.config_entries.flow.async_configure(flow_id, {"token": f" {server.token}\n"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()
    assert entry.data["token"] == server.token
    online = entity(entity_registry, "binary_sensor", "online")
    await wait_for(lambda: state(hass, online) == STATE_ON, timeout=WAIT, what="the server to be online again")


async def test_a_recreated_token_comes_with_the_add_ons_next_discovery(
    mqtt_hass: HomeAssistant, server: ServerProcess, entity_registry: er.EntityRegistry
) -> None:
    """The add-on's token file is gone (a restore, a wiped /data): its new discovery relinks the entry."""
    hass = mqtt_hass
    entry = await link_add_on(hass, server)
    online = entity(entity_registry, "binary_sensor", "online")
    await wait_for(lambda: state(hass, online) == STATE_ON, timeout=WAIT, what="the server to be online")
    old_token = server.token
    await hass.async_add_executor_job(server.stop)
    server.token_path.unlink()
    await hass.async_add_executor_job(server.start)
    assert server.token != old_token
    info = HassioServiceInfo(
        config=server.discovery_config(), name="Thermo Bridge", slug="local_thermo_bridge", uuid="a" * 32
    )
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_HASSIO}, data=info)
    assert result["reason"] == "already_configured"
    await hass.async_block_till_done()
    assert entry.data["token"] == server.token
    await wait_for(lambda: state(hass, online) == STATE_ON, timeout=WAIT, what="the server to be online again")
    assert not list(entry.async_get_active_flows(hass, {SOURCE_REAUTH}))


async def test_a_server_found_on_the_lan_is_linked_with_the_pasted_token(
    mqtt_hass: HomeAssistant, server: ServerProcess, device_registry: dr.DeviceRegistry
) -> None:
    hass = mqtt_hass
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info(server)
    )
    assert result["step_id"] == "zeroconf_confirm"
    assert result["description_placeholders"] == {
        CONF_BASE_TOPIC: "thermo_bridge",
        "address": f"127.0.0.1:{server.port}",
    }
    flow_id = result["flow_id"]
    result = await hass.config_entries.flow.async_configure(flow_id, {"token": "wrong"})
    assert result["errors"] == {"token": "invalid_token"}
    result = await hass.config_entries.flow.async_configure(flow_id, {"token": server.token})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {
        CONF_BASE_TOPIC: "thermo_bridge",
        "host": "127.0.0.1",
        "port": server.port,
        "api_path": "/api/v1",
        "link": "network",
        "token": server.token,
    }
    await hass.async_block_till_done()
    await wait_for(lambda: get_device(device_registry, SERVER_ID), timeout=WAIT, what="the server's device")
    device = get_device(device_registry, SERVER_ID)
    assert device is not None
    assert device.model == "server"
    # On the LAN, Visit opens the server's own page (the dashboard).
    assert device.configuration_url == f"http://127.0.0.1:{server.port}/"
    async with async_get_clientsession(hass).get(device.configuration_url) as response:
        assert response.status == 200
        assert "<tb-app>" in await response.text()


async def test_the_token_must_be_the_servers_of_that_base_topic(
    mqtt_hass: HomeAssistant, server: ServerProcess
) -> None:
    hass = mqtt_hass
    # Another base topic's advertisement (as if from another server) at this server's address.
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info(server, base_topic="site/b")
    )
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"token": server.token})
    assert result["errors"] == {"token": "other_base_topic"}
    # Nothing listens there (any more).
    closed = free_port()
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info(server, base_topic="site/c", port=closed)
    )
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"token": server.token})
    assert result["errors"] == {"token": "cannot_connect"}
    # Without a token: the devices only, no server device.
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert "token" not in result["data"]
    await hass.async_block_till_done()
    assert result["result"].runtime_data.server is None


async def test_reconfigure_takes_the_token_of_a_known_server(
    mqtt_hass: HomeAssistant, server: ServerProcess, device_registry: dr.DeviceRegistry
) -> None:
    hass = mqtt_hass
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id="thermo_bridge",
        data={
            CONF_BASE_TOPIC: "thermo_bridge",
            "host": "127.0.0.1",
            "port": server.port,
            "api_path": "/api/v1",
            "link": "network",
        },
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert get_device(device_registry, SERVER_ID) is None

    result = await entry.start_reconfigure_flow(hass)
    assert result["description_placeholders"] == {"address": f"127.0.0.1:{server.port}"}
    assert "token" in result["data_schema"].schema
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_BASE_TOPIC: "thermo_bridge", "token": "wrong"}
    )
    assert result["errors"] == {"token": "invalid_token"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_BASE_TOPIC: "thermo_bridge", "token": server.token}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert entry.data["token"] == server.token
    await wait_for(lambda: get_device(device_registry, SERVER_ID), timeout=WAIT, what="the server's device")
