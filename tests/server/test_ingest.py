"""MQTT ingest end to end: simulated devices → private mosquitto → transport → router → real SQLite store.

Counting is by the devices' own sequence numbers: every state report a simulated device
publishes carries ``seq`` (1, 2, 3… per device), and the store logs one STATE event per
stored report, so "nothing lost, nothing stored twice" is: the stored seqs are exactly 1..n.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import Mosquitto
from tests.server.conftest import pg_base_dsn, with_search_path
from tests.simulators import StartSim, simulators
from tests.waiting import wait_for
from thermo_bridge_protocol import ProtocolError, device_topic
from thermo_bridge_protocol.models import MessageKind
from thermo_bridge_server.config import MqttSettings
from thermo_bridge_server.ingest import Ingest, RateLimitedLog, canonical_config
from thermo_bridge_server.mqtt import MqttNotConnectedError, MqttTransport
from thermo_bridge_server.store import Store, create_store
from thermo_bridge_server.store.base import CommandStatus, EventType
from thermo_bridge_sim.devices import encode, simulated_thermostat
from thermo_bridge_sim.simulator import Simulator

BASE = "thermo_bridge"
ROOT = Path(__file__).resolve().parents[2]


def mqtt_settings(broker: Mosquitto, client_id: str, **kw: Any) -> MqttSettings:
    kw.setdefault("reconnect_min", 0.05)
    kw.setdefault("reconnect_max", 0.5)
    return MqttSettings(host=broker.host, port=broker.port, client_id=client_id, **kw)


class Server:
    """One ingest worker: its transport and its Ingest, started like app.py does (connect, then start)."""

    def __init__(self, broker: Mosquitto, store: Store, client_id: str = "server", **kw: Any) -> None:
        mqtt_kw = {k: kw.pop(k) for k in list(kw) if k in ("session_expiry",)}
        self.transport = MqttTransport(mqtt_settings(broker, client_id, **mqtt_kw))
        kw.setdefault("command_timeout", 5.0)
        self.ingest = Ingest(store, self.transport, base_topic=BASE, **kw)

    async def start(self) -> Server:
        await self.transport.connect(wait_seconds=10)
        await self.ingest.start()
        return self

    async def stop(self) -> None:
        await self.ingest.stop()
        await self.transport.disconnect()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The real store: a SQLite file, or a fresh schema in PostgreSQL (THERMO_BRIDGE_PG_DSN)."""
    if request.param == "sqlite":
        store = create_store(f"sqlite:///{tmp_path}/thermo.db", retention_days=30, dead_letter_limit=50)
        await store.open()
        yield store
        await store.close()
        return
    import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415 - only the PostgreSQL variant needs it

    base = pg_base_dsn()
    schema = f"tb_ingest_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        store = create_store(with_search_path(base, schema), retention_days=30, dead_letter_limit=50)
        await store.open()
        yield store
        await store.close()
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


@pytest.fixture
async def servers(mosquitto: Mosquitto, store: Store) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Start ingest workers on the test broker and store; stopped at the end."""
    started: list[Server] = []

    async def start(client_id: str = "server", **kw: Any) -> Server:
        server = await Server(mosquitto, store, client_id, **kw).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def publisher(mosquitto: Mosquitto) -> AsyncIterator[MqttTransport]:
    """A plain MQTT client to publish raw (also hostile) payloads."""
    transport = MqttTransport(mqtt_settings(mosquitto, "test-publisher"))
    await transport.connect(wait_seconds=10)
    yield transport
    await transport.disconnect()


@pytest.fixture(name="simulators")
async def simulators_fixture(mosquitto: Mosquitto) -> AsyncIterator[StartSim]:
    async with simulators(mosquitto, base_topic=BASE, seed=7) as start:
        yield start


async def stored_seqs(store: Store) -> dict[str, list[int]]:
    """Every stored state report's seq, per device, in event-log order."""
    out: dict[str, list[int]] = {}
    offset = 0
    while batch := await store.events_since(offset, limit=5000):
        for event in batch:
            if event.type is EventType.STATE:
                out.setdefault(event.device_id, []).append(event.data["seq"])
        offset = batch[-1].offset
    return out


