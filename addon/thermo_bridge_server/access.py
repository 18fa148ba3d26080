"""What a caller may see and do, from its principal, the store and the permission names.

No request object is involved, so REST, the WebSocket and SSE answer the same questions the
same way. The model (the README's "Who sees what"):

* Every device belongs to exactly one home (new devices get the configured default home;
  admins move them). A caller sees and controls the devices of the homes granted to its
  Auth0 ``sub`` server-side (the grants table, managed by admins) together with the homes
  listed in its token's homes claim. A principal with the admin permission sees every device.
* A device id that exists but belongs to a home the caller cannot see is 403
  ``forbidden_device``; this confirms that the id exists, which is acceptable because device
  ids are not secrets (they are topic segments every MQTT client of the broker sees), and no
  data of the device is returned.
* A command is visible only to the caller who sent it (while it can still see the device)
  and to admins; any other command id is 404, because command ids are unguessable and a 403
  would confirm that someone else's command exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from thermo_bridge_protocol import ProtocolError, validate_device_id

from .auth import Principal
from .auth.tokens import require
from .errors import ApiError
from .store.base import CommandRecord, DeviceRecord, Store

MAX_COMMAND_ID_LENGTH = 64


@dataclass(frozen=True, slots=True)
class Permissions:
    """The permission names tokens carry (Auth0 RBAC ``permissions`` or ``scope``)."""

    read: str = "read:devices"
    write: str = "write:devices"
    admin: str = "admin"


@dataclass(frozen=True, slots=True)
class Access:
    """What one authenticated caller may see: ``homes`` None means every home.

    Every home comes with the admin permission, or with a token of the server's own ingress
    panel (``Principal.every_home``); only ``admin`` also sees everyone's commands.
    """

    principal: Principal
    homes: frozenset[str] | None
    admin: bool = False

    def sees(self, home: str) -> bool:
        """Whether devices of ``home`` are visible to the caller."""
        return self.homes is None or home in self.homes

    def sees_command(self, record: CommandRecord, device_home: str | None) -> bool:
        """Whether the caller may see ``record`` (``device_home`` None: the device is gone)."""
        if self.admin:
            return True
        return record.sub == self.principal.sub and device_home is not None and self.sees(device_home)


def unknown_device_error(device_id: str) -> ApiError:
    """404 for a device id that does not exist (or is not a valid id at all)."""
    return ApiError(404, "unknown_device", f"no device with id {device_id[:80]!r}")


class AccessPolicy:
    """Resolves callers' access against the store's grants and devices."""

    def __init__(self, store: Store, permissions: Permissions) -> None:
        self.store = store
        self.permissions = permissions

    async def resolve(self, principal: Principal, permission: str) -> Access:
        """Check ``permission`` (403 insufficient_scope) and compute the caller's homes."""
        require(principal, permission)
        if principal.has(self.permissions.admin):
            return Access(principal, None, admin=True)
        if principal.every_home:
            return Access(principal, None)
        granted = await self.store.get_grants(principal.sub)
        return Access(principal, frozenset(principal.homes) | granted)

    async def device(self, access: Access, raw_id: str) -> DeviceRecord:
        """The device ``raw_id`` if the caller may see it (404 unknown, 403 another home's)."""
        try:
            device_id = validate_device_id(raw_id)
        except ProtocolError:
            raise unknown_device_error(raw_id) from None
        device = await self.store.get_device(device_id)
        if device is None:
            raise unknown_device_error(device_id)
        if not access.sees(device.home):
            raise ApiError(403, "forbidden_device", "you have no access to this device")
        return device

    async def command(self, access: Access, command_id: str) -> CommandRecord:
        """The command ``command_id`` if the caller may see it; 404 ``unknown_command`` otherwise."""
        record = await self.store.get_command(command_id) if len(command_id) <= MAX_COMMAND_ID_LENGTH else None
        if record is not None and not access.admin:
            device = await self.store.get_device(record.device_id)
            if not access.sees_command(record, None if device is None else device.home):
                record = None
        if record is None:
            raise ApiError(404, "unknown_command", "no such command")
        return record
