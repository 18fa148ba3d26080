"""What the API layers need from the device side, as protocols.

The ingest and the MQTT transport implement them; ``http`` and ``realtime`` depend only on
these, never on the device side's modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from thermo_bridge_server.store.base import CommandRecord


class CommandSender(Protocol):
    """Sends a user's command to a device (``Ingest.send_command``)."""

    async def send_command(
        self, device_id: str, values: Mapping[str, Any], sub: str, idempotency_key: str | None = None
    ) -> CommandRecord:
        """Validate against the device's capabilities, store as pending, publish to ``<base>/<id>/set``.

        A key this ``sub`` used before returns that command as it is now and publishes nothing.
        Failures are explained by ``errors.command_error``.
        """
        ...


class BrokerState(Protocol):
    """Whether the device side is reachable (the MQTT transport)."""

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        ...
