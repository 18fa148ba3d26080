"""The protocol's client side, independent of any MQTT library.

Like Home Assistant's tasmota/hatasmota split: the consumer injects its MQTT transport as
two callables (``subscribe`` and ``publish``) and a ``ProtocolHandler``; the router owns the
topic layout, keeps the known device configs (state, command and event payloads are
validated against them), and turns every payload into exactly one typed callback, either
the parsed model or ``on_rejected`` with the reason. The integration injects HA's mqtt,
the add-on server injects paho.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from .codec import (
    encode_command,
    encode_command_report,
    parse_ack,
    parse_availability,
    parse_command_report,
    parse_config,
    parse_event,
    parse_state,
    validate_command,
)
from .errors import ProtocolError, Reason
from .models import Ack, Command, CommandReport, DeviceConfig, DeviceEvent, MessageKind, StateUpdate
from .topics import device_topic, split_topic, validate_base_topic, validate_device_id, wildcard_topic

_LOGGER = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes], None]
"""Called by the transport with (topic, payload) for every message on a subscription."""
Unsubscribe = Callable[[], None]
SubscribeFn = Callable[[str, int, MessageCallback], Awaitable[Unsubscribe]]
"""(topic filter, qos, callback) -> unsubscribe."""
PublishFn = Callable[[str, bytes, int, bool], Awaitable[None]]
"""(topic, payload, qos, retain)."""

COMMAND_QOS = 1
SUBSCRIBE_QOS = 1
DEVICE_KINDS: tuple[MessageKind, ...] = (
    MessageKind.CONFIG,
    MessageKind.AVAILABILITY,
    MessageKind.STATE,
    MessageKind.ACK,
    MessageKind.EVENT,
)
"""What devices publish, configs first (retained configs then arrive before the state that
refers to them): what a router subscribes to unless its consumer asks for other kinds."""
_SUBSCRIPTION_ORDER = (*DEVICE_KINDS, MessageKind.COMMAND)


class ProtocolHandler:
    """What a consumer does with the traffic; override the callbacks you need.

    Every callback runs in the transport's message callback, so it must not block.
    """

    def on_config(self, device_id: str, config: DeviceConfig, previous: DeviceConfig | None) -> None:
        """A device was discovered (``previous`` is None) or announced a changed config."""

    def on_removed(self, device_id: str, previous: DeviceConfig) -> None:
        """A known device's retained config was cleared."""

    def on_state(self, device_id: str, update: StateUpdate) -> None:
        """A valid partial state report."""

    def on_availability(self, device_id: str, online: bool) -> None:
        """The device's retained availability (its last will says offline)."""

    def on_ack(self, device_id: str, ack: Ack) -> None:
        """The device answered a command."""

    def on_event(self, device_id: str, event: DeviceEvent) -> None:
        """A momentary device event."""

    def on_command_report(self, device_id: str, report: CommandReport) -> None:
        """The server announced the outcome of a command it sent (only with ``MessageKind.COMMAND`` subscribed)."""

    def on_rejected(
        self, device_id: str | None, kind: MessageKind | None, error: ProtocolError, topic: str, payload: bytes
    ) -> None:
        """A message that does not follow the protocol; nothing was changed."""


