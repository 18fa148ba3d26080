"""Config, discovery, reconfigure and options flows: every step, error and abort."""

from __future__ import annotations

import json
from ipaddress import ip_address
from typing import Any

import pytest
from homeassistant.config_entries import SOURCE_HASSIO, SOURCE_MQTT, SOURCE_USER, SOURCE_ZEROCONF
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType, InvalidData
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.thermo_bridge.const import CONF_BASE_TOPIC, DOMAIN
from tests.broker import free_port

from .conftest import THERMOSTAT_CONFIG, SetupEntry
from .server_process import ServerProcess


def mqtt_info(payload: str | bytes = json.dumps(THERMOSTAT_CONFIG), subscribed: str = "thermo_bridge/+/config") -> Any:
    return MqttServiceInfo(
        topic="thermo_bridge/living/config",
        payload=payload,
        qos=0,
        retain=True,
        subscribed_topic=subscribed,
        timestamp=0,
    )


def zeroconf_info(
    properties: dict[str, Any], host: str = "192.168.1.20", port: int | None = 8099
) -> ZeroconfServiceInfo:
    return ZeroconfServiceInfo(
        ip_address=ip_address(host),
        ip_addresses=[ip_address(host)],
        hostname="thermo-bridge.local.",
        name="thermo_bridge._thermo-bridge._tcp.local.",
        port=port,
        type="_thermo-bridge._tcp.local.",
        properties=properties,
    )


ADDON_CONFIG = {
    "host": "a0d7b954-thermo-bridge",
    "port": 8099,
    "api_path": "/api/v1",
    "base_topic": "thermo_bridge",
    "token": "tok-secret",
    "addon": "Thermo Bridge",  # HA core adds the add-on's name to every discovery
}


def hassio_info(**changes: Any) -> HassioServiceInfo:
    config = {key: value for key, value in {**ADDON_CONFIG, **changes}.items() if value is not None}
    return HassioServiceInfo(config=config, name="Thermo Bridge", slug="a0d7b954_thermo_bridge", uuid="f" * 32)


LINKED = {
    CONF_BASE_TOPIC: "thermo_bridge",
    "host": "a0d7b954-thermo-bridge",
    "port": 8099,
    "api_path": "/api/v1",
    "token": "tok-secret",
    "link": "supervisor",
    "addon_slug": "a0d7b954_thermo_bridge",
}


async def test_user_flow_creates_entry(hass: HomeAssistant, mqtt_mock: Any) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_BASE_TOPIC: "/home/heating/"})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Thermo Bridge (home/heating)"
    assert result["data"] == {CONF_BASE_TOPIC: "home/heating"}
    assert result["result"].unique_id == "home/heating"


async def test_user_flow_default_topic_title(hass: HomeAssistant, mqtt_mock: Any) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_BASE_TOPIC: "thermo_bridge"})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Thermo Bridge"


@pytest.mark.parametrize("topic", ["", "/", "a/+/b", "home/#", "$SYS", "a//b", "x" * 201])
async def test_user_flow_invalid_topic(hass: HomeAssistant, mqtt_mock: Any, topic: str) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_BASE_TOPIC: topic})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_BASE_TOPIC: "invalid_topic"}
    # The user can correct it in the same flow.
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_BASE_TOPIC: "fixed"})
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_flow_already_configured(hass: HomeAssistant, mqtt_mock: Any) -> None:
    MockConfigEntry(domain=DOMAIN, unique_id="thermo_bridge", data={CONF_BASE_TOPIC: "thermo_bridge"}).add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_BASE_TOPIC: "thermo_bridge/"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_user_flow_without_mqtt(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "mqtt_not_configured"


async def test_mqtt_discovery_flow(hass: HomeAssistant, mqtt_mock: Any) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_MQTT}, data=mqtt_info())
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "discovery_confirm"
    assert result["description_placeholders"] == {CONF_BASE_TOPIC: "thermo_bridge"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_BASE_TOPIC: "thermo_bridge"}
    assert result["result"].unique_id == "thermo_bridge"


async def test_mqtt_discovery_is_triggered_by_a_retained_config(hass: HomeAssistant, mqtt_mock: Any) -> None:
    """The manifest's mqtt filter makes HA start the flow when a device announces itself."""
    from pytest_homeassistant_custom_component.common import async_fire_mqtt_message  # noqa: PLC0415

    async_fire_mqtt_message(hass, "thermo_bridge/living/config", json.dumps(THERMOSTAT_CONFIG), retain=True)
    await hass.async_block_till_done()
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert len(flows) == 1
    assert flows[0]["context"]["source"] == SOURCE_MQTT
    # A second device under the same base topic does not start another flow.
    async_fire_mqtt_message(hass, "thermo_bridge/other/config", json.dumps(THERMOSTAT_CONFIG), retain=True)
    await hass.async_block_till_done()
    assert len(hass.config_entries.flow.async_progress_by_handler(DOMAIN)) == 1


