"""The WebSocket commands: each one a small function registered with its voluptuous schema.

A handler gets the connection's ``Session`` and the validated message and returns the
``result`` (or raises ``ApiError``, which becomes ``success: false`` with its code). The
message catalogue is docs/websocket.md; the schemas here are what the server enforces.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import voluptuous as vol

from thermo_bridge_protocol import DeviceKind
from thermo_bridge_server.errors import ApiError, command_error
from thermo_bridge_server.realtime.hub import Filter, Subscription
from thermo_bridge_server.resources import command_json, device_json, state_json
from thermo_bridge_server.store.base import INTERNAL_EVENTS, CommandStatus, EventType

if TYPE_CHECKING:
    from thermo_bridge_server.realtime.websocket import Session

Handler = Callable[["Session", dict[str, Any]], Awaitable[Any]]
COMMANDS: dict[str, tuple[vol.Schema, Handler]] = {}

MAX_ID = 2**53 - 1
_DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_KEY = re.compile(r"[\x21-\x7e]{1,128}")
EVENT_TYPES = sorted(str(t) for t in EventType if t not in INTERNAL_EVENTS)


def _strict_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise vol.Invalid("expected an integer")
    return value


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise vol.Invalid(f"expected {what}")
        return value

    return check


def _list_of(item: Callable[[object], str], most: int) -> vol.All:
    return vol.All(list, vol.Length(max=most), [item])


def _one_of(choices: list[str]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise vol.Invalid(f"expected one of {', '.join(choices)}")
        return value

    return check


MESSAGE_ID = vol.All(_strict_int, vol.Range(min=1, max=MAX_ID))
DEVICE_ID = _matching(_DEVICE_ID, "a device id (1-64 of A-Z a-z 0-9 _ -)")
FILTERS = {
    vol.Optional("devices"): _list_of(DEVICE_ID, 1000),
    vol.Optional("kinds"): _list_of(_one_of([str(k) for k in DeviceKind]), 2),
    vol.Optional("homes"): _list_of(_matching(_HOME, "a home name"), 256),
}


def command(name: str, fields: dict[Any, Any]) -> Callable[[Handler], Handler]:
    """Register a handler for messages of type ``name`` with these fields (besides id and type)."""
    schema = vol.Schema({vol.Required("id"): MESSAGE_ID, vol.Required("type"): name, **fields})

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = (schema, handler)
        return handler

    return register


_SHARED: dict[frozenset[str], frozenset[str]] = {}
_SHARED_LIMIT = 10_000


def _shared(values: list[str]) -> frozenset[str]:
    """One copy of each distinct filter list (and of its strings) for every subscription that uses it.

    Many clients subscribe to the same devices: per connection the set and its strings would
    otherwise be most of its memory.
    """
    items = frozenset(values)
    found = _SHARED.get(items)
    if found is None:
        if len(_SHARED) >= _SHARED_LIMIT:
            _SHARED.clear()
        found = _SHARED[items] = frozenset(sys.intern(value) for value in items)
    return found


def filter_of(msg: dict[str, Any]) -> Filter:
    """The subscription filter of a message's optional lists."""

    def given(key: str) -> frozenset[str] | None:
        return _shared(msg[key]) if key in msg else None

    return Filter(devices=given("devices"), kinds=given("kinds"), homes=given("homes"), events=given("events"))


# --------------------------------------------------------------------------- commands


# No length cap here: the Authenticator refuses an oversized token as invalid_token, as REST does.
@command("auth", {vol.Required("access_token"): vol.All(str, vol.Length(min=1))})
async def handle_auth(session: Session, msg: dict[str, Any]) -> Any:  # noqa: ANN401 - the result
    """A refreshed token for this connection (same user); access is recomputed."""
    return await session.refresh(msg["access_token"])


@command("ping", {})
async def handle_ping(session: Session, msg: dict[str, Any]) -> Any:  # noqa: ANN401
    """Answered with ``pong`` (not a result)."""
    session.send_json({"id": msg["id"], "type": "pong"})
    return session.NO_RESULT


