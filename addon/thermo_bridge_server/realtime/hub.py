"""The hub: routes each event of the committed log to the subscriptions that match it.

It only routes: the store's event log owns offsets, the tailer feeds the hub in offset order,
and each connection owns its queue. An event is encoded once (``Published.json``), whatever
the number of subscriptions it reaches; connections prefix it with their subscription id.

Subscriptions are indexed so an event visits only its candidates: those that name its device,
those indexed by its home (a ``homes`` filter, or a non-admin's visible homes), and admins'
unfiltered ones. Subscriptions with the same filter and index share one ``Route`` (many
dashboards ask for the same devices), so a broadcast matches its filter once and then only
checks each connection's access, which every delivery still does: a device can move between
homes and access can change while a stream is open.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from thermo_bridge_server.access import Access
from thermo_bridge_server.store.base import INTERNAL_EVENTS, EventRecord, EventType

_DEVICE_CONFIG = frozenset({EventType.DEVICE_ADDED, EventType.DEVICE_UPDATED})
MAX_BUFFERED = 4096
"""Live events one subscription may hold while its replay is written out."""
_STR = json.JSONEncoder(ensure_ascii=False).encode


class Published:
    """One event of the log as subscribers get it: the record and its JSON, built on first use."""

    __slots__ = ("_json", "epoch", "kind", "record")

    def __init__(self, record: EventRecord, epoch: str, kind: str | None) -> None:
        self.record = record
        self.epoch = epoch
        self.kind = kind  # the device's kind, when known (for kind filters)
        self._json: str | None = None

    @property
    def offset(self) -> int:
        """The event's offset in the log."""
        return self.record.offset

    @property
    def json(self) -> str:
        """The event object of docs/websocket.md, encoded once: ``data`` is the log's own text."""
        if self._json is None:
            r = self.record
            self._json = (
                f'{{"type":"{r.type.value}","device_id":{_STR(r.device_id)},"home":{_STR(r.home)},'
                f'"offset":{r.offset},"epoch":"{self.epoch}","ts":{float(r.ts)!r},"data":{r.data_json}}}'
            )
        return self._json


@dataclass(frozen=True, slots=True)
class Filter:
    """What a subscription asks for; None means no restriction on that field."""

    devices: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    homes: frozenset[str] | None = None
    events: frozenset[str] | None = None

    def matches(self, event: Published) -> bool:
        """Whether ``event`` passes every filter given (access is checked separately)."""
        record = event.record
        if self.devices is not None and record.device_id not in self.devices:
            return False
        if self.homes is not None and record.home not in self.homes:
            return False
        if self.events is not None and record.type.value not in self.events:
            return False
        return self.kinds is None or event.kind in self.kinds


def visible(access: Access, record: EventRecord) -> bool:
    """Whether the caller may receive ``record``: its home's, and commands only its own (or admin)."""
    if not access.sees(record.home):
        return False
    if record.type is EventType.COMMAND and not access.admin:
        return bool(record.data.get("sub") == access.principal.sub)
    return True


class Sink(Protocol):
    """Where a subscription's events go: a WebSocket or SSE connection."""

    @property
    def access(self) -> Access:
        """What the connection's user may see now."""
        ...

    def deliver(self, subscription: Subscription, event: Published) -> None:
        """Queue ``event`` for ``subscription`` (never blocks)."""
        ...

    def abort_slow(self) -> None:
        """Close the stream: it cannot keep up (its client resumes from its position)."""
        ...


class Subscription:
    """A stream of matching events for one connection; ``buffer`` holds live events during a replay."""

    __slots__ = ("after", "buffer", "filter", "id", "sink", "until_final")

    def __init__(self, sub_id: int, sink: Sink, event_filter: Filter, *, until_final: bool = False) -> None:
        self.id = sub_id
        self.sink = sink
        self.filter = event_filter
        self.buffer: list[Published] | None = []  # None once live
        self.after = 0  # live from here: events up to this offset came with the replay or snapshot
        self.until_final = until_final  # a send_command's own stream: ends with the command's outcome

    def offer(self, event: Published) -> None:
        """Deliver or, while the subscription is still replaying, keep for later (bounded)."""
        if self.buffer is not None:
            self.buffer.append(event)
            if len(self.buffer) > MAX_BUFFERED:
                self.sink.abort_slow()  # the replay cannot keep up with the live stream
        elif event.offset > self.after:
            self.sink.deliver(self, event)


class Route:
    """The subscriptions that share one filter and one index key: an event is matched once per route."""

    __slots__ = ("filter", "key", "subs")

    def __init__(self, key: tuple[Filter, tuple[str, ...]]) -> None:
        self.key = key
        self.filter = key[0]
        self.subs: set[Subscription] = set()


