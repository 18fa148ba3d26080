"""Config flow: one entry per base topic, from the user, MQTT discovery, the add-on or zeroconf.

The unique id is the base topic. An entry may also know the Thermo Bridge server (add-on) that
serves that base topic: from the Supervisor's discovery (host, port, API path and the server's
internal token) or from its zeroconf advertisement (host, port, API path; the LAN never sees the
token, so the user may paste it from the server's token file). A rediscovery with another address
updates the entry; a refused token starts a reauthentication.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import probatio as vol
else:
    try:  # HA >= 2026.x validates with probatio (voluptuous' successor, same API)
        import probatio as vol
    except ImportError:  # pragma: no cover - older HA
        import voluptuous as vol
from homeassistant.components.mqtt import valid_subscribe_topic
from homeassistant.config_entries import ConfigEntry, ConfigFlow, ConfigFlowResult, OptionsFlow
from homeassistant.const import CONF_HOST, CONF_PORT, CONF_TOKEN
from homeassistant.core import callback
from homeassistant.helpers import selector
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from yarl import URL

from .const import (
    CONF_ADDON_SLUG,
    CONF_API_PATH,
    CONF_BASE_TOPIC,
    CONF_COMMAND_TIMEOUT,
    CONF_LINK,
    CONF_OPTIMISTIC,
    DEFAULT_COMMAND_TIMEOUT,
    DOMAIN,
    LINK_NETWORK,
    LINK_SUPERVISOR,
    MAX_COMMAND_TIMEOUT,
    MIN_COMMAND_TIMEOUT,
)
from .protocol import (
    DEFAULT_BASE_TOPIC,
    MessageKind,
    ProtocolError,
    Reason,
    parse_config,
    validate_base_topic,
    wildcard_topic,
)
from .server import ServerAuthError, ServerUnreachableError, async_fetch_status

MQTT_DOMAIN = "mqtt"
API_PATH_RE = re.compile(r"(/[A-Za-z0-9._~-]+)+/?")


def _validated_base_topic(value: str) -> str | None:
    """The normalised base topic, or None when it is not a usable MQTT topic prefix."""
    try:
        base = validate_base_topic(value)
        valid_subscribe_topic(wildcard_topic(base, MessageKind.CONFIG))
    except (ProtocolError, vol.Invalid):
        return None
    return base


def _server_address(host: object, port: object, api_path: object) -> dict[str, Any] | None:
    """Host, port and API path of a server as the entry stores them, or None when unusable."""
    if not isinstance(host, str) or not isinstance(api_path, str) or not API_PATH_RE.fullmatch(api_path):
        return None
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        return None
    try:
        url = URL.build(scheme="http", host=host, port=port, path=api_path)
    except (TypeError, ValueError):
        return None
    if not host or url.host is None or url.user is not None:
        return None
    return {CONF_HOST: host, CONF_PORT: port, CONF_API_PATH: api_path.rstrip("/")}


TOKEN_SELECTOR = selector.TextSelector(selector.TextSelectorConfig(type=selector.TextSelectorType.PASSWORD))


def _address(data: Mapping[str, Any]) -> str:
    """``host:port`` of the entry's server, or ``-`` when it has none."""
    return f"{data[CONF_HOST]}:{data[CONF_PORT]}" if data.get(CONF_HOST) else "-"


def _title(base_topic: str) -> str:
    return "Thermo Bridge" if base_topic == DEFAULT_BASE_TOPIC else f"Thermo Bridge ({base_topic})"