@command("get_devices", FILTERS)
async def handle_get_devices(session: Session, msg: dict[str, Any]) -> Any:  # noqa: ANN401
    """The devices the user may see, optionally filtered."""
    access = session.conn.access
    flt = filter_of(msg)
    homes = access.homes if flt.homes is None else (flt.homes if access.homes is None else access.homes & flt.homes)
    devices = await session.realtime.store.list_devices(homes) if homes is None or homes else []
    return {
        "devices": [
            device_json(d)
            for d in devices
            if access.sees(d.home)
            and (flt.devices is None or d.device_id in flt.devices)
            and (flt.kinds is None or str(d.config.kind) in flt.kinds)
        ]
    }


@command("get_state", {vol.Required("device_id"): vol.All(str, vol.Length(min=1, max=64))})
async def handle_get_state(session: Session, msg: dict[str, Any]) -> Any:  # noqa: ANN401
    """One device's latest state."""
    device = await session.realtime.policy.device(session.conn.access, msg["device_id"])
    return state_json(device.device_id, await session.realtime.store.get_state(device.device_id))


@command(
    "subscribe",
    {
        **FILTERS,
        vol.Optional("events"): _list_of(_one_of(EVENT_TYPES), len(EVENT_TYPES)),
        vol.Optional("since"): {
            vol.Required("epoch"): vol.All(str, vol.Length(max=64)),
            vol.Required("offset"): vol.All(_strict_int, vol.Range(min=0, max=MAX_ID)),
        },
        vol.Optional("snapshot", default=True): bool,
    },
)
async def handle_subscribe(session: Session, msg: dict[str, Any]) -> Any:  # noqa: ANN401
    """Start a stream: replay from ``since`` or a snapshot, then live (the result says which)."""
    conn = session.conn
    if msg["id"] in conn.subscriptions:
        raise ApiError(400, "id_reuse", "a subscription with this id exists")
    if len(conn.subscriptions) >= session.realtime.settings.max_subscriptions:
        limit = session.realtime.settings.max_subscriptions
        raise ApiError(429, "too_many_subscriptions", f"at most {limit} subscriptions per connection")
    since = (msg["since"]["epoch"], msg["since"]["offset"]) if "since" in msg else None
    sub = Subscription(msg["id"], conn, filter_of(msg))
    await session.realtime.start_stream(
        conn, sub, since, snapshot=msg["snapshot"], announce=lambda result: session.send_result(msg["id"], result)
    )
    return session.NO_RESULT


@command("unsubscribe", {vol.Required("subscription"): MESSAGE_ID})
async def handle_unsubscribe(session: Session, msg: dict[str, Any]) -> Any:  # noqa: ANN401
    """End a subscription."""
    if not session.conn.unsubscribe(msg["subscription"]):
        raise ApiError(404, "unknown_subscription", f"no subscription {msg['subscription']}")
    return None


@command(
    "send_command",
    {
        vol.Required("device_id"): vol.All(str, vol.Length(min=1, max=64)),
        vol.Required("values"): vol.All(dict, vol.Length(min=1, max=32)),
        vol.Optional("idempotency_key"): _matching(_KEY, "1-128 printable ASCII characters without spaces"),
    },
)
async def handle_send_command(session: Session, msg: dict[str, Any]) -> Any:  # noqa: ANN401
    """Send a command; its later events come on this message's id until its outcome."""
    realtime = session.realtime
    principal = session.principal
    conn = session.conn
    async with session.device_turn(msg["device_id"]):
        access = await realtime.policy.resolve(principal, realtime.settings.permissions.write)
        device = await realtime.policy.device(access, msg["device_id"])
        wait = realtime.command_limiter.take(principal.sub)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"too many commands; retry in {max(1, round(wait))} s")
        # Routed before the command exists: its outcome may be logged before send_command returns.
        watch = Subscription(
            msg["id"], conn, Filter(devices=frozenset({device.device_id}), events=frozenset({"command"}))
        )
        conn.hub.add(watch)
        try:
            record = await realtime.sender.send_command(
                device.device_id, msg["values"], principal.sub, msg.get("idempotency_key")
            )
        except Exception as err:
            if (error := command_error(err, device.device_id)) is None:
                raise
            raise error from None
        finally:
            conn.hub.remove(watch)
    early, watch.buffer = watch.buffer or [], None
    watch.until_final = True
    session.send_result(msg["id"], command_json(record))
    final = record.status is not CommandStatus.PENDING
    for event in early:
        if event.record.data.get("id") == record.command_id and event.record.data.get("status") != "pending":
            conn.deliver(watch, event)
            final = True
    if not final and not conn.closing:
        conn.follow_command(record.command_id, watch)
    return session.NO_RESULT