async def wait_all_stored(store: Store, sim: Simulator, seconds: float = 20.0) -> dict[str, list[int]]:
    """Wait until every report each device published is stored; return the stored seqs."""
    published = {device_id: device.seq for device_id, device in sim.devices.items()}
    return await _wait_stored(store, published, seconds)


async def seqs_once_stored(store: Store, devices: list[PahoDevice], seconds: float = 30.0) -> dict[str, list[int]]:
    """The stored seqs once every report of ``devices`` is stored, or at the deadline (the caller asserts on them)."""
    published = {device.device_id: device.seq for device in devices}
    with contextlib.suppress(AssertionError):
        return await _wait_stored(store, published, seconds)
    return await stored_seqs(store)


async def _wait_stored(store: Store, published: dict[str, int], seconds: float) -> dict[str, list[int]]:
    """Poll until ``published[device]`` distinct reports of each device are stored; return the stored seqs."""
    seqs: dict[str, list[int]] = {}

    async def complete() -> bool:
        nonlocal seqs
        seqs = await stored_seqs(store)
        return all(len(set(seqs.get(d, []))) >= count for d, count in published.items())

    def missing() -> str:
        counts = {d: n - len(set(seqs.get(d, []))) for d, n in published.items()}
        return f"every report stored; missing per device: {counts}"

    await wait_for(complete, timeout=seconds, interval=0.05, what=missing)
    return seqs


async def read_until(read: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], seconds: float = 10.0) -> Any:
    """What ``read`` returns once ``ok`` accepts it (polled with ``wait_for``)."""
    last: list[Any] = []

    async def accepted() -> bool:
        last[:] = [await read()]
        return ok(last[0])

    await wait_for(accepted, timeout=seconds, what=lambda: f"a value other than {last[0]!r}" if last else "a value")
    return last[0]


def assert_exactly_once(seqs: dict[str, list[int]], sim: Simulator) -> None:
    for device_id, device in sim.devices.items():
        got = seqs.get(device_id, [])
        duplicates = [seq for seq, n in Counter(got).items() if n > 1]
        assert not duplicates, f"{device_id}: stored twice: {duplicates[:10]}"
        assert sorted(got) == list(range(1, device.seq + 1)), f"{device_id}: stored {len(got)} of {device.seq}"


# --------------------------------------------------------------------------- normal traffic


async def test_ingests_simulator_traffic(store: Store, servers: Any, simulators: Any) -> None:
    server = await servers()
    sim = await simulators(thermostats=2, sensors=1)
    seqs = await wait_all_stored(store, sim)
    assert_exactly_once(seqs, sim)

    devices = {d.device_id: d for d in await store.list_devices()}
    assert set(devices) == set(sim.devices)
    for device_id, device in sim.devices.items():
        assert canonical_config(devices[device_id].config) == canonical_config(device.config)
        assert devices[device_id].online is True
        state = await store.get_state(device_id)
        assert state is not None
        assert state.seq == device.seq
        for key in ("temperature", "humidity", "battery"):
            assert state.values[key] == pytest.approx(device.state[key])
    assert server.ingest.rejected_by_reason == {}

    thermostat = next(iter(sim.devices))
    await asyncio.to_thread(sim.emit_event, thermostat, "button_press", {"button": 1, "press": "double"})

    async def events() -> list[Any]:
        return [e for e in await store.events_since(0, limit=10_000) if e.type is EventType.DEVICE_EVENT]

    await wait_for(lambda: server.ingest.messages_in > 0 and server.transport.held_acks == 0)
    found = await wait_for(events, what="the device event in the log")
    assert found[0].device_id == thermostat
    assert found[0].data["event"] == "button_press"
    assert found[0].data["data"] == {"button": 1, "press": "double"}

    await asyncio.to_thread(sim.stop)  # retained "offline"
    device = await read_until(lambda: store.get_device(thermostat), lambda d: d is not None and d.online is False)
    assert device is not None
    assert device.online is False


