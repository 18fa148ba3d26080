"""DeviceRouter's routing logic with an in-memory transport (tests/protocol/test_simulator.py uses a real broker)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from thermo_bridge_protocol import (
    DEVICE_KINDS,
    Ack,
    AckStatus,
    CommandReport,
    CommandStatus,
    DeviceConfig,
    DeviceEvent,
    DeviceRouter,
    MessageKind,
    ProtocolError,
    ProtocolHandler,
    Reason,
    StateUpdate,
    new_command_id,
    parse_command,
)
from thermo_bridge_protocol.codec import COMMAND_ID_RE
from thermo_bridge_sim import devices

THERMOSTAT = devices.thermostat(
    "t1", name="T1", measurements=devices.measurements("temperature"), events=["button_press"], min_temp=5, max_temp=30
)


def raw(value: object) -> bytes:
    return json.dumps(value).encode()


@dataclass
class Recorder(ProtocolHandler):
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    """Every callback, as a tuple; typed loosely so tests compare whole tuples."""

    def last(self) -> tuple[Any, ...]:
        return self.calls[-1]

    def on_config(self, device_id: str, config: DeviceConfig, previous: DeviceConfig | None) -> None:
        self.calls.append(("config", device_id, config, previous))

    def on_removed(self, device_id: str, previous: DeviceConfig) -> None:
        self.calls.append(("removed", device_id, previous))

    def on_state(self, device_id: str, update: StateUpdate) -> None:
        self.calls.append(("state", device_id, update))

    def on_availability(self, device_id: str, online: bool) -> None:
        self.calls.append(("availability", device_id, online))

    def on_ack(self, device_id: str, ack: Ack) -> None:
        self.calls.append(("ack", device_id, ack))

    def on_event(self, device_id: str, event: DeviceEvent) -> None:
        self.calls.append(("event", device_id, event))

    def on_command_report(self, device_id: str, report: CommandReport) -> None:
        self.calls.append(("command", device_id, report))

    def on_rejected(
        self, device_id: str | None, kind: MessageKind | None, error: ProtocolError, topic: str, payload: bytes
    ) -> None:
        self.calls.append(("rejected", device_id, kind, error.reason, topic, payload))


class FakeTransport:
    """Records subscriptions and publishes; ``unsubscribed`` counts unsubscribe calls."""

    def __init__(self) -> None:
        self.subscriptions: list[tuple[str, int]] = []
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.unsubscribed: list[str] = []

    async def subscribe(self, topic: str, qos: int, callback: Any) -> Any:
        self.subscriptions.append((topic, qos))
        return lambda: self.unsubscribed.append(topic)

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.published.append((topic, payload, qos, retain))


@pytest.fixture
def transport() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def handler() -> Recorder:
    return Recorder()


@pytest.fixture
def router(transport: FakeTransport, handler: Recorder) -> DeviceRouter:
    return DeviceRouter("/tb/", transport.subscribe, transport.publish, handler)


async def test_start_subscribes_configs_first_and_stop_unsubscribes(
    router: DeviceRouter, transport: FakeTransport
) -> None:
    assert router.base_topic == "tb"
    await router.async_start()
    assert transport.subscriptions == [
        ("tb/+/config", 1),
        ("tb/+/availability", 1),
        ("tb/+/state", 1),
        ("tb/+/ack", 1),
        ("tb/+/event", 1),
    ]
    router.stop()
    assert sorted(transport.unsubscribed) == sorted(topic for topic, _ in transport.subscriptions)
    router.stop()  # idempotent
    assert len(transport.unsubscribed) == 5


async def test_shared_group_shares_everything_but_configs(transport: FakeTransport, handler: Recorder) -> None:
    router = DeviceRouter("tb", transport.subscribe, transport.publish, handler, shared_group="workers")
    await router.async_start()
    assert transport.subscriptions[0] == ("tb/+/config", 1)
    assert all(topic.startswith("$share/workers/tb/+/") for topic, _ in transport.subscriptions[1:])


def test_invalid_base_topic_is_refused(transport: FakeTransport, handler: Recorder) -> None:
    with pytest.raises(ProtocolError) as info:
        DeviceRouter("tb/#", transport.subscribe, transport.publish, handler)
    assert info.value.reason is Reason.INVALID_TOPIC


def test_config_lifecycle(router: DeviceRouter, handler: Recorder) -> None:
    router.handle_message("tb/t1/config", raw(THERMOSTAT))
    (call,) = handler.calls
    assert call[:2] == ("config", "t1")
    assert call[3] is None
    first = call[2]
    assert router.devices == {"t1": first}

    router.handle_message("tb/t1/config", raw(THERMOSTAT))  # rediscovery, unchanged: no callback
    assert len(handler.calls) == 1

    changed = {**THERMOSTAT, "name": "Renamed"}
    router.handle_message("tb/t1/config", raw(changed))
    assert handler.last()[0] == "config"
    assert handler.last()[2].name == "Renamed"
    assert handler.last()[3] == first

    router.handle_message("tb/t1/config", b"")
    assert handler.last()[:2] == ("removed", "t1")
    assert handler.last()[2].name == "Renamed"
    assert router.devices == {}

    router.handle_message("tb/t1/config", b"")  # removing an unknown device: nothing
    assert len(handler.calls) == 3


def test_bad_config_keeps_the_known_one(router: DeviceRouter, handler: Recorder) -> None:
    router.handle_message("tb/t1/config", raw(THERMOSTAT))
    router.handle_message("tb/t1/config", raw({**THERMOSTAT, "schema": 9}))
    assert handler.last() == (
        "rejected",
        "t1",
        MessageKind.CONFIG,
        Reason.UNSUPPORTED_SCHEMA,
        "tb/t1/config",
        raw({**THERMOSTAT, "schema": 9}),
    )
    assert router.devices["t1"].schema == 1


def test_config_under_another_devices_topic_is_rejected(router: DeviceRouter, handler: Recorder) -> None:
    router.handle_message("tb/other/config", raw(THERMOSTAT))
    assert handler.last()[:4] == ("rejected", "other", MessageKind.CONFIG, Reason.ID_MISMATCH)
    assert router.devices == {}


def test_state_needs_a_config_and_is_validated_against_it(router: DeviceRouter, handler: Recorder) -> None:
    router.handle_message("tb/t1/state", b'{"temperature":20}')
    assert handler.last()[:4] == ("rejected", "t1", MessageKind.STATE, Reason.UNKNOWN_DEVICE)

    router.handle_message("tb/t1/config", raw(THERMOSTAT))
    router.handle_message("tb/t1/state", b'{"temperature":20,"hvac_mode":"heat","seq":3}')
    assert handler.last() == ("state", "t1", StateUpdate({"temperature": 20.0, "hvac_mode": "heat"}, None, 3))

    router.handle_message("tb/t1/state", b'{"hvac_mode":"cool"}')
    assert handler.last()[:4] == ("rejected", "t1", MessageKind.STATE, Reason.INVALID_VALUE)


def test_availability(router: DeviceRouter, handler: Recorder) -> None:
    router.handle_message("tb/t1/availability", b"online")
    router.handle_message("tb/t1/availability", b"offline")
    assert handler.calls == [("availability", "t1", True), ("availability", "t1", False)]
    router.handle_message("tb/t1/availability", b"")  # cleared retained topic: ignored
    assert len(handler.calls) == 2
    router.handle_message("tb/t1/availability", b"ONLINE")
    assert handler.last()[:4] == ("rejected", "t1", MessageKind.AVAILABILITY, Reason.INVALID_VALUE)


def test_ack_and_event(router: DeviceRouter, handler: Recorder) -> None:
    router.handle_message("tb/t1/ack", b'{"id":"c1","status":"ok"}')
    assert handler.last() == ("ack", "t1", Ack("c1", AckStatus.OK))
    router.handle_message("tb/t1/event", b'{"event":"button_press"}')
    assert handler.last()[:4] == ("rejected", "t1", MessageKind.EVENT, Reason.UNKNOWN_DEVICE)
    router.handle_message("tb/t1/config", raw(THERMOSTAT))
    router.handle_message("tb/t1/event", b'{"event":"button_press","data":{"n":2}}')
    assert handler.last() == ("event", "t1", DeviceEvent("button_press", {"n": 2.0}))


def test_foreign_and_malformed_topics_are_rejected_without_a_device(router: DeviceRouter, handler: Recorder) -> None:
    router.handle_message("elsewhere/t1/state", b"{}")
    router.handle_message("tb/t1/unknown", b"{}")
    assert [c[:4] for c in handler.calls] == [
        ("rejected", None, None, Reason.INVALID_TOPIC),
        ("rejected", None, None, Reason.INVALID_TOPIC),
    ]
    router.handle_message("tb/t+1/state", b"{}")
    assert handler.last()[:4] == ("rejected", None, None, Reason.INVALID_DEVICE_ID)


def test_own_commands_echoed_back_are_ignored(router: DeviceRouter, handler: Recorder) -> None:
    router.handle_message("tb/t1/set", b'{"id":"x","hvac_mode":"heat"}')
    assert handler.calls == []


async def test_build_and_send_command(router: DeviceRouter, transport: FakeTransport) -> None:
    with pytest.raises(ProtocolError) as info:
        router.build_command("t1", {"hvac_mode": "heat"})
    assert info.value.reason is Reason.UNKNOWN_DEVICE
    with pytest.raises(ProtocolError) as info:
        router.build_command("t/1", {"hvac_mode": "heat"})
    assert info.value.reason is Reason.INVALID_DEVICE_ID

    router.handle_message("tb/t1/config", raw(THERMOSTAT))
    with pytest.raises(ProtocolError) as info:
        router.build_command("t1", {"target_temperature": 31})
    assert info.value.reason is Reason.OUT_OF_RANGE
    assert transport.published == []

    command = router.build_command("t1", {"target_temperature": 21, "hvac_mode": "heat"})
    assert command.values == {"target_temperature": 21.0, "hvac_mode": "heat"}
    await router.async_send_command("t1", command)
    ((topic, payload, qos, retain),) = transport.published
    assert (topic, qos, retain) == ("tb/t1/set", 1, False)
    assert parse_command(payload, router.devices["t1"]) == command


async def test_clear_config_publishes_an_empty_retained_payload(router: DeviceRouter, transport: FakeTransport) -> None:
    await router.async_clear_config("t1")
    assert transport.published == [("tb/t1/config", b"", 1, True)]
    with pytest.raises(ProtocolError):
        await router.async_clear_config("#")


def test_default_handler_ignores_everything(transport: FakeTransport) -> None:
    router = DeviceRouter("tb", transport.subscribe, transport.publish, ProtocolHandler())
    for topic, payload in [
        ("tb/t1/config", raw(THERMOSTAT)),
        ("tb/t1/state", b'{"temperature":1}'),
        ("tb/t1/availability", b"online"),
        ("tb/t1/ack", b'{"id":"a","status":"ok"}'),
        ("tb/t1/event", b'{"event":"button_press"}'),
        ("tb/t1/state", b"junk"),
        ("tb/t1/config", b""),
    ]:
        router.handle_message(topic, payload)
    assert router.devices == {}


def test_new_command_ids_are_valid_and_unique() -> None:
    ids = {new_command_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(COMMAND_ID_RE.fullmatch(command_id) for command_id in ids)


REPORT = {"id": "c1", "values": {"hvac_mode": "heat"}, "user": "auth0|u1", "status": "acked", "ts": 1767225600.0}


async def test_command_reports_only_reach_a_router_that_asked_for_them(
    router: DeviceRouter, transport: FakeTransport, handler: Recorder
) -> None:
    """The server publishes reports and must not receive its own: the default kinds leave them out."""
    assert MessageKind.COMMAND not in DEVICE_KINDS
    await router.async_start()
    assert "tb/+/command" not in [topic for topic, _ in transport.subscriptions]
    router.handle_message("tb/t1/config", raw(THERMOSTAT))
    handler.calls.clear()
    router.handle_message("tb/t1/command", raw(REPORT))
    assert handler.calls == []


async def test_a_router_with_the_command_kind_reports_outcomes(transport: FakeTransport, handler: Recorder) -> None:
    router = DeviceRouter(
        "tb", transport.subscribe, transport.publish, handler, kinds=(*DEVICE_KINDS, MessageKind.COMMAND)
    )
    await router.async_start()
    assert transport.subscriptions[0] == ("tb/+/config", 1)
    assert transport.subscriptions[-1] == ("tb/+/command", 1)
    router.handle_message("tb/t1/command", raw(REPORT))
    assert handler.last()[:4] == ("rejected", "t1", MessageKind.COMMAND, Reason.UNKNOWN_DEVICE)
    router.handle_message("tb/t1/config", raw(THERMOSTAT))
    router.handle_message("tb/t1/command", raw(REPORT))
    assert handler.last() == (
        "command",
        "t1",
        CommandReport("c1", {"hvac_mode": "heat"}, "auth0|u1", CommandStatus.ACKED, None, 1767225600.0),
    )
    router.handle_message("tb/t1/command", raw({**REPORT, "status": "failed"}))
    assert handler.last()[:4] == ("rejected", "t1", MessageKind.COMMAND, Reason.MISSING_KEY)


async def test_shared_group_shares_command_reports_too(transport: FakeTransport, handler: Recorder) -> None:
    router = DeviceRouter(
        "tb",
        transport.subscribe,
        transport.publish,
        handler,
        shared_group="g",
        kinds=[MessageKind.CONFIG, MessageKind.COMMAND],
    )
    await router.async_start()
    assert transport.subscriptions == [("tb/+/config", 1), ("$share/g/tb/+/command", 1)]


@pytest.mark.parametrize("kinds", [[MessageKind.STATE], [*DEVICE_KINDS, MessageKind.SET]])
def test_kinds_must_include_config_and_never_set(
    transport: FakeTransport, handler: Recorder, kinds: list[MessageKind]
) -> None:
    with pytest.raises(ValueError, match="config and never to set"):
        DeviceRouter("tb", transport.subscribe, transport.publish, handler, kinds=kinds)