class Hub:
    """Routes published events to subscriptions; ``position`` is the last offset it routed."""

    def __init__(self, epoch: Callable[[], str]) -> None:
        self._epoch = epoch
        self.position = 0
        self._by_device: dict[str, set[Route]] = {}
        self._by_home: dict[str, set[Route]] = {}
        self._everything: set[Route] = set()
        self._routes: dict[tuple[Filter, tuple[str, ...]], Route] = {}
        self._route_of: dict[Subscription, Route] = {}
        self._by_command: dict[str, Subscription] = {}
        self._kinds: dict[str, str] = {}
        self.grant_listeners: list[Callable[[str], None]] = []
        self.published_total = 0

    # ---------------------------------------------------------------- the device index
    def know_devices(self, kinds: Iterable[tuple[str, str]]) -> None:
        """Seed the device → kind index (events carry only the device id)."""
        self._kinds.update(kinds)

    def kind_of(self, device_id: str) -> str | None:
        """The device's kind, as far as the log has told."""
        return self._kinds.get(device_id)

    # ---------------------------------------------------------------- subscriptions
    def add(self, sub: Subscription) -> None:
        """Start routing to ``sub``: by its devices, by the homes it can see, or as an admin's everything."""
        self.remove(sub)
        flt = sub.filter
        if flt.devices is not None:
            index: tuple[str, ...] = ("d", *sorted(flt.devices))
        else:
            homes = sub.sink.access.homes
            if flt.homes is not None:
                homes = flt.homes if homes is None else flt.homes & homes
            index = ("*",) if homes is None else ("h", *sorted(homes))
        key = (flt, index)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = Route(key)
            self._index(route, add=True)
        route.subs.add(sub)
        self._route_of[sub] = route

    def _index(self, route: Route, *, add: bool) -> None:
        kind, *names = route.key[1]
        if kind == "*":
            (self._everything.add if add else self._everything.discard)(route)
            return
        index = self._by_device if kind == "d" else self._by_home
        for name in names:
            if add:
                index.setdefault(name, set()).add(route)
            elif (bucket := index.get(name)) is not None:
                bucket.discard(route)
                if not bucket:
                    del index[name]

    def add_command(self, command_id: str, sub: Subscription) -> None:
        """Route the command's later events to ``sub`` (a send_command's own stream)."""
        self._by_command[command_id] = sub

    def remove(self, sub: Subscription) -> None:
        """Stop routing to ``sub`` (safe if it is not routed)."""
        route = self._route_of.pop(sub, None)
        if route is None:
            return
        route.subs.discard(sub)
        if not route.subs:
            del self._routes[route.key]
            self._index(route, add=False)

    def remove_command(self, command_id: str) -> None:
        """Forget a send_command's stream."""
        self._by_command.pop(command_id, None)

    @property
    def subscriptions(self) -> int:
        """Subscriptions being routed to (for /metrics)."""
        return len(self._route_of) + len(self._by_command)

    # ---------------------------------------------------------------- routing
    def publish(self, records: Sequence[EventRecord]) -> None:
        """Route committed events, in offset order, each to every subscription it matches."""
        epoch = self._epoch()
        for record in records:
            if record.offset <= self.position:
                continue  # already routed (a doorbell and a read that overlap)
            self.position = record.offset
            self.published_total += 1
            if record.type in INTERNAL_EVENTS:
                if record.type is EventType.GRANTS:
                    for listener in list(self.grant_listeners):
                        listener(str(record.data.get("sub", "")))
                continue
            if record.type in _DEVICE_CONFIG:
                kind = record.data.get("kind")
                if isinstance(kind, str):
                    self._kinds[record.device_id] = kind
            event = Published(record, epoch, self._kinds.get(record.device_id))
            for route in self._candidates(record):
                if route.filter.matches(event):
                    for sub in list(route.subs):
                        if visible(sub.sink.access, record):
                            sub.offer(event)
            if record.type is EventType.COMMAND:
                self._route_command(event)

    def _candidates(self, record: EventRecord) -> list[Route]:
        found: list[Route] = []
        if bucket := self._by_device.get(record.device_id):
            found.extend(bucket)
        if bucket := self._by_home.get(record.home):
            found.extend(bucket)
        found.extend(self._everything)
        return found

    def _route_command(self, event: Published) -> None:
        command_id = event.record.data.get("id")
        sub = self._by_command.get(command_id) if isinstance(command_id, str) else None
        if sub is None or not visible(sub.sink.access, event.record):
            return
        sub.offer(event)
        if sub.until_final and event.record.data.get("status") != "pending":
            self.remove_command(str(command_id))