async def test_removed_device_is_forgotten(store: Store, servers: Any, publisher: MqttTransport) -> None:
    await servers()
    topic = device_topic(BASE, "gone_1", MessageKind.CONFIG)
    await publisher.publish(topic, encode(simulated_thermostat("gone_1", 1)), 1, True)
    await read_until(lambda: store.get_device("gone_1"), lambda d: d is not None)
    await publisher.publish(topic, b"", 1, True)
    await read_until(lambda: store.get_device("gone_1"), lambda d: d is None)


# --------------------------------------------------------------------------- bad input


async def test_rejected_messages_are_counted_dead_lettered_and_change_nothing(
    store: Store, servers: Any, publisher: MqttTransport, simulators: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = await servers()
    sim = await simulators(thermostats=1)
    device_id = next(iter(sim.devices))
    await wait_all_stored(store, sim)
    before_state = await store.get_state(device_id)
    before_devices = await store.list_devices()
    state_topic = device_topic(BASE, device_id, MessageKind.STATE)
    hostile = [
        (state_topic, b"not json", "not_json"),
        (state_topic, b'{"temperature": "hot"}', "wrong_type"),
        (state_topic, b'{"bogus": 1}', "unknown_key"),
        (state_topic, b'{"temperature": 5000}', "out_of_range"),
        (state_topic, b"\xff\xfe", "not_utf8"),
        (state_topic, b"[1, 2]", "not_object"),
        (device_topic(BASE, "ghost", MessageKind.STATE), b'{"temperature": 20}', "unknown_device"),
        (f"{BASE}/bad.id/state", b'{"temperature": 20}', "invalid_device_id"),
        (device_topic(BASE, "broken_1", MessageKind.CONFIG), b'{"schema": 1, "id": "broken_1"}', None),
        (device_topic(BASE, device_id, MessageKind.AVAILABILITY), b"maybe", "invalid_value"),
        (device_topic(BASE, device_id, MessageKind.EVENT), b'{"event": "explosion"}', "not_supported"),
        (device_topic(BASE, device_id, MessageKind.ACK), b'{"id": "x", "status": "perhaps"}', "invalid_value"),
    ]
    caplog.set_level(logging.WARNING, logger="thermo_bridge_server.ingest")
    for topic, payload, _ in hostile:
        await publisher.publish(topic, payload, 1, False)
    for _ in range(4):  # repeats of one rejection: counted, kept, but not logged again
        await publisher.publish(state_topic, b"not json", 1, False)

    total = len(hostile) + 4
    await wait_for(lambda: sum(server.ingest.rejected_by_reason.values()) == total, what="all rejections")
    await wait_for(lambda: server.transport.held_acks == 0, what="acks")
    counts = server.ingest.rejected_by_reason
    assert counts["not_json"] == 5
    for _, _, reason in hostile:
        if reason is not None:
            assert counts.get(reason, 0) >= 1, reason

    letters = await store.dead_letters(limit=100)
    assert len(letters) == total
    by_payload = {letter.payload: letter for letter in letters}
    assert by_payload[b'{"temperature": 5000}'].reason == "out_of_range"
    assert by_payload[b'{"temperature": 5000}'].topic == state_topic
    assert "temperature" in by_payload[b'{"temperature": 5000}'].message
    assert by_payload[b"\xff\xfe"].reason == "not_utf8"

    # Nothing changed: same state, same devices, no ghost, no broken config.
    assert await store.get_state(device_id) == before_state
    assert await store.list_devices() == before_devices
    assert server.transport.stats.acks_withheld == 0  # every rejected message was acknowledged
    assert server.ingest.store_errors == 0

    not_json_logs = [r for r in caplog.records if "not_json" in r.getMessage()]
    assert len(not_json_logs) == 1  # rate-limited: one line for five rejections


async def test_dead_letter_table_is_bounded(store: Store, servers: Any, publisher: MqttTransport) -> None:
    server = await servers()
    for i in range(80):  # the store keeps 50
        await publisher.publish(device_topic(BASE, "ghost", MessageKind.STATE), b"x%d" % i, 1, False)
    await wait_for(lambda: server.ingest.rejected_by_reason.get("unknown_device", 0) == 80)
    await wait_for(lambda: server.transport.held_acks == 0)
    letters = await store.dead_letters(limit=1000)
    assert len(letters) == 50
    assert letters[0].payload == b"x79"  # newest first


def test_rate_limited_log_counts_what_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("test.ratelimit"), interval=60, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="test.ratelimit")
    assert log(("dev", "not_json"), "bad %s", "x") is True
    now[0] = 10
    assert log(("dev", "not_json"), "bad %s", "x") is False
    assert log(("dev", "not_json"), "bad %s", "x") is False
    assert log(("other", "not_json"), "bad %s", "y") is True  # another key
    now[0] = 61
    assert log(("dev", "not_json"), "bad %s", "x") is True
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-1] == "bad x (2 more since the last report)"
    assert len(messages) == 3


