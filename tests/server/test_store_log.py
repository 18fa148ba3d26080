"""The event log as the real-time API reads it, on both backends: epoch, offsets, snapshots, the doorbell."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from thermo_bridge_protocol import DeviceEvent, StateUpdate, parse_config
from thermo_bridge_server.store import create_store
from thermo_bridge_server.store.base import CommandRecord, CommandStatus, EventRecord, EventType, Store
from thermo_bridge_sim import devices

T0 = 1_750_000_000.0
SENSOR = devices.sensor(
    "sensor_1", measurements=devices.measurements("temperature", "humidity"), events=["button_press"]
)
THERMOSTAT = devices.thermostat("thermo_1", measurements=devices.measurements("temperature"))

StoreFactory = Callable[..., Awaitable[Store]]


def config(data: dict[str, Any]) -> Any:
    return parse_config(json.dumps(data).encode())


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'store.db'}"
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


@pytest.fixture
async def open_store(store_url: str) -> AsyncIterator[StoreFactory]:
    opened: list[Store] = []

    async def factory(url: str | None = None, **kwargs: Any) -> Store:
        store = create_store(url or store_url, **{"retention_days": 30, "dead_letter_limit": 100, **kwargs})
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: StoreFactory) -> Store:
    return await open_store()


class Bell:
    """Records what the doorbell rang with."""

    def __init__(self, store: Store) -> None:
        self.rings: list[tuple[int, list[EventRecord]]] = []
        self.changed = asyncio.Event()
        self.stop = store.on_commit(self)

    def __call__(self, offset: int, records: Sequence[EventRecord]) -> None:
        self.rings.append((offset, list(records)))
        self.changed.set()

    async def until(self, offset: int) -> None:
        async with asyncio.timeout(10):
            while not self.rings or max(o for o, _ in self.rings) < offset:
                self.changed.clear()
                await self.changed.wait()

    @property
    def records(self) -> list[EventRecord]:
        return [record for _, records in self.rings for record in records]


async def test_epoch_is_random_per_database_and_stable_across_opens(
    open_store: StoreFactory, tmp_path: Path, store_url: str
) -> None:
    first = await open_store()
    epoch = first.epoch
    assert len(epoch) == 32
    assert int(epoch, 16) >= 0
    await first.close()
    assert (await open_store()).epoch == epoch  # reopening the same database keeps it
    if store_url.startswith("sqlite"):
        other = await open_store(f"sqlite://{tmp_path / 'other.db'}")
        assert other.epoch != epoch  # a new database, a new epoch


async def test_doorbell_rings_after_commit_with_exactly_the_committed_rows(store: Store) -> None:
    bell = Bell(store)
    await store.apply_config(config(SENSOR), T0)
    futures: list[asyncio.Future[Any]] = [
        store.apply_state("sensor_1", StateUpdate({"temperature": 20.0 + i}), T0 + i) for i in range(30)
    ]
    futures.append(store.record_device_event("sensor_1", DeviceEvent("button_press", {}, None), T0 + 40))
    await asyncio.gather(*futures)
    latest = await store.latest_offset()
    await bell.until(latest)
    logged = await store.events_since(0)
    assert bell.records == logged  # the same records, in offset order, nothing twice
    local = [(offset, records) for offset, records in bell.rings if records]
    assert [offset for offset, _ in local] == sorted({offset for offset, _ in local})
    assert all(offset == records[-1].offset for offset, records in local)
    # PostgreSQL also rings with the offset alone: its own NOTIFY (every replica's commits).
    assert all(offset <= latest for offset, records in bell.rings if not records)
    assert logged[-1].data_json == json.dumps(logged[-1].data, separators=(",", ":"), sort_keys=True)
    bell.stop()
    await store.apply_availability("sensor_1", True, T0 + 50)
    assert bell.records == logged  # stopped listening


async def test_a_failed_commit_does_not_ring(store: Store) -> None:
    await store.apply_config(config(THERMOSTAT), T0)
    bell = Bell(store)
    record = CommandRecord("dup", "thermo_1", "auth0|a", {"hvac_mode": "heat"}, CommandStatus.PENDING, T0, T0)
    await store.create_command(record)
    await bell.until(await store.latest_offset())
    rung = list(bell.records)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the backend's own integrity error
        await store.create_command(record)  # same id: the batch fails and rolls back
    await store.apply_availability("thermo_1", True, T0 + 1)
    await bell.until(await store.latest_offset())
    assert [r.type for r in bell.records[len(rung) :]] == [EventType.AVAILABILITY]


async def test_earliest_offset_follows_retention_and_the_newest_entry_stays(store: Store) -> None:
    assert await store.earliest_offset() == 1
    assert await store.latest_offset() == 0
    await store.apply_config(config(SENSOR), T0)
    for i in range(5):
        await store.apply_state("sensor_1", StateUpdate({"temperature": float(i)}), T0 + i)
    everything = await store.events_since(0)
    assert await store.earliest_offset() == everything[0].offset
    await store.purge_before(T0 + 1_000_000)  # everything is older
    assert [e.offset for e in await store.events_since(0)] == [everything[-1].offset]
    assert await store.earliest_offset() == await store.latest_offset() == everything[-1].offset
    await store.apply_state("sensor_1", StateUpdate({"temperature": 9.0}), T0 + 9)
    assert await store.latest_offset() > everything[-1].offset  # offsets never restart


async def test_snapshot_is_one_consistent_view_at_an_offset(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    await store.apply_config(config(THERMOSTAT), T0)
    await store.set_device_home("thermo_1", "cabin")
    await store.apply_state("sensor_1", StateUpdate({"temperature": 20.0, "humidity": 40.0}), T0 + 1)
    await store.apply_state("thermo_1", StateUpdate({"temperature": 18.5}), T0 + 1)
    await store.apply_availability("sensor_1", True, T0 + 2)

    snap = await store.snapshot(None)
    assert snap.offset == await store.latest_offset()
    by_id = {device.device_id: (device, state) for device, state in snap.devices}
    assert set(by_id) == {"sensor_1", "thermo_1"}
    device, state = by_id["sensor_1"]
    assert device.online is True
    assert state is not None
    assert state.values == {"humidity": 40.0, "temperature": 20.0}
    assert [d.device_id for d, _ in (await store.snapshot(["cabin"])).devices] == ["thermo_1"]
    assert [d.device_id for d, _ in (await store.snapshot(None, kinds=["sensor"])).devices] == ["sensor_1"]
    assert [d.device_id for d, _ in (await store.snapshot(None, devices=["thermo_1"])).devices] == ["thermo_1"]
    assert (await store.snapshot([])).devices == []

    # Writes racing with snapshots: every snapshot's values are exactly those of the log up to
    # its offset (no later write seen, no earlier one missed).
    writes = [store.apply_state("sensor_1", StateUpdate({"temperature": float(i)}), T0 + 10 + i) for i in range(200)]
    snaps = []
    for _ in range(10):
        snaps.append(await store.snapshot(None, devices=["sensor_1"]))
        await asyncio.sleep(0)
    await asyncio.gather(*writes)
    log = await store.events_since(0, limit=10_000)
    for snap in snaps:
        expected = None
        for event in log:
            if event.offset <= snap.offset and event.type is EventType.STATE and event.device_id == "sensor_1":
                expected = event.data["values"].get("temperature", expected)
        ((_, state),) = snap.devices
        assert state is not None
        assert state.values["temperature"] == expected


async def test_moving_a_device_is_logged_for_both_homes(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    start = await store.latest_offset()
    assert await store.set_device_home("sensor_1", "cabin")
    assert await store.set_device_home("sensor_1", "cabin")  # not a move: nothing logged
    moved = await store.events_since(start)
    assert [(e.type, e.home) for e in moved] == [
        (EventType.DEVICE_REMOVED, "default"),
        (EventType.DEVICE_UPDATED, "cabin"),
    ]
    assert moved[1].data == SENSOR


async def test_grant_changes_are_logged_without_a_device(store: Store) -> None:
    start = await store.latest_offset()
    await store.set_grants("auth0|alice", ["a", "b"])
    (event,) = await store.events_since(start)
    assert (event.type, event.device_id, event.home, event.data) == (EventType.GRANTS, "", "", {"sub": "auth0|alice"})
    assert await store.events_since(start, homes=["a"]) == []  # no home's user reads it


async def test_commands_with_an_idempotency_key_are_stored_once(store: Store) -> None:
    await store.apply_config(config(THERMOSTAT), T0)
    first = CommandRecord(
        "c1", "thermo_1", "auth0|a", {"hvac_mode": "heat"}, CommandStatus.PENDING, T0, T0, idempotency_key="k-1"
    )
    again = CommandRecord(
        "c2", "thermo_1", "auth0|a", {"hvac_mode": "heat"}, CommandStatus.PENDING, T0 + 1, T0 + 1, idempotency_key="k-1"
    )
    other_user = CommandRecord(
        "c3", "thermo_1", "auth0|b", {"hvac_mode": "heat"}, CommandStatus.PENDING, T0 + 2, T0 + 2, idempotency_key="k-1"
    )
    assert await store.create_command(first) == (first, True)
    await store.update_command("c1", CommandStatus.ACKED, None, T0 + 3)
    stored, created = await store.create_command(again)
    assert not created
    assert (stored.command_id, stored.status) == ("c1", CommandStatus.ACKED)  # the earlier command, as it is now
    assert await store.get_command("c2") is None
    assert await store.create_command(other_user) == (other_user, True)  # keys are per user
    commands = [e for e in await store.events_since(0) if e.type is EventType.COMMAND]
    assert [(e.data["id"], e.data["status"], e.data["sub"]) for e in commands] == [
        ("c1", "pending", "auth0|a"),
        ("c1", "acked", "auth0|a"),
        ("c3", "pending", "auth0|b"),
    ]


async def test_tickets_are_single_use_and_expire(store: Store) -> None:
    await store.add_ticket("hash-1", '{"sub": "a"}', T0 + 30)
    await store.add_ticket("hash-2", '{"sub": "b"}', T0 + 30)
    assert await store.take_ticket("hash-1", T0) == '{"sub": "a"}'
    assert await store.take_ticket("hash-1", T0) is None  # used
    assert await store.take_ticket("hash-2", T0 + 31) is None  # expired
    assert await store.take_ticket("nope", T0) is None


async def test_other_replicas_commits_reach_a_listener(pg_dsn: str) -> None:
    """Two stores on one PostgreSQL schema (two replicas): each hears the other's commits (pg_notify).

    Only the offset crosses replicas: the listener reads the rows from the log itself.
    """
    reader = create_store(pg_dsn, retention_days=30, dead_letter_limit=100)
    writer = create_store(pg_dsn, retention_days=30, dead_letter_limit=100)
    await reader.open()
    await writer.open()
    try:
        bell = Bell(reader)
        await writer.apply_config(config(SENSOR), T0)
        await writer.apply_state("sensor_1", StateUpdate({"temperature": 1.0}), T0)
        await bell.until(await writer.latest_offset())
        assert bell.records == []
        assert reader.epoch == writer.epoch
    finally:
        await writer.close()
        await reader.close()
