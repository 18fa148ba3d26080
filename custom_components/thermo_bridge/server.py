"""The Thermo Bridge server (the add-on) an entry is linked to: its status, read with the internal token.

The devices never depend on it: they come from MQTT. The server's own device and its diagnostic
entities follow ``GET /internal/v1/status``, polled with the internal token the add-on handed
over through the Supervisor's discovery (or the user pasted for a server found on the LAN).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from homeassistant.const import CONF_HOST, CONF_PORT, CONF_TOKEN
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.update_coordinator import CoordinatorEntity, DataUpdateCoordinator, UpdateFailed
from yarl import URL

from .const import CONF_ADDON_SLUG, CONF_LINK, DOMAIN, LINK_SUPERVISOR

if TYPE_CHECKING:
    from .bridge import ThermoBridgeConfigEntry

_LOGGER = logging.getLogger(__package__)

STATUS_PATH = "/internal/v1/status"
UPDATE_INTERVAL = timedelta(seconds=30)
"""The figures are for a glance on the device page; a status read costs the server a database
size query, so twice a minute is plenty."""
REQUEST_TIMEOUT = 10.0
MAX_COUNT = 2**53
"""Counts above this are not numbers a server reports (and would lose precision in JSON)."""


class ServerAuthError(Exception):
    """The server refused the internal token."""


class ServerUnreachableError(Exception):
    """The server did not answer, or not with a status."""


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """What ``/internal/v1/status`` reports."""

    version: str
    base_topic: str
    broker_connected: bool
    store_ok: bool
    web_clients: int
    messages_per_minute: float
    rejected_total: int
    database_bytes: int | None
    devices: int


def _count(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ServerUnreachableError(f"the status's {key} is not a count: {value!r}")
    return value


def parse_status(body: object) -> ServerStatus:
    """A status from the server's JSON, or ServerUnreachableError naming what is wrong with it."""
    if not isinstance(body, dict):
        raise ServerUnreachableError("the status is not a JSON object")
    for key in ("version", "base_topic"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise ServerUnreachableError(f"the status has no {key}")
    for key in ("broker_connected", "store_ok"):
        if not isinstance(body.get(key), bool):
            raise ServerUnreachableError(f"the status's {key} is not true or false")
    rate = body.get("messages_per_minute")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate < 0:
        raise ServerUnreachableError(f"the status's messages_per_minute is not a rate: {rate!r}")
    return ServerStatus(
        version=body["version"][:64],
        base_topic=body["base_topic"],
        broker_connected=body["broker_connected"],
        store_ok=body["store_ok"],
        web_clients=_count(body, "web_clients"),
        messages_per_minute=float(rate),
        rejected_total=_count(body, "rejected_total"),
        database_bytes=None if body.get("database_bytes") is None else _count(body, "database_bytes"),
        devices=_count(body, "devices"),
    )


def server_url(host: str, port: int, path: str = "/") -> URL:
    """``http://host:port/path`` (IPv6 hosts in brackets)."""
    return URL.build(scheme="http", host=host, port=port, path=path)


async def async_fetch_status(hass: HomeAssistant, host: str, port: int, token: str) -> ServerStatus:
    """Read the server's status with its internal token, over HA's shared HTTP session."""
    session = async_get_clientsession(hass)
    try:
        async with session.get(
            server_url(host, port, STATUS_PATH),
            headers={aiohttp.hdrs.AUTHORIZATION: f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            allow_redirects=False,
        ) as response:
            if response.status == 401:
                raise ServerAuthError("the server refused the internal token")
            if response.status != 200:
                raise ServerUnreachableError(f"the server answered HTTP {response.status}")
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        raise ServerUnreachableError(str(err) or type(err).__name__) from err
    return parse_status(body)


def server_identifier(entry: ThermoBridgeConfigEntry) -> tuple[str, str]:
    """The server device's identifier: ``server:<base topic>`` (``:`` is never in a device id)."""
    return DOMAIN, f"server:{entry.unique_id}"


class ServerCoordinator(DataUpdateCoordinator[ServerStatus]):
    """Polls the linked server's status; a failed poll makes its entities unavailable."""

    config_entry: ThermoBridgeConfigEntry

    def __init__(self, hass: HomeAssistant, entry: ThermoBridgeConfigEntry) -> None:
        super().__init__(
            hass, _LOGGER, config_entry=entry, name="Thermo Bridge server", update_interval=UPDATE_INTERVAL
        )
        self.host: str = entry.data[CONF_HOST]
        self.port: int = entry.data[CONF_PORT]
        self._token: str = entry.data[CONF_TOKEN]

    async def _async_update_data(self) -> ServerStatus:
        try:
            status = await async_fetch_status(self.hass, self.host, self.port, self._token)
        except ServerAuthError as err:
            raise ConfigEntryAuthFailed(translation_domain=DOMAIN, translation_key="server_token_refused") from err
        except ServerUnreachableError as err:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="server_unreachable",
                translation_placeholders={"address": f"{self.host}:{self.port}", "error": str(err)},
            ) from err
        if self.data is None or status.version != self.data.version:
            self._update_sw_version(status.version)
        return status

    @callback
    def _update_sw_version(self, version: str) -> None:
        registry = dr.async_get(self.hass)
        identifier = server_identifier(self.config_entry)
        if hasattr(registry, "async_get_devices"):  # identifiers are unique per config entry since HA 2026
            devices = registry.async_get_devices(identifiers={identifier}, config_entry_id=self.config_entry.entry_id)
        else:  # pragma: no cover - HA < 2026
            devices = [device] if (device := registry.async_get_device(identifiers={identifier})) else []
        for device in devices:
            registry.async_update_device(device.id, sw_version=version)

    def device_info(self) -> DeviceInfo:
        """The server's device: a service of this entry, linking to the server's page.

        The add-on's host name is the Supervisor's internal one, which the user's browser
        cannot reach: its device links to the add-on's panel in Home Assistant instead.
        """
        entry = self.config_entry
        add_on = entry.data.get(CONF_LINK) == LINK_SUPERVISOR
        slug = entry.data.get(CONF_ADDON_SLUG)
        url = f"homeassistant://hassio/ingress/{slug}" if add_on and slug else str(server_url(self.host, self.port))
        # No sw_version: the status brings it (_update_sw_version), until then the registry keeps its own.
        return DeviceInfo(
            identifiers={server_identifier(entry)},
            name="Thermo Bridge server",
            manufacturer="Thermo Bridge",
            model="add-on" if add_on else "server",
            configuration_url=url,
            entry_type=DeviceEntryType.SERVICE,
        )


class ServerEntity(CoordinatorEntity[ServerCoordinator]):
    """A diagnostic entity of the server's device; ``key`` names the status figure."""

    _attr_has_entity_name = True

    def __init__(self, coordinator: ServerCoordinator, key: str) -> None:
        super().__init__(coordinator)
        self._key = key
        self._attr_unique_id = f"server:{coordinator.config_entry.unique_id}:{key}"
        self._attr_device_info = coordinator.device_info()

    @property
    def available(self) -> bool:
        """The last poll got a status (none yet right after setup: unavailable, not a guess)."""
        return super().available and self.coordinator.data is not None