# --------------------------------------------------------------------------- duplicates


async def test_duplicates_are_not_stored_twice(
    store: Store, servers: Any, publisher: MqttTransport, simulators: Any
) -> None:
    server = await servers()
    sim = await simulators(thermostats=1)
    device_id = next(iter(sim.devices))
    await wait_all_stored(store, sim)
    topic = device_topic(BASE, device_id, MessageKind.STATE)
    ts = round(time.time(), 3)
    payload = json.dumps({"temperature": 19.5, "seq": 100_000, "ts": ts}).encode()
    for _ in range(3):  # what a QoS 1 redelivery looks like to us
        await publisher.publish(topic, payload, 1, False)
    await wait_for(lambda: server.ingest.duplicates == 2, what="two duplicates")
    seqs = await stored_seqs(store)
    assert seqs[device_id].count(100_000) == 1
    history = await store.history(device_id, ts - 1, ts + 1, keys=["temperature"])
    assert [(p.ts, p.value) for p in history if p.value == 19.5] == [(ts, 19.5)]


# --------------------------------------------------------------------------- commands


async def test_command_is_validated_stored_published_and_acked(store: Store, servers: Any, simulators: Any) -> None:
    server = await servers()
    sim = await simulators(thermostats=1, sensors=1)
    thermostat, sensor = list(sim.devices)
    await wait_all_stored(store, sim)

    record = await server.ingest.send_command(thermostat, {"target_temperature": 22.5, "preset": "boost"}, "auth0|u1")
    assert record.status is CommandStatus.PENDING
    assert record.sub == "auth0|u1"
    acked = await read_until(
        lambda: store.get_command(record.command_id), lambda c: c.status is not CommandStatus.PENDING
    )
    assert acked.status is CommandStatus.ACKED
    assert [(d, c.command_id) for d, c in sim.commands] == [(thermostat, record.command_id)]
    assert sim.commands[0][1].values == {"target_temperature": 22.5, "preset": "boost"}
    await read_until(lambda: store.get_state(thermostat), lambda s: s.values.get("target_temperature") == 22.5)
    assert (server.ingest.commands_sent, server.ingest.commands_acked) == (1, 1)

    with pytest.raises(ProtocolError) as err:
        await server.ingest.send_command(thermostat, {"target_temperature": 99}, "auth0|u1")
    assert str(err.value.reason) == "out_of_range"
    with pytest.raises(ProtocolError):
        await server.ingest.send_command(thermostat, {"colour": "red"}, "auth0|u1")
    with pytest.raises(ProtocolError):
        await server.ingest.send_command(sensor, {"target_temperature": 20}, "auth0|u1")
    with pytest.raises(KeyError):
        await server.ingest.send_command("nobody", {"target_temperature": 20}, "auth0|u1")
    assert server.ingest.commands_sent == 1  # nothing else was sent...
    assert await store.pending_commands(time.time() + 60) == []  # ...or stored
    assert len(sim.commands) == 1


