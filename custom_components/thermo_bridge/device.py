"""What the integration knows about one device, and who listens to it.

Plain state and listener plumbing, no MQTT: the bridge updates it from protocol callbacks,
entities read it and subscribe to the keys they show.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from homeassistant.core import CALLBACK_TYPE, callback

from .protocol import Command, DeviceConfig, DeviceEvent, StateValue

UpdateListener = Callable[[frozenset[str] | None], None]
"""Called with the changed state keys, or None when everything may have changed."""
EventListener = Callable[[DeviceEvent], None]


@dataclass(slots=True)
class PendingCommand:
    """A command sent but not yet confirmed; its values overlay the reported state."""

    command: Command
    values: dict[str, float | str]
    waiter: asyncio.Future[None]
    cancel_timeout: CALLBACK_TYPE | None = None
    cancel_wait: CALLBACK_TYPE | None = None

    def cancel_timers(self) -> None:
        """Cancel the timeout and service-wait timers."""
        for cancel in (self.cancel_timeout, self.cancel_wait):
            if cancel is not None:
                cancel()
        self.cancel_timeout = self.cancel_wait = None


@dataclass(slots=True)
class DeviceData:
    """What the integration knows about one device."""

    config: DeviceConfig
    ha_device_id: str | None = None
    values: dict[str, StateValue] = field(default_factory=dict)
    online: bool | None = None
    """The retained availability; None until the device published one (treated as online)."""
    expired: bool = False
    available: bool = True
    last_seen: float | None = None
    last_messages: dict[str, Any] = field(default_factory=dict)
    """The last parsed message of each kind (state, ack, event) and raw rejected payloads."""
    rejected: Counter[str] = field(default_factory=Counter)
    pending: dict[str, PendingCommand] = field(default_factory=dict)
    overlay: dict[str, float | str] = field(default_factory=dict)
    listeners: list[tuple[UpdateListener, frozenset[str] | None]] = field(default_factory=list)
    event_listeners: list[EventListener] = field(default_factory=list)
    cancel_expire: CALLBACK_TYPE | None = None

    @property
    def device_id(self) -> str:
        """The protocol's device id."""
        return self.config.device_id

    def value(self, key: str) -> StateValue:
        """The value to show: a pending command's value, else the last reported one."""
        if key in self.overlay:
            return self.overlay[key]
        return self.values.get(key)

    @callback
    def async_add_listener(self, listener: UpdateListener, keys: frozenset[str] | None = None) -> CALLBACK_TYPE:
        """Call ``listener`` when any of ``keys`` (None: any key) or the device changes."""
        entry = (listener, keys)
        self.listeners.append(entry)

        @callback
        def remove() -> None:
            self.listeners.remove(entry)

        return remove

    @callback
    def async_add_event_listener(self, listener: EventListener) -> CALLBACK_TYPE:
        """Call ``listener`` with every device event."""
        self.event_listeners.append(listener)

        @callback
        def remove() -> None:
            self.event_listeners.remove(listener)

        return remove

    @callback
    def notify(self, changed: frozenset[str] | None = None) -> None:
        """Tell the interested listeners that something changed."""
        for listener, keys in list(self.listeners):
            if changed is None or keys is None or not keys.isdisjoint(changed):
                listener(changed)

    def rebuild_overlay(self) -> None:
        """Merge the pending commands' values, oldest first."""
        self.overlay = {}
        for pending in self.pending.values():
            self.overlay.update(pending.values)
