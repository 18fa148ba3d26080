"""The integration's runtime: the protocol router wired to HA's MQTT, driving per-device state.

``Bridge`` is the ``ProtocolHandler`` of one config entry (one base topic). It turns the
router's callbacks into device registry updates, dispatcher signals (new or changed
devices, picked up by the platforms), per-device state and listener calls (``device.py``,
read by the entities), bus events, repair issues and diagnostics counters. Entities never
touch MQTT.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from homeassistant.components import mqtt
from homeassistant.components.mqtt.models import ReceiveMessage
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import Platform
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.event import async_call_later
from homeassistant.util import dt as dt_util

from .capabilities import device_info, entity_keys, unique_id
from .const import (
    CONF_BASE_TOPIC,
    CONF_COMMAND_TIMEOUT,
    CONF_OPTIMISTIC,
    DEFAULT_COMMAND_TIMEOUT,
    DOMAIN,
    EVENT_THERMO_BRIDGE,
    EVENT_THERMO_BRIDGE_COMMAND,
    SERVICE_ACK_WAIT,
    signal_new_device,
)
from .device import DeviceData, PendingCommand
from .protocol import (
    DEVICE_KINDS,
    SCHEMA_VERSION,
    Ack,
    AckStatus,
    CommandReport,
    DeviceConfig,
    DeviceEvent,
    DeviceRouter,
    MessageKind,
    ProtocolError,
    ProtocolHandler,
    Reason,
    StateUpdate,
    StateValue,
    Unsubscribe,
    decode_object,
)
from .server import ServerCoordinator

_LOGGER = logging.getLogger(__package__)

type ThermoBridgeConfigEntry = ConfigEntry[Bridge]

PAYLOAD_SNIPPET = 512
"""How much of a payload diagnostics keep (payloads can be hostile and large)."""
MAX_UNKNOWN_SOURCES = 100
"""Unknown senders (device ids or topics) counted and logged by name; whoever publishes picks
these names, so beyond this many the rest share ``OTHER_SOURCES`` and memory stays bounded."""
OTHER_SOURCES = "(other sources)"

# ServiceValidationError translation keys per protocol rejection reason.
_COMMAND_ERROR_KEYS: Mapping[Reason, str] = {
    Reason.OUT_OF_RANGE: "value_out_of_range",
    Reason.NOT_SUPPORTED: "not_supported",
    Reason.INVALID_VALUE: "invalid_value",
    Reason.UNKNOWN_DEVICE: "unknown_device",
}


def _same(a: StateValue, b: float | str) -> bool:
    if isinstance(a, float | int) and not isinstance(a, bool) and isinstance(b, float | int):
        return math.isclose(a, b, rel_tol=0, abs_tol=1e-6)
    return a == b


def _devices_with_identifier(registry: dr.DeviceRegistry, identifier: tuple[str, str]) -> list[dr.DeviceEntry]:
    """Devices carrying ``identifier`` in any config entry (the lookup API changed in HA 2026)."""
    if hasattr(registry, "async_get_devices"):  # identifiers are unique per config entry since then
        return registry.async_get_devices(identifiers={identifier})
    device = registry.async_get_device(identifiers={identifier})  # pragma: no cover - HA < 2026
    return [device] if device is not None else []  # pragma: no cover - HA < 2026


def _entry_ids(device: dr.DeviceEntry) -> set[str]:
    """A device's config entries without HA 2026's deprecated ``config_entries`` property.

    Reading that property logs a deprecation and walks the call stack every time: it was
    about a quarter of our CPU during an HA restart with 1,000 devices (bench/ha_discovery.py).
    """
    entry_id: str | None = getattr(device, "config_entry_id", None)
    if entry_id is not None:
        return {entry_id}
    return set(device.config_entries)  # pragma: no cover - HA < 2026


def _snippet(payload: bytes) -> str:
    text = payload[:PAYLOAD_SNIPPET].decode("utf-8", "replace")
    return text + ("…" if len(payload) > PAYLOAD_SNIPPET else "")


class Bridge(ProtocolHandler):
    """One base topic's devices, as Home Assistant sees them."""

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry) -> None:
        self.hass = hass
        self.entry = entry
        self.router = DeviceRouter(
            entry.data[CONF_BASE_TOPIC],
            self._async_subscribe,
            self._async_publish,
            self,
            kinds=(*DEVICE_KINDS, MessageKind.COMMAND),
        )
        self.devices: dict[str, DeviceData] = {}
        self.entity_unique_ids: set[str] = set()
        """Unique ids this entry created entities for (disabled ones too, which HA never adds),
        so a re-sent config creates no duplicates; removal and dropped capabilities take them out."""
        self.mqtt_connected = True
        self.rejected_total = 0
        self.rejected_by_reason: Counter[str] = Counter()
        self.rejected_unknown: Counter[str] = Counter()
        """Rejections that name no device (topics under the base that are not ours)."""
        self._logged_rejections: set[tuple[str, MessageKind]] = set()
        self._foreign: set[str] = set()
        self._unsubscribes: list[CALLBACK_TYPE] = []
        self.server: ServerCoordinator | None = None
        """The linked server's status poller; None unless the entry knows the server and its token."""

    @property
    def base_topic(self) -> str:
        """The base topic this bridge listens to."""
        return self.router.base_topic

    @property
    def command_timeout(self) -> float:
        """Seconds a requested value is shown before the reported state wins again."""
        return float(self.entry.options.get(CONF_COMMAND_TIMEOUT, DEFAULT_COMMAND_TIMEOUT))

    @property
    def optimistic(self) -> bool:
        """Whether an unconfirmed command's values are kept when the timeout passes."""
        return bool(self.entry.options.get(CONF_OPTIMISTIC, False))

    # ------------------------------------------------------------------ lifecycle

    async def async_start(self) -> None:
        """Follow MQTT's connection state and subscribe to the base topic."""
        self.mqtt_connected = mqtt.is_connected(self.hass)
        self._unsubscribes.append(mqtt.async_subscribe_connection_status(self.hass, self._async_mqtt_connection))
        await self.router.async_start()

    @callback
    def async_stop(self) -> None:
        """Drop every subscription, timer and listener; fail commands still waiting."""
        self.router.stop()
        while self._unsubscribes:
            self._unsubscribes.pop()()
        for device in self.devices.values():
            self._drop_device_timers(device)
        self.devices.clear()

    def _drop_device_timers(self, device: DeviceData) -> None:
        if device.cancel_expire is not None:
            device.cancel_expire()
            device.cancel_expire = None
        for pending in device.pending.values():
            pending.cancel_timers()
            if not pending.waiter.done():
                pending.waiter.set_result(None)
        device.pending.clear()
        device.overlay = {}

    async def _async_subscribe(self, topic: str, qos: int, handle: Callable[[str, bytes], None]) -> Unsubscribe:
        @callback
        def message_received(msg: ReceiveMessage) -> None:
            payload = msg.payload
            handle(msg.topic, payload.encode() if isinstance(payload, str) else bytes(payload))

        return await mqtt.async_subscribe(self.hass, topic, message_received, qos, encoding=None)

    async def _async_publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        await mqtt.async_publish(self.hass, topic, payload, qos, retain, encoding=None)

    @callback
    def _async_mqtt_connection(self, connected: bool) -> None:
        if connected == self.mqtt_connected:
            return
        self.mqtt_connected = connected
        if connected:
            _LOGGER.info(
                "MQTT connection is back: %s devices under %s available again", len(self.devices), self.base_topic
            )
        else:
            _LOGGER.info("MQTT connection lost: the devices under %s are unavailable", self.base_topic)
        for device in self.devices.values():
            device.notify()

    def is_available(self, device: DeviceData) -> bool:
        """Whether the device's entities are available."""
        return self.mqtt_connected and device.available

    # ------------------------------------------------------------------ protocol callbacks

    def on_config(self, device_id: str, config: DeviceConfig, previous: DeviceConfig | None) -> None:
        """Register a new device, or update a known one in place."""
        ir.async_delete_issue(self.hass, DOMAIN, f"unsupported_schema_{device_id}")
        if self._owned_elsewhere(device_id):
            return
        device = self.devices.get(device_id)
        if device is None:
            device = self.devices[device_id] = DeviceData(config)
            _LOGGER.debug("Discovered %s device %s (%s)", config.kind, device_id, config.name)
        else:
            device.config = config
            _LOGGER.debug("Device %s announced a changed config", device_id)
        self._update_registry(device)
        self._reset_expiry(device)
        if previous is not None:
            self._remove_dropped_entities(device_id, entity_keys(previous) - entity_keys(config))
            device.notify()
        async_dispatcher_send(self.hass, signal_new_device(self.entry.entry_id), device)

    def _owned_elsewhere(self, device_id: str) -> bool:
        """Whether another config entry (another base topic) already has this device id."""
        others = [
            device
            for device in _devices_with_identifier(dr.async_get(self.hass), (DOMAIN, device_id))
            if self.entry.entry_id not in _entry_ids(device)
        ]
        if not others:
            return False
        if device_id not in self._foreign:
            self._foreign.add(device_id)
            _LOGGER.warning(
                "Ignoring device %s under %s: a device with that id already belongs to another thermo_bridge entry",
                device_id,
                self.base_topic,
            )
        return True

    def _update_registry(self, device: DeviceData) -> None:
        entry = dr.async_get(self.hass).async_get_or_create(
            config_entry_id=self.entry.entry_id, **device_info(device.config)
        )
        device.ha_device_id = entry.id

    def _remove_dropped_entities(self, device_id: str, dropped: set[tuple[Platform, str]]) -> None:
        """Remove the entities of capabilities a changed config no longer declares.

        Done here rather than by the entities: disabled entities are not loaded and would stay.
        """
        registry = er.async_get(self.hass)
        for platform, key in dropped:
            uid = unique_id(device_id, key)
            self.entity_unique_ids.discard(uid)
            if (entity_id := registry.async_get_entity_id(platform, DOMAIN, uid)) is not None:
                registry.async_remove(entity_id)

    def on_removed(self, device_id: str, previous: DeviceConfig) -> None:
        """An empty retained config: remove the device and its entities."""
        ir.async_delete_issue(self.hass, DOMAIN, f"unsupported_schema_{device_id}")
        device = self.devices.pop(device_id, None)
        if device is None:
            return
        self._drop_device_timers(device)
        _LOGGER.info("Device %s (%s) was removed: its retained config was cleared", device_id, previous.name)
        registry = dr.async_get(self.hass)
        if device.ha_device_id is not None and registry.async_get(device.ha_device_id) is not None:
            registry.async_remove_device(device.ha_device_id)

    def on_state(self, device_id: str, update: StateUpdate) -> None:
        """Merge a partial state report; it confirms pending values it matches."""
        device = self.devices.get(device_id)
        if device is None:
            return
        device.values.update(update.values)
        device.last_seen = dt_util.utcnow().timestamp()
        device.last_messages[MessageKind.STATE] = update
        if device.pending:
            self._confirm_from_state(device, update.values)
        if device.expired:
            self._unexpire(device)
            self._update_available(device)
            device.notify()
            return
        device.notify(frozenset(update.values))

    def _confirm_from_state(self, device: DeviceData, values: Mapping[str, StateValue]) -> None:
        for command_id, pending in list(device.pending.items()):
            for key in [k for k, v in pending.values.items() if k in values and _same(values[k], v)]:
                del pending.values[key]
            if not pending.values:
                self._finish(device, command_id)
        device.rebuild_overlay()

    def on_availability(self, device_id: str, online: bool) -> None:
        """The device's retained availability (its last will says offline)."""
        device = self.devices.get(device_id)
        if device is None:
            return
        device.online = online
        if online:
            device.last_seen = dt_util.utcnow().timestamp()
            if device.expired:
                self._unexpire(device)
        if self._update_available(device):
            device.notify()

    def _update_available(self, device: DeviceData) -> bool:
        """Derive ``available`` from ``online`` and ``expired``; True (and logged) if it changed."""
        available = device.online is not False and not device.expired
        if available == device.available:
            return False
        device.available = available
        if available:
            _LOGGER.info("Device %s (%s) is available again", device.device_id, device.config.name)
        else:
            why = "it reported offline" if device.online is False else "no data within expire_after"
            _LOGGER.info("Device %s (%s) is unavailable: %s", device.device_id, device.config.name, why)
        return True

    def _reset_expiry(self, device: DeviceData) -> None:
        """(Re)arm the expire_after check; it re-arms itself for as long as data keeps coming."""
        if device.cancel_expire is not None:
            device.cancel_expire()
            device.cancel_expire = None
        expire_after = device.config.expire_after
        if expire_after is None:
            if device.expired:
                device.expired = False
                self._update_available(device)
            return
        if device.last_seen is None:
            device.last_seen = dt_util.utcnow().timestamp()

        @callback
        def check(_now: datetime) -> None:
            device.cancel_expire = None
            remaining = (device.last_seen or 0.0) + expire_after - dt_util.utcnow().timestamp()
            if remaining > 0:
                device.cancel_expire = async_call_later(self.hass, remaining, check)
                return
            device.expired = True
            if self._update_available(device):
                device.notify()
            # No timer while expired: the data that clears the flag re-arms it (_unexpire).

        device.cancel_expire = async_call_later(self.hass, expire_after, check)

    def _unexpire(self, device: DeviceData) -> None:
        """Fresh data from an expired device: clear the flag and watch for the next silence."""
        device.expired = False
        self._reset_expiry(device)

    def on_ack(self, device_id: str, ack: Ack) -> None:
        """The device answered one of our commands (acks of other senders are ignored)."""
        device = self.devices.get(device_id)
        if device is not None:
            device.last_messages[MessageKind.ACK] = ack
        if device is None or (pending := device.pending.get(ack.command_id)) is None:
            _LOGGER.debug("Ack %s from %s is for a command this entry did not send", ack.command_id, device_id)
            return
        if ack.status is AckStatus.OK:
            device.values.update(pending.values)
            changed = frozenset(pending.values)
            self._finish(device, ack.command_id)
            device.rebuild_overlay()
            device.notify(changed)
            return
        changed = frozenset(pending.values) | frozenset(pending.command.values)
        error = HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="command_rejected",
            translation_placeholders={"device": device.config.name, "reason": ack.reason or ""},
        )
        self._finish(device, ack.command_id, error)
        device.rebuild_overlay()
        device.notify(changed)

    def _finish(self, device: DeviceData, command_id: str, error: HomeAssistantError | None = None) -> None:
        pending = device.pending.pop(command_id)
        pending.cancel_timers()
        if pending.waiter.done():
            if error is not None:
                _LOGGER.warning("%s refused a command after the service call returned: %s", device.device_id, error)
            return
        if error is None:
            pending.waiter.set_result(None)
        else:
            pending.waiter.set_exception(error)

    def on_event(self, device_id: str, event: DeviceEvent) -> None:
        """Fire ``thermo_bridge_event`` and feed the device's event entity."""
        device = self.devices.get(device_id)
        if device is None:
            return
        device.last_messages[MessageKind.EVENT] = event
        self.hass.bus.async_fire(
            EVENT_THERMO_BRIDGE,
            {
                "device_id": device.ha_device_id,
                "bridge_device_id": device_id,
                "name": device.config.name,
                "event_type": event.event_type,
                "data": dict(event.data),
            },
        )
        for listener in list(device.event_listeners):
            listener(event)

    def on_command_report(self, device_id: str, report: CommandReport) -> None:
        """A command sent through the add-on server reached its outcome: fire ``thermo_bridge_command``."""
        device = self.devices.get(device_id)
        if device is None:
            return
        device.last_messages[MessageKind.COMMAND] = report
        self.hass.bus.async_fire(
            EVENT_THERMO_BRIDGE_COMMAND,
            {
                "device_id": device.ha_device_id,
                "bridge_device_id": device_id,
                "command_id": report.command_id,
                "values": dict(report.values),
                "user": report.user,
                "status": str(report.status),
                "reason": report.reason,
            },
        )

    def on_rejected(
        self, device_id: str | None, kind: MessageKind | None, error: ProtocolError, topic: str, payload: bytes
    ) -> None:
        """Count and log (once per device and kind) a message the protocol refused."""
        self.rejected_total += 1
        self.rejected_by_reason[error.reason] += 1
        device = self.devices.get(device_id) if device_id is not None else None
        if device is not None and kind is not None:
            device.rejected[error.reason] += 1
            device.last_messages[f"rejected_{kind}"] = _snippet(payload)
            first = (device.device_id, kind) not in self._logged_rejections
            self._logged_rejections.add((device.device_id, kind))
        else:
            first = self._count_unknown(device_id or topic[:120])
        if first:
            _LOGGER.warning(
                "Ignoring a %s message from %s on %s (%s): %s; further ones are counted in diagnostics",
                kind or "malformed",
                device_id or "an unknown device",
                topic[:120],
                error.reason,
                error,
            )
        # Issues are persisted: only for senders counted by name, so a flood stays bounded.
        named = device is not None or device_id in self.rejected_unknown
        if error.reason is Reason.UNSUPPORTED_SCHEMA and device_id is not None and named:
            self._raise_schema_issue(device_id, payload)

    def _count_unknown(self, source: str) -> bool:
        """Count a rejection that names no device of ours; True the first time ``source`` is seen."""
        counts = self.rejected_unknown
        if source in counts:
            counts[source] += 1
            return False
        if len(counts) < MAX_UNKNOWN_SOURCES:
            counts[source] = 1
            return True
        if OTHER_SOURCES not in counts:
            _LOGGER.warning(
                "More than %s unknown senders under %s: further ones are only counted in diagnostics",
                MAX_UNKNOWN_SOURCES,
                self.base_topic,
            )
        counts[OTHER_SOURCES] += 1
        return False

    def _raise_schema_issue(self, device_id: str, payload: bytes) -> None:
        try:
            schema = str(decode_object(payload).get("schema"))
        except ProtocolError:  # pragma: no cover - the router only reports this reason for parsed JSON
            schema = "?"
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            f"unsupported_schema_{device_id}",
            is_fixable=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key="unsupported_schema",
            translation_placeholders={
                "device_id": device_id,
                "schema": schema,
                "supported": str(SCHEMA_VERSION),
                "base_topic": self.base_topic,
            },
        )

    # ------------------------------------------------------------------ commands

    async def async_send_command(self, device: DeviceData, values: Mapping[str, Any]) -> None:
        """Validate, publish, show the requested values, and wait (bounded) for the ack.

        Validation errors raise ``ServiceValidationError`` before anything is sent. The call
        returns on an ok ack or confirming state, raises on an error ack, and otherwise
        returns after at most ``SERVICE_ACK_WAIT`` seconds (or the command timeout if it is
        shorter) while the requested values stay shown until the command timeout.
        """
        try:
            command = self.router.build_command(device.device_id, values)
        except ProtocolError as err:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key=_COMMAND_ERROR_KEYS.get(err.reason, "invalid_command"),
                translation_placeholders={
                    "device": device.config.name,
                    "field": err.path or "command",
                    "error": err.message,
                },
            ) from err
        if not self.is_available(device):
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="device_unavailable",
                translation_placeholders={"device": device.config.name},
            )
        pending = PendingCommand(command, dict(command.values), self.hass.loop.create_future())
        timeout = self.command_timeout

        @callback
        def timed_out(_now: datetime) -> None:
            self._command_timed_out(device, command.command_id)

        @callback
        def stop_waiting(_now: datetime) -> None:
            pending.cancel_wait = None
            if not pending.waiter.done():
                pending.waiter.set_result(None)

        # Timers are armed before publishing: a fast device may ack before publish returns.
        pending.cancel_timeout = async_call_later(self.hass, timeout, timed_out)
        if self.optimistic:
            pending.waiter.set_result(None)
        else:
            pending.cancel_wait = async_call_later(self.hass, min(SERVICE_ACK_WAIT, timeout), stop_waiting)
        device.pending[command.command_id] = pending
        device.rebuild_overlay()
        changed = frozenset(command.values)
        device.notify(changed)
        try:
            await self.router.async_send_command(device.device_id, command)
        except HomeAssistantError as err:
            if device.pending.pop(command.command_id, None) is not None:
                pending.cancel_timers()
                device.rebuild_overlay()
                device.notify(changed)
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="publish_failed",
                translation_placeholders={"device": device.config.name, "error": str(err)},
            ) from err
        await pending.waiter

    @callback
    def _command_timed_out(self, device: DeviceData, command_id: str) -> None:
        pending = device.pending.get(command_id)
        if pending is None or self.devices.get(device.device_id) is not device:
            return
        pending.cancel_timeout = None
        changed = frozenset(pending.values)
        if self.optimistic:
            device.values.update(pending.values)
        else:
            _LOGGER.warning(
                "Device %s did not confirm %s within %s s; showing its reported state again",
                device.device_id,
                pending.command.values,
                self.command_timeout,
            )
        self._finish(device, command_id)
        device.rebuild_overlay()
        device.notify(changed)

    # ------------------------------------------------------------------ removal

    async def async_remove_device(self, device_id: str) -> None:
        """Clear the device's retained config so it is not rediscovered."""
        await self.router.async_clear_config(device_id)