async def _manual_thermostat(store: Store, publisher: MqttTransport, device_id: str) -> None:
    """A thermostat we play by hand (it only answers what the test publishes)."""
    config = encode(simulated_thermostat(device_id, 1))
    await publisher.publish(device_topic(BASE, device_id, MessageKind.CONFIG), config, 1, True)
    await read_until(lambda: store.get_device(device_id), lambda d: d is not None)


async def test_command_failed_by_device_and_timed_out(store: Store, servers: Any, publisher: MqttTransport) -> None:
    server = await servers(command_timeout=0.3)
    await _manual_thermostat(store, publisher, "manual_1")
    await _manual_thermostat(store, publisher, "manual_2")
    ack_topic = device_topic(BASE, "manual_1", MessageKind.ACK)

    refused = await server.ingest.send_command("manual_1", {"hvac_mode": "heat"}, "auth0|u1")
    ack = {"id": refused.command_id, "status": "error", "reason": "valve stuck"}
    await publisher.publish(ack_topic, json.dumps(ack).encode(), 1, False)
    failed = await read_until(
        lambda: store.get_command(refused.command_id), lambda c: c.status is not CommandStatus.PENDING
    )
    assert failed.status is CommandStatus.FAILED
    assert failed.reason == "valve stuck"
    assert server.ingest.commands_failed == 1

    silent = await server.ingest.send_command("manual_1", {"hvac_mode": "cool"}, "auth0|u1")
    # Another device acking this command is ignored.
    other = {"id": silent.command_id, "status": "ok"}
    await publisher.publish(device_topic(BASE, "manual_2", MessageKind.ACK), json.dumps(other).encode(), 1, False)
    timed_out = await read_until(
        lambda: store.get_command(silent.command_id), lambda c: c.status is not CommandStatus.PENDING
    )
    assert timed_out.status is CommandStatus.TIMED_OUT
    assert "0.3" in (timed_out.reason or "")
    assert server.ingest.commands_timed_out == 1
    # A late ack does not resurrect it.
    late = {"id": silent.command_id, "status": "ok"}
    await publisher.publish(ack_topic, json.dumps(late).encode(), 1, False)
    await wait_for(lambda: server.ingest.acks_unmatched == 2, what="the foreign and the late ack")
    again = await store.get_command(silent.command_id)
    assert again is not None
    assert again.status is CommandStatus.TIMED_OUT
    assert server.ingest.commands_acked == 0


async def test_command_while_broker_unreachable(store: Store, servers: Any, publisher: MqttTransport) -> None:
    server = await servers()
    await _manual_thermostat(store, publisher, "manual_1")
    await server.transport.disconnect()
    with pytest.raises(MqttNotConnectedError) as err:
        await server.ingest.send_command("manual_1", {"hvac_mode": "heat"}, "auth0|u1")
    assert isinstance(err.value, ConnectionError)  # the API answers 503
    assert await store.pending_commands(time.time() + 60) == []


# --------------------------------------------------------------------------- outages