@pytest.mark.parametrize(
    "info",
    [
        mqtt_info(payload=""),
        mqtt_info(payload=b""),
        mqtt_info(payload="not json"),
        mqtt_info(payload=b'{"schema": 1, "id": "x"}'),
        mqtt_info(subscribed="thermo_bridge/#"),
    ],
)
async def test_mqtt_discovery_invalid(hass: HomeAssistant, mqtt_mock: Any, info: Any) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_MQTT}, data=info)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "invalid_discovery_info"


async def test_mqtt_discovery_of_a_newer_schema_device(hass: HomeAssistant, mqtt_mock: Any) -> None:
    """A device of ours that speaks a newer schema still offers the integration (then a repair issue)."""
    payload = json.dumps(dict(THERMOSTAT_CONFIG, schema=2)).encode()
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_MQTT}, data=mqtt_info(payload=payload)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "discovery_confirm"


async def test_mqtt_discovery_invalid_base(hass: HomeAssistant, mqtt_mock: Any) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_MQTT}, data=mqtt_info(subscribed="$x/+/config")
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "invalid_discovery_info"


async def test_mqtt_discovery_already_configured(hass: HomeAssistant, setup_entry: SetupEntry) -> None:
    await setup_entry()
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_MQTT}, data=mqtt_info())
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_discovery_already_in_progress(hass: HomeAssistant, mqtt_mock: Any) -> None:
    first = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_MQTT}, data=mqtt_info())
    assert first["type"] is FlowResultType.FORM
    second = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info({"base_topic": "thermo_bridge"})
    )
    assert second["type"] is FlowResultType.ABORT
    assert second["reason"] == "already_in_progress"


async def test_discovery_without_mqtt(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info({"base_topic": "thermo_bridge"})
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "mqtt_not_configured"


async def test_zeroconf_flow(hass: HomeAssistant, mqtt_mock: Any) -> None:
    """Without the token (the LAN advertisement never carries it) the entry has the devices only."""
    info = zeroconf_info({"version": "0.1.0", "api_path": "/api/v1", "base_topic": "site/a"})
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_ZEROCONF}, data=info)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "zeroconf_confirm"
    assert result["description_placeholders"] == {CONF_BASE_TOPIC: "site/a", "address": "192.168.1.20:8099"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"token": "  "})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {
        CONF_BASE_TOPIC: "site/a",
        "host": "192.168.1.20",
        "port": 8099,
        "api_path": "/api/v1",
        "link": "network",
    }
    assert result["result"].unique_id == "site/a"
    await hass.async_block_till_done()
    assert result["result"].runtime_data.server is None


async def test_zeroconf_merges_with_the_mqtt_discovered_entry(hass: HomeAssistant, setup_entry: SetupEntry) -> None:
    """The server's address joins the entry the devices made; a new address replaces it."""
    entry = await setup_entry()
    for host in ("192.168.1.20", "192.168.1.20", "192.168.1.31"):
        info = zeroconf_info({"version": "0.1.0", "api_path": "/api/v1", "base_topic": "thermo_bridge"}, host=host)
        result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_ZEROCONF}, data=info)
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "already_configured"
        assert entry.data["host"] == host
    await hass.async_block_till_done()
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1
    assert entry.data == {
        CONF_BASE_TOPIC: "thermo_bridge",
        "host": "192.168.1.31",
        "port": 8099,
        "api_path": "/api/v1",
        "link": "network",
    }


async def test_a_server_announced_at_another_address_does_not_get_the_token(
    hass: HomeAssistant, mqtt_mock: Any
) -> None:
    """Anyone on the LAN can announce a base topic: the pasted token stays with its address."""
    linked = {CONF_BASE_TOPIC: "thermo_bridge", "host": "192.168.1.20", "port": 8099, "api_path": "/api/v1"}
    entry = MockConfigEntry(
        domain=DOMAIN, unique_id="thermo_bridge", data={**linked, "link": "network", "token": "tok-secret"}
    )
    entry.add_to_hass(hass)
    properties = {"api_path": "/api/v1", "base_topic": "thermo_bridge"}
    same = zeroconf_info(properties, host="192.168.1.20")
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_ZEROCONF}, data=same)
    assert result["reason"] == "already_configured"
    assert entry.data["token"] == "tok-secret"
    moved = zeroconf_info(properties, host="192.168.1.66")
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_ZEROCONF}, data=moved)
    assert result["reason"] == "already_configured"
    assert entry.data["host"] == "192.168.1.66"
    assert not entry.data["token"]


async def test_zeroconf_keeps_the_supervisors_address(hass: HomeAssistant, mqtt_mock: Any) -> None:
    """The add-on's LAN advertisement must not replace the address the Supervisor gave."""
    entry = MockConfigEntry(domain=DOMAIN, unique_id="thermo_bridge", data=LINKED)
    entry.add_to_hass(hass)
    info = zeroconf_info({"api_path": "/api/v1", "base_topic": "thermo_bridge"}, host="192.168.1.31")
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_ZEROCONF}, data=info)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data == LINKED