class DeviceRouter:
    """Subscribes to one base topic and dispatches its traffic to a ``ProtocolHandler``."""

    def __init__(
        self,
        base_topic: str,
        subscribe: SubscribeFn,
        publish: PublishFn,
        handler: ProtocolHandler,
        *,
        shared_group: str | None = None,
        kinds: Collection[MessageKind] = DEVICE_KINDS,
    ) -> None:
        """Subscribe to ``kinds``, the per-message ones shared in ``shared_group`` (MQTT v5) if set.

        ``config`` is always among the kinds (the other messages are validated against it) and
        ``set`` never is (consumers send commands, devices take them). The server leaves out
        ``command``, which it publishes itself. Configs are always subscribed to normally: every
        worker of a group must know every device, while each state/ack/event goes to one worker.
        """
        if MessageKind.CONFIG not in kinds or MessageKind.SET in kinds:
            raise ValueError("a router subscribes to config and never to set")
        self.base_topic = validate_base_topic(base_topic)
        self.kinds = frozenset(kinds)
        self._subscribe = subscribe
        self._publish = publish
        self._handler = handler
        self._shared_group = shared_group
        self._devices: dict[str, DeviceConfig] = {}
        self._unsubscribes: list[Unsubscribe] = []
        self._parsers: dict[MessageKind, Callable[[str, bytes], None]] = {
            MessageKind.CONFIG: self._handle_config,
            MessageKind.STATE: self._handle_state,
            MessageKind.AVAILABILITY: self._handle_availability,
            MessageKind.ACK: self._handle_ack,
            MessageKind.EVENT: self._handle_event,
            MessageKind.COMMAND: self._handle_command_report,
        }

    @property
    def devices(self) -> Mapping[str, DeviceConfig]:
        """The devices whose config is known, by id."""
        return self._devices

    async def async_start(self) -> None:
        """Subscribe to the router's message kinds under the base topic (configs first)."""
        for kind in (kind for kind in _SUBSCRIPTION_ORDER if kind in self.kinds):
            topic = wildcard_topic(self.base_topic, kind)
            if self._shared_group and kind is not MessageKind.CONFIG:
                topic = f"$share/{self._shared_group}/{topic}"
            self._unsubscribes.append(await self._subscribe(topic, SUBSCRIBE_QOS, self.handle_message))

    def stop(self) -> None:
        """Drop every subscription; the router can be started again."""
        while self._unsubscribes:
            self._unsubscribes.pop()()

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Route one MQTT message. Never raises for bad input: it is reported to ``on_rejected``."""
        try:
            device_id, kind = split_topic(self.base_topic, topic)
        except ProtocolError as err:
            self._handler.on_rejected(None, None, err, topic, payload)
            return
        if kind not in self.kinds:  # e.g. our own commands on <id>/set, when a transport echoes them
            return
        parser = self._parsers[kind]
        try:
            parser(device_id, payload)
        except ProtocolError as err:
            self._handler.on_rejected(device_id, kind, err, topic, payload)

    def _config_of(self, device_id: str) -> DeviceConfig:
        config = self._devices.get(device_id)
        if config is None:
            raise ProtocolError(Reason.UNKNOWN_DEVICE, f"no config has been announced for device {device_id!r}")
        return config

    def _handle_config(self, device_id: str, payload: bytes) -> None:
        if not payload:
            previous = self._devices.pop(device_id, None)
            if previous is not None:
                self._handler.on_removed(device_id, previous)
            return
        config = parse_config(payload, device_id)
        previous = self._devices.get(device_id)
        if config == previous:
            return
        self._devices[device_id] = config
        self._handler.on_config(device_id, config, previous)

    def _handle_state(self, device_id: str, payload: bytes) -> None:
        self._handler.on_state(device_id, parse_state(payload, self._config_of(device_id)))

    def _handle_availability(self, device_id: str, payload: bytes) -> None:
        if not payload:  # the retained availability was cleared (device deleted): nothing to report
            return
        self._handler.on_availability(device_id, parse_availability(payload))

    def _handle_ack(self, device_id: str, payload: bytes) -> None:
        self._handler.on_ack(device_id, parse_ack(payload))

    def _handle_event(self, device_id: str, payload: bytes) -> None:
        self._handler.on_event(device_id, parse_event(payload, self._config_of(device_id)))

    def _handle_command_report(self, device_id: str, payload: bytes) -> None:
        self._config_of(device_id)  # a report about a device nobody announced is not ours
        self._handler.on_command_report(device_id, parse_command_report(payload))

    def build_command(self, device_id: str, values: Mapping[str, Any]) -> Command:
        """Validate ``values`` against the device's capabilities; raise ProtocolError if refused."""
        config = self._config_of(validate_device_id(device_id))
        return Command(new_command_id(), validate_command(values, config))

    async def async_send_command(self, device_id: str, command: Command) -> None:
        """Publish a built command to ``<base>/<id>/set``: QoS 1, never retained."""
        topic = device_topic(self.base_topic, device_id, MessageKind.SET)
        await self._publish(topic, encode_command(command), COMMAND_QOS, False)

    async def async_send_command_report(self, device_id: str, report: CommandReport) -> None:
        """Announce a command's outcome on ``<base>/<id>/command`` (the server's part): QoS 1, never retained."""
        topic = device_topic(self.base_topic, validate_device_id(device_id), MessageKind.COMMAND)
        await self._publish(topic, encode_command_report(report), COMMAND_QOS, False)

    async def async_clear_config(self, device_id: str) -> None:
        """Clear a device's retained config so a deleted device is not rediscovered."""
        topic = device_topic(self.base_topic, validate_device_id(device_id), MessageKind.CONFIG)
        await self._publish(topic, b"", 1, True)


def new_command_id() -> str:
    """A fresh correlation id (URL- and topic-safe)."""
    return secrets.token_hex(8)