class PahoDevice:
    """A device as firmware does it: paho's own network thread, automatic reconnect, QoS 1 kept while offline."""

    def __init__(self, broker: Mosquitto, device_id: str, index: int) -> None:
        self.device_id = device_id
        self.seq = 0
        self.acked = 0
        self.topic = device_topic(BASE, device_id, MessageKind.STATE)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"device-{device_id}", protocol=paho.MQTTv5)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        config = encode(simulated_thermostat(device_id, index))
        self.client.publish(device_topic(BASE, device_id, MessageKind.CONFIG), config, qos=1, retain=True)
        self.lock = threading.Lock()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self.acked += 1

    def report(self, temperature: float) -> int:
        with self.lock:
            self.seq += 1
            payload = json.dumps({"temperature": temperature, "seq": self.seq, "ts": round(time.time(), 3)})
            self.client.publish(self.topic, payload, qos=1)  # queued by paho while disconnected
            return self.seq

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_broker_restart_while_devices_publish_loses_nothing(
    mosquitto: Mosquitto, store: Store, servers: Any
) -> None:
    server = await servers()
    devices = [PahoDevice(mosquitto, f"restart_{i}", i) for i in range(1, 5)]
    await wait_for(lambda: len(server.ingest.router.devices) == 4, what="the devices' configs")
    running = threading.Event()
    running.set()
    during: list[tuple[str, int]] = []
    outage = threading.Event()

    def publish_load() -> None:  # ~200 reports/s over the four devices, through the outage
        i = 0
        while running.is_set():
            for device in devices:
                seq = device.report(15 + (i % 100) / 10)
                if outage.is_set():
                    during.append((device.device_id, seq))
            i += 1
            time.sleep(0.02)

    def restart_broker() -> None:
        time.sleep(0.5)
        mosquitto.stop()
        outage.set()
        time.sleep(1.0)
        outage.clear()
        mosquitto.start()
        time.sleep(1.0)
        running.clear()

    try:
        await asyncio.gather(asyncio.to_thread(publish_load), asyncio.to_thread(restart_broker))
        await wait_for(lambda: all(d.acked >= d.seq + 1 for d in devices), timeout=30, what="the broker's PUBACKs")
        await wait_for(lambda: server.transport.stats.connects >= 2, what="the server's reconnection")
        seqs = await seqs_once_stored(store, devices)
    finally:
        running.clear()
        for device in devices:
            device.close()

    published = sum(d.seq for d in devices)
    stored = sum(len(set(seqs.get(d.device_id, []))) for d in devices)
    lost = published - stored
    print(f"\nbroker restart: {published} QoS 1 reports published ({len(during)} during the outage), ", end="")
    print(f"{stored} stored, {lost} lost")
    for device in devices:
        got = seqs.get(device.device_id, [])
        assert sorted(got) == list(range(1, device.seq + 1)), f"{device.device_id}: {len(got)} of {device.seq}"
    assert lost == 0
    assert len(during) > 0
    assert server.transport.stats.connection_losses >= 1


async def test_server_down_briefly_gets_what_was_published_meanwhile(
    mosquitto: Mosquitto, store: Store, simulators: Any
) -> None:
    first = await Server(mosquitto, store, "persistent").start()
    sim = await simulators(thermostats=2, sensors=1)
    await wait_all_stored(store, sim)
    await first.stop()

    for i in range(20):
        for device_id in sim.devices:
            await asyncio.to_thread(sim.publish_state, device_id, temperature=18 + i / 10)
    await asyncio.to_thread(sim.stop)

    second = await Server(mosquitto, store, "persistent").start()
    try:
        seqs = await wait_all_stored(store, sim)
        assert_exactly_once(seqs, sim)
        assert all(dev.seq >= 21 for dev in sim.devices.values())
        assert second.ingest.rejected_by_reason == {}  # states validated against configs seeded from the store
    finally:
        await second.stop()


async def test_shared_group_workers_share_the_load(store: Store, servers: Any, simulators: Any) -> None:
    workers = [await servers(f"worker{i}", shared_group="ingest") for i in range(2)]
    sim = await simulators(thermostats=3, sensors=3, rate=400)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(sim.stop)
    seqs = await wait_all_stored(store, sim)
    assert_exactly_once(seqs, sim)
    shares = [w.ingest.messages_in for w in workers]
    assert all(share > 0 for share in shares), shares
    for worker in workers:  # each knows every device (configs are not shared)
        assert set(worker.ingest.router.devices) == set(sim.devices)


async def test_shared_group_worker_learns_retained_availability(store: Store, servers: Any, simulators: Any) -> None:
    # Announced (retained config and "online") before any worker runs. mosquitto 2.0 happens to
    # send retained messages to shared subscriptions too; MQTT v5 brokers that follow 4.8.2 do
    # not, which is why every worker also subscribes to availability normally.
    sim = await simulators(thermostats=2)
    worker = await servers("late-worker", shared_group="ingest")
    for device_id in sim.devices:

        def read(device_id: str = device_id) -> Awaitable[Any]:
            return store.get_device(device_id)

        device = await read_until(read, lambda d: d is not None and d.online is True)
        assert device.online is True
    assert set(worker.ingest.router.devices) == set(sim.devices)