@pytest.mark.parametrize(
    ("properties", "port"),
    [
        ({}, 8099),
        ({"base_topic": "bad/+/topic"}, 8099),
        ({"base_topic": ""}, 8099),
        ({"base_topic": "ok", "api_path": "api/v1"}, 8099),
        ({"base_topic": "ok", "api_path": "/api?x=1"}, 8099),
        ({"base_topic": "ok"}, None),
    ],
)
async def test_zeroconf_invalid(
    hass: HomeAssistant, mqtt_mock: Any, properties: dict[str, Any], port: int | None
) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info(properties, port=port)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "invalid_discovery_info"


async def test_hassio_flow_links_the_add_on(hass: HomeAssistant, mqtt_mock: Any, server: ServerProcess) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=hassio_info(**server.discovery_config())
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "hassio_confirm"
    assert result["description_placeholders"] == {CONF_BASE_TOPIC: "thermo_bridge"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Thermo Bridge"
    assert result["data"] == {**LINKED, "host": "127.0.0.1", "port": server.port, "token": server.token}
    assert result["result"].unique_id == "thermo_bridge"


async def test_hassio_discovery_updates_the_entry(
    hass: HomeAssistant, setup_entry: SetupEntry, server: ServerProcess
) -> None:
    """An entry of the same base topic gets the add-on's address and token; a moved add-on updates it."""
    entry = await setup_entry()
    add_on = {**LINKED, "host": "127.0.0.1", "port": server.port, "token": server.token}
    for changes in ({}, {"host": "localhost"}, {"port": free_port()}):
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_HASSIO}, data=hassio_info(**{**server.discovery_config(), **changes})
        )
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "already_configured"
        await hass.async_block_till_done()
        assert entry.data == {**add_on, **changes}
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1
    assert entry.runtime_data.base_topic == "thermo_bridge"  # reloaded, still running
    assert entry.runtime_data.server is not None
    assert entry.runtime_data.server.port == entry.data["port"]


@pytest.mark.parametrize(
    "changes",
    [
        {"base_topic": None},
        {"base_topic": "bad/#"},
        {"host": None},
        {"host": "bad host/x"},
        {"port": None},
        {"port": 0},
        {"port": "http"},
        {"port": True},
        {"api_path": None},
        {"token": None},
        {"token": ""},
    ],
)
async def test_hassio_discovery_invalid(hass: HomeAssistant, mqtt_mock: Any, changes: dict[str, Any]) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=hassio_info(**changes)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "invalid_discovery_info"


async def test_hassio_port_as_text_is_accepted(hass: HomeAssistant, mqtt_mock: Any, server: ServerProcess) -> None:
    config = {**server.discovery_config(), "port": str(server.port)}
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=hassio_info(**config)
    )
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["data"]["port"] == server.port


async def test_hassio_discovery_without_mqtt(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_HASSIO}, data=hassio_info())
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "mqtt_not_configured"


async def test_reconfigure_keeps_the_base_topic(hass: HomeAssistant, setup_entry: SetupEntry) -> None:
    """The base topic is the entry's unique id: reconfigure may not change it."""
    entry = await setup_entry()
    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_BASE_TOPIC: "a/+"})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_BASE_TOPIC: "invalid_topic"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_BASE_TOPIC: "house/heating"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"
    assert result["description_placeholders"] == {CONF_BASE_TOPIC: "thermo_bridge"}
    assert entry.data == {CONF_BASE_TOPIC: "thermo_bridge"}
    assert entry.unique_id == "thermo_bridge"


async def test_reconfigure_same_topic(hass: HomeAssistant, setup_entry: SetupEntry) -> None:
    entry = await setup_entry()
    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_BASE_TOPIC: "/thermo_bridge/"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert entry.data == {CONF_BASE_TOPIC: "thermo_bridge"}


async def test_options_flow(hass: HomeAssistant, setup_entry: SetupEntry) -> None:
    entry = await setup_entry()
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"command_timeout": 25, "optimistic": True}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {"command_timeout": 25, "optimistic": True}
    # Read live by the bridge, no reload needed.
    assert entry.runtime_data.command_timeout == 25
    assert entry.runtime_data.optimistic is True


@pytest.mark.parametrize("seconds", [0, 301])
async def test_options_flow_rejects_out_of_range_timeout(
    hass: HomeAssistant, setup_entry: SetupEntry, seconds: int
) -> None:
    entry = await setup_entry()
    result = await hass.config_entries.options.async_init(entry.entry_id)
    with pytest.raises(InvalidData, match="command_timeout"):
        await hass.config_entries.options.async_configure(
            result["flow_id"], {"command_timeout": seconds, "optimistic": False}
        )
    assert entry.options == {}