class ThermoBridgeConfigFlow(ConfigFlow, domain=DOMAIN):
    """Set up a base topic."""

    VERSION = 1

    def __init__(self) -> None:
        self._base_topic = DEFAULT_BASE_TOPIC
        self._server: dict[str, Any] = {}
        """What the entry will store about the discovered server (address, token, how it was found)."""

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> ThermoBridgeOptionsFlow:
        """The options flow."""
        return ThermoBridgeOptionsFlow()

    def _mqtt_missing(self) -> bool:
        return not self.hass.config_entries.async_entries(MQTT_DOMAIN)

    def _schema(self, default: str) -> vol.Schema:
        return vol.Schema({vol.Required(CONF_BASE_TOPIC, default=default): selector.TextSelector()})

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the base topic."""
        if self._mqtt_missing():
            return self.async_abort(reason="mqtt_not_configured")
        errors: dict[str, str] = {}
        if user_input is not None:
            base = _validated_base_topic(user_input[CONF_BASE_TOPIC])
            if base is None:
                errors[CONF_BASE_TOPIC] = "invalid_topic"
            else:
                await self.async_set_unique_id(base)
                self._abort_if_unique_id_configured()
                self._base_topic = base
                return self._create_entry()
        return self.async_show_form(
            step_id="user",
            data_schema=self._schema(user_input[CONF_BASE_TOPIC] if user_input else DEFAULT_BASE_TOPIC),
            errors=errors,
        )

    async def async_step_mqtt(self, discovery_info: MqttServiceInfo) -> ConfigFlowResult:
        """A device announced itself under the default base topic (the manifest's mqtt filter)."""
        suffix = "/+/" + MessageKind.CONFIG.value
        payload = discovery_info.payload
        if not payload or not discovery_info.subscribed_topic.endswith(suffix):
            return self.async_abort(reason="invalid_discovery_info")
        base = _validated_base_topic(discovery_info.subscribed_topic.removesuffix(suffix))
        if base is None:
            return self.async_abort(reason="invalid_discovery_info")
        try:
            parse_config(payload.encode() if isinstance(payload, str) else bytes(payload))
        except ProtocolError as err:
            # A newer schema is still one of ours: set up, and the repair issue explains it.
            if err.reason is not Reason.UNSUPPORTED_SCHEMA:
                return self.async_abort(reason="invalid_discovery_info")
        return await self._async_discovered(base)

    async def async_step_zeroconf(self, discovery_info: ZeroconfServiceInfo) -> ConfigFlowResult:
        """A Thermo Bridge server advertised itself on the LAN: its base topic and address."""
        raw = discovery_info.properties.get(CONF_BASE_TOPIC)
        base = _validated_base_topic(raw) if isinstance(raw, str) else None
        address = _server_address(
            discovery_info.host, discovery_info.port, discovery_info.properties.get(CONF_API_PATH, "/api/v1")
        )
        if base is None or address is None:
            return self.async_abort(reason="invalid_discovery_info")
        await self.async_set_unique_id(base)
        existing = self.hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, base)
        if existing is not None and existing.data.get(CONF_LINK) == LINK_SUPERVISOR:
            # The Supervisor's discovery reaches the add-on on its own network: keep that address.
            self._abort_if_unique_id_configured()
        updates: dict[str, Any] = {**address, CONF_LINK: LINK_NETWORK}
        if existing is not None and existing.data.get(CONF_TOKEN):
            known = (existing.data.get(CONF_HOST), existing.data.get(CONF_PORT))
            if known != (address[CONF_HOST], address[CONF_PORT]):
                # Anyone on the LAN can announce this base topic: the token the user pasted for
                # one address is never sent to another. Reconfigure takes it again.
                updates[CONF_TOKEN] = ""
        self._abort_if_unique_id_configured(updates=updates)
        if self._mqtt_missing():
            return self.async_abort(reason="mqtt_not_configured")
        self._server = {**address, CONF_LINK: LINK_NETWORK}
        self._base_topic = base
        self.context["title_placeholders"] = {CONF_BASE_TOPIC: base}
        return await self.async_step_zeroconf_confirm()

    async def async_step_zeroconf_confirm(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Confirm a server found on the LAN; its internal token (optional) shows the server's status."""
        errors: dict[str, str] = {}
        if user_input is not None:
            token = user_input.get(CONF_TOKEN, "").strip()
            if not token:
                return self._create_entry()
            error = await self._async_check_server(self._server, token, self._base_topic)
            if error is None:
                self._server[CONF_TOKEN] = token
                return self._create_entry()
            errors[CONF_TOKEN] = error
        return self.async_show_form(
            step_id="zeroconf_confirm",
            data_schema=vol.Schema({vol.Optional(CONF_TOKEN): TOKEN_SELECTOR}),
            description_placeholders={
                CONF_BASE_TOPIC: self._base_topic,
                "address": f"{self._server[CONF_HOST]}:{self._server[CONF_PORT]}",
            },
            errors=errors,
        )

    async def _async_check_server(self, server: Mapping[str, Any], token: str, base: str) -> str | None:
        """Why the server does not take ``token`` for ``base``, as an error key, or None."""
        try:
            status = await async_fetch_status(self.hass, server[CONF_HOST], server[CONF_PORT], token)
        except ServerAuthError:
            return "invalid_token"
        except ServerUnreachableError:
            return "cannot_connect"
        if status.base_topic != base:
            return "other_base_topic"
        return None

    async def async_step_hassio(self, discovery_info: HassioServiceInfo) -> ConfigFlowResult:
        """The Thermo Bridge add-on announced itself through the Supervisor: offer to link it."""
        config = discovery_info.config
        raw, token = config.get(CONF_BASE_TOPIC), config.get(CONF_TOKEN)
        base = _validated_base_topic(raw) if isinstance(raw, str) else None
        address = _server_address(config.get(CONF_HOST), config.get(CONF_PORT), config.get(CONF_API_PATH))
        if base is None or address is None or not isinstance(token, str) or not token:
            return self.async_abort(reason="invalid_discovery_info")
        self._server = {**address, CONF_TOKEN: token, CONF_LINK: LINK_SUPERVISOR, CONF_ADDON_SLUG: discovery_info.slug}
        await self.async_set_unique_id(base)
        self._abort_if_unique_id_configured(updates=self._server)
        if self._mqtt_missing():
            return self.async_abort(reason="mqtt_not_configured")
        self._base_topic = base
        self.context["title_placeholders"] = {CONF_BASE_TOPIC: base}
        return await self.async_step_hassio_confirm()

    async def async_step_hassio_confirm(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Confirm linking the add-on (and adding its base topic's devices)."""
        if user_input is not None:
            return self._create_entry()
        self._set_confirm_only()
        return self.async_show_form(
            step_id="hassio_confirm", description_placeholders={CONF_BASE_TOPIC: self._base_topic}
        )

    async def _async_discovered(self, base: str) -> ConfigFlowResult:
        """Confirm a base topic found by MQTT discovery (which HA's MQTT integration made)."""
        await self.async_set_unique_id(base)
        self._abort_if_unique_id_configured()
        self._base_topic = base
        self.context["title_placeholders"] = {CONF_BASE_TOPIC: base}
        return await self.async_step_discovery_confirm()

    async def async_step_discovery_confirm(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Confirm a discovered base topic."""
        if user_input is not None:
            return self._create_entry()
        self._set_confirm_only()
        return self.async_show_form(
            step_id="discovery_confirm", description_placeholders={CONF_BASE_TOPIC: self._base_topic}
        )

    def _create_entry(self) -> ConfigFlowResult:
        return self.async_create_entry(
            title=_title(self._base_topic), data={CONF_BASE_TOPIC: self._base_topic, **self._server}
        )

    async def async_step_reconfigure(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Check the base topic (the unique id: another one is another entry); take a server's token.

        The token field is there once the entry knows a server (from discovery): pasting the
        internal token shows the server's status; left empty, the token stays as it is.
        """
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            base = _validated_base_topic(user_input[CONF_BASE_TOPIC])
            token = user_input.get(CONF_TOKEN, "").strip()
            if base is None:
                errors[CONF_BASE_TOPIC] = "invalid_topic"
            else:
                await self.async_set_unique_id(base)
                self._abort_if_unique_id_mismatch(
                    description_placeholders={CONF_BASE_TOPIC: entry.data[CONF_BASE_TOPIC]}
                )
                updates: dict[str, Any] = {CONF_BASE_TOPIC: base}
                if token and (error := await self._async_check_server(entry.data, token, base)) is not None:
                    errors[CONF_TOKEN] = error
                else:
                    if token:
                        updates[CONF_TOKEN] = token
                    return self.async_update_reload_and_abort(entry, data_updates=updates)
        schema = self._schema(user_input[CONF_BASE_TOPIC] if user_input else entry.data[CONF_BASE_TOPIC])
        if entry.data.get(CONF_HOST):
            schema = schema.extend({vol.Optional(CONF_TOKEN): TOKEN_SELECTOR})
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=schema,
            description_placeholders={"address": _address(entry.data)},
            errors=errors,
        )

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """The linked server refused the entry's internal token (it was recreated)."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the server's current internal token."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            token = user_input[CONF_TOKEN].strip()
            error = await self._async_check_server(entry.data, token, entry.data[CONF_BASE_TOPIC])
            if error is None:
                return self.async_update_reload_and_abort(entry, data_updates={CONF_TOKEN: token})
            errors[CONF_TOKEN] = error
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=vol.Schema({vol.Required(CONF_TOKEN): TOKEN_SELECTOR}),
            description_placeholders={"address": _address(entry.data)},
            errors=errors,
        )


class ThermoBridgeOptionsFlow(OptionsFlow):
    """How commands are shown while the device has not confirmed them."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Command timeout and optimistic mode; read live, no reload needed."""
        if user_input is not None:
            return self.async_create_entry(
                data={
                    CONF_COMMAND_TIMEOUT: int(user_input[CONF_COMMAND_TIMEOUT]),
                    CONF_OPTIMISTIC: user_input[CONF_OPTIMISTIC],
                }
            )
        options = self.config_entry.options
        schema = vol.Schema(
            {
                vol.Required(
                    CONF_COMMAND_TIMEOUT, default=options.get(CONF_COMMAND_TIMEOUT, DEFAULT_COMMAND_TIMEOUT)
                ): selector.NumberSelector(
                    selector.NumberSelectorConfig(
                        min=MIN_COMMAND_TIMEOUT,
                        max=MAX_COMMAND_TIMEOUT,
                        step=1,
                        unit_of_measurement="s",
                        mode=selector.NumberSelectorMode.BOX,
                    )
                ),
                vol.Required(CONF_OPTIMISTIC, default=options.get(CONF_OPTIMISTIC, False)): selector.BooleanSelector(),
            }
        )
        return self.async_show_form(step_id="init", data_schema=schema)