async def test_qos1_redelivery_after_a_lost_ack_is_not_stored_twice(
    store: Store, servers: Any, publisher: MqttTransport
) -> None:
    """The store committed, the connection dropped before the PUBACK: the broker redelivers, we store once."""
    server = await servers()
    await _manual_thermostat(store, publisher, "redeliver_1")
    transport = server.transport
    finish = transport._finish
    lost: list[Any] = []

    def lose_first_ack(inbound: Any) -> None:
        if not lost and inbound.qos == 1:
            lost.append(inbound)  # committed, but the connection drops before the ack leaves
            transport._abort()
        finish(inbound)

    transport._finish = lose_first_ack
    payload = json.dumps({"temperature": 21.5, "seq": 1, "ts": round(time.time(), 3)}).encode()
    await publisher.publish(device_topic(BASE, "redeliver_1", MessageKind.STATE), payload, 1, False)
    await wait_for(lambda: bool(lost), what="the first delivery")
    await wait_for(lambda: transport.stats.connects >= 2, what="the reconnection")
    await wait_for(lambda: server.ingest.duplicates == 1, what="the redelivery, recognised")
    assert transport.stats.acks_dropped == 1  # the stale ack was not sent on the new connection
    seqs = await stored_seqs(store)
    assert seqs["redeliver_1"] == [1]
    state = await store.get_state("redeliver_1")
    assert state is not None
    assert state.values["temperature"] == 21.5


async def test_store_failure_leaves_the_message_unacknowledged_until_it_is_stored(
    mosquitto: Mosquitto, tmp_path: Path, publisher: MqttTransport
) -> None:
    """A store that cannot write: no crash, no ack; the broker redelivers to the next run, which stores it."""
    url = f"sqlite:///{tmp_path}/failing.db"
    store = create_store(url, retention_days=30, dead_letter_limit=50)
    await store.open()
    server = await Server(mosquitto, store, "store-failure").start()
    await _manual_thermostat(store, publisher, "fragile_1")
    await store.close()  # the disk is gone, say
    payload = json.dumps({"temperature": 23.0, "seq": 7, "ts": round(time.time(), 3)}).encode()
    await publisher.publish(device_topic(BASE, "fragile_1", MessageKind.STATE), payload, 1, False)
    await wait_for(lambda: server.ingest.store_errors == 1, what="the refused write")
    assert server.transport.stats.acks_withheld == 1
    assert server.transport.connected  # nothing crashed
    await server.stop()

    store = create_store(url, retention_days=30, dead_letter_limit=50)
    await store.open()
    try:
        again = await Server(mosquitto, store, "store-failure").start()
        state = await read_until(lambda: store.get_state("fragile_1"), lambda s: s is not None and s.seq == 7)
        assert state.values["temperature"] == 23.0
        await again.stop()
    finally:
        await store.close()


async def test_ingest_can_be_stopped_and_started_again(store: Store, servers: Any, publisher: MqttTransport) -> None:
    server = await servers()
    await _manual_thermostat(store, publisher, "again_1")
    await server.ingest.stop()
    await server.ingest.start()  # same transport: subscriptions are not doubled
    topic = device_topic(BASE, "again_1", MessageKind.STATE)
    await publisher.publish(topic, json.dumps({"temperature": 20.5, "seq": 1}).encode(), 1, False)
    await read_until(lambda: store.get_state("again_1"), lambda s: s is not None and s.seq == 1)
    await wait_for(lambda: server.transport.held_acks == 0)
    assert server.ingest.duplicates == 0
    assert len(await stored_seqs(store)) == 1


def _start_worker(broker: Mosquitto, store_url: str, client_id: str, log: Path) -> subprocess.Popen[str]:
    """An ingest process of its own (so it can be killed -9); returns once it is subscribed."""
    with log.open("a") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.server.ingest_worker", broker.host, str(broker.port), store_url, client_id],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"worker did not start: {line!r}, see {log}"
    return proc


async def test_kill_9_during_ingest_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """SIGKILL the ingest process mid-stream: acks only after commit means the next process gets the rest."""
    url = f"sqlite:///{tmp_path}/crash.db"
    log = tmp_path / "worker.log"
    worker = await asyncio.to_thread(_start_worker, mosquitto, url, "crash-ingest", log)
    devices = [PahoDevice(mosquitto, f"crash_{i}", i) for i in range(1, 5)]
    running = threading.Event()
    running.set()

    def publish_load() -> None:  # ~800 reports/s over four devices
        i = 0
        while running.is_set():
            for device in devices:
                device.report(15 + (i % 100) / 10)
            i += 1
            time.sleep(0.005)

    load = asyncio.create_task(asyncio.to_thread(publish_load))
    store = create_store(url, retention_days=30, dead_letter_limit=100)
    try:
        await asyncio.sleep(1.0)
        worker.kill()  # SIGKILL: no clean-up, no flush, acks in flight are lost
        await asyncio.to_thread(worker.wait)
        at_kill = sum(d.seq for d in devices)
        await asyncio.sleep(0.5)
        worker = await asyncio.to_thread(_start_worker, mosquitto, url, "crash-ingest", log)
        await asyncio.sleep(1.0)
        running.clear()
        await load
        await wait_for(lambda: all(d.acked >= d.seq + 1 for d in devices), timeout=30, what="the broker's PUBACKs")
        await store.open()
        seqs = await seqs_once_stored(store, devices)
    finally:
        running.clear()
        worker.terminate()
        await asyncio.to_thread(worker.wait)
        for device in devices:
            device.close()
        await store.close()
    published = sum(d.seq for d in devices)
    print(
        f"\nkill -9: {published} reports published ({at_kill} before the kill), {sum(map(len, seqs.values()))} stored"
    )
    for device in devices:
        got = seqs.get(device.device_id, [])
        assert sorted(got) == list(range(1, device.seq + 1)), f"{device.device_id}: {len(got)} of {device.seq}"


async def test_command_while_the_store_cannot_commit_is_refused_in_bounded_time(
    mosquitto: Mosquitto, publisher: MqttTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that holds every write (here: another connection's exclusive lock) makes a clear error, not a hang.

    SQLite only: the lock is a second SQLite connection (PostgreSQL outages: tests/server/test_fault_postgres.py).
    """
    from thermo_bridge_server import ingest as ingest_module  # noqa: PLC0415

    path = tmp_path / "locked.db"
    store = create_store(f"sqlite:///{path}", retention_days=30, dead_letter_limit=50)
    await store.open()
    server = await Server(mosquitto, store, "locked", command_timeout=0.5).start()
    try:
        await _manual_thermostat(store, publisher, "manual_1")
        monkeypatch.setattr(ingest_module, "STORE_WAIT_SECONDS", 0.5)
        await _command_while_locked(server, store, path)
    finally:
        await server.stop()
        await store.close()


async def _command_while_locked(server: Any, store: Store, path: Path) -> None:
    from thermo_bridge_server.errors import StoreUnavailableError, command_error  # noqa: PLC0415

    blocker = sqlite3.connect(path, isolation_level=None, timeout=5)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailableError) as err:
            await server.ingest.send_command("manual_1", {"hvac_mode": "heat"}, "auth0|u1")
        api_error = command_error(err.value, "manual_1")
        assert api_error is not None
        assert (api_error.status, api_error.code) == (503, "store_unavailable")
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    # The write commits once the lock is gone; nothing was published, so the sweep times it out.
    timed_out = await wait_for(
        lambda: _only_command(store), timeout=15, what="the command, committed late and timed out"
    )
    assert timed_out.status is CommandStatus.TIMED_OUT
    assert server.ingest.commands_sent == 0


async def _only_command(store: Store) -> Any:
    pending = await store.pending_commands(older_than=time.time() + 3600)
    if pending:
        return None
    events = [e for e in await store.events_since(0) if e.type is EventType.COMMAND]
    if not events or events[-1].data["status"] == "pending":
        return None
    return await store.get_command(events[-1].data["id"])
