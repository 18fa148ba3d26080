"""One suite for both store backends: a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import wait_for
from thermo_bridge_protocol import DeviceConfig, DeviceEvent, StateUpdate, parse_config
from thermo_bridge_server.store import StoreClosedError, StoreUrlError, create_store
from thermo_bridge_server.store import postgres as postgres_module
from thermo_bridge_server.store import rows as store_rows
from thermo_bridge_server.store import sqlite as sqlite_module
from thermo_bridge_server.store.base import (
    DEAD_LETTER_PAYLOAD_BYTES,
    CommandRecord,
    CommandStatus,
    DeviceRecord,
    EventType,
    Store,
)
from thermo_bridge_server.store.retention import DAY, run_retention
from thermo_bridge_server.store.rows import MAX_FUTURE_SKEW
from thermo_bridge_server.store.sqlite import SQLiteStore, split_statements
from thermo_bridge_sim import devices

T0 = 1_750_000_000.0

SENSOR = devices.sensor(
    "sensor_1",
    name="Living room",
    measurements=devices.measurements("temperature", "humidity", "window_open"),
    events=["button_press"],
)
THERMOSTAT = devices.thermostat(
    "thermo_1", name="Hall", measurements=devices.measurements("temperature"), setpoint="single"
)


def config(data: dict[str, Any], **changes: Any) -> DeviceConfig:
    return parse_config(json.dumps({**data, **changes}).encode())


StoreFactory = Callable[..., Awaitable[Store]]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'store.db'}"
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


@pytest.fixture
async def open_store(store_url: str) -> AsyncIterator[StoreFactory]:
    """Open stores on ``store_url`` (several may share it); all are closed afterwards."""
    opened: list[Store] = []

    async def factory(**kwargs: Any) -> Store:
        options = {"retention_days": 30, "dead_letter_limit": 100, **kwargs}
        store = create_store(store_url, **options)
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: StoreFactory) -> Store:
    return await open_store()


def backend_of(store_url: str) -> str:
    return "sqlite" if store_url.startswith("sqlite") else "postgres"


async def raw_fetch(store_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read with an independent connection: sees only what was committed."""
    if store_url.startswith("sqlite"):
        path = store_url.removeprefix("sqlite://")

        def run() -> list[tuple[Any, ...]]:
            conn = sqlite3.connect(path)
            try:
                return conn.execute(sql.replace("$1", "?").replace("$2", "?"), args).fetchall()
            finally:
                conn.close()

        return await asyncio.to_thread(run)
    import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415

    conn = await asyncpg.connect(store_url)
    try:
        return [tuple(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


# --------------------------------------------------------------------------- migrations


async def test_migrations_applied_once_and_reopen_is_noop(store_url: str, open_store: StoreFactory) -> None:
    first = await open_store()
    await first.apply_config(config(SENSOR), T0)
    await first.close()
    versions = await raw_fetch(store_url, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(version,) for version, _, _ in store_rows.migrations(backend_of(store_url))]
    again = await open_store()
    assert await raw_fetch(store_url, "SELECT version FROM schema_version ORDER BY version") == versions
    assert [d.device_id for d in await again.list_devices()] == ["sensor_1"]  # data survived the reopen


async def test_concurrent_opens_apply_migrations_once(store_url: str, open_store: StoreFactory) -> None:
    stores = await asyncio.gather(*(open_store() for _ in range(3)))
    assert len(stores) == 3
    shipped = len(store_rows.migrations(backend_of(store_url)))
    assert await raw_fetch(store_url, "SELECT count(*) FROM schema_version") == [(shipped,)]
    epochs = {store.epoch for store in stores}
    assert len(epochs) == 1  # the epoch is created once, with the schema


async def test_new_migration_applied_once_on_reopen(
    store_url: str, open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgraded server opens an existing database: only the new migration runs, once."""
    first = await open_store()
    await first.apply_config(config(SENSOR), T0)
    await first.close()
    backend = "sqlite" if store_url.startswith("sqlite") else "postgres"
    module = sqlite_module if backend == "sqlite" else postgres_module
    shipped = store_rows.migrations(backend)
    new = len(shipped) + 1
    upgrade = [*shipped, (new, "notes", "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);")]
    monkeypatch.setattr(module, "migrations", lambda _backend: upgrade)
    await open_store()
    await open_store()
    rows = await raw_fetch(store_url, "SELECT version, name FROM schema_version ORDER BY version")
    assert rows == [(version, name) for version, name, _ in shipped] + [(new, "notes")]
    assert await raw_fetch(store_url, "SELECT count(*) FROM notes") == [(0,)]
    assert await raw_fetch(store_url, "SELECT count(*) FROM devices") == [(1,)]


async def test_failing_migration_changes_nothing(
    store_url: str, open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await (await open_store()).close()
    backend = "sqlite" if store_url.startswith("sqlite") else "postgres"
    module = sqlite_module if backend == "sqlite" else postgres_module
    shipped = store_rows.migrations(backend)
    broken = (len(shipped) + 1, "broken", "CREATE TABLE half (id INTEGER);\nTHIS IS NOT SQL;")
    monkeypatch.setattr(module, "migrations", lambda _backend: [*shipped, broken])
    with pytest.raises(Exception):  # noqa: B017, PT011 - the backend's own syntax error
        await open_store()
    assert await raw_fetch(store_url, "SELECT max(version) FROM schema_version") == [(len(shipped),)]
    tables = (
        "SELECT name FROM sqlite_master WHERE name = 'half'"
        if backend == "sqlite"
        else "SELECT tablename FROM pg_tables WHERE tablename = 'half' AND schemaname = current_schema()"
    )
    assert await raw_fetch(store_url, tables) == []  # the half-applied migration was rolled back


def test_shipped_migrations_are_numbered_and_split_cleanly() -> None:
    for backend in ("sqlite", "postgres"):
        found = store_rows.migrations(backend)
        assert [version for version, _, _ in found] == list(range(1, len(found) + 1))
    statements = split_statements(store_rows.migrations("sqlite")[0][2])
    assert all(sqlite3.complete_statement(statement) for statement in statements)
    assert any("CREATE TABLE events" in statement for statement in statements)
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE x (a INTEGER)")


# --------------------------------------------------------------------------- devices


async def test_config_new_changed_unchanged(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    device = await store.get_device("sensor_1")
    assert device is not None
    assert device.config == config(SENSOR)
    assert device.home == "default"
    assert device.online is None
    assert (device.first_seen, device.updated_at) == (T0, T0)

    await store.apply_config(config(SENSOR), T0 + 10)  # retained config redelivered: nothing changes
    unchanged = await store.get_device("sensor_1")
    assert unchanged is not None
    assert unchanged.updated_at == T0

    await store.apply_config(config(SENSOR, name="Kitchen"), T0 + 20)
    changed = await store.get_device("sensor_1")
    assert changed is not None
    assert changed.config.name == "Kitchen"
    assert (changed.first_seen, changed.updated_at) == (T0, T0 + 20)

    events = await store.events_since(0)
    assert [e.type for e in events] == [EventType.DEVICE_ADDED, EventType.DEVICE_UPDATED]
    assert events[1].data["name"] == "Kitchen"
    assert events[1].home == "default"
    assert await store.get_device("nope") is None


async def test_default_home_is_configurable(open_store: StoreFactory) -> None:
    store = await open_store(default_home="house")
    await store.apply_config(config(SENSOR), T0)
    device = await store.get_device("sensor_1")
    assert device is not None
    assert device.home == "house"


async def test_list_devices_filters(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    await store.apply_config(config(THERMOSTAT), T0)
    await store.apply_config(config(SENSOR, id="sensor_2"), T0)
    await store.apply_availability("sensor_1", True, T0)
    await store.apply_availability("thermo_1", False, T0)
    assert await store.set_device_home("sensor_2", "cabin")

    def ids(devices: list[DeviceRecord]) -> list[str]:
        return [d.device_id for d in devices]

    assert ids(await store.list_devices()) == ["sensor_1", "sensor_2", "thermo_1"]
    assert ids(await store.list_devices(kind="thermostat")) == ["thermo_1"]
    assert ids(await store.list_devices(online=True)) == ["sensor_1"]
    assert ids(await store.list_devices(online=False)) == ["thermo_1"]
    assert ids(await store.list_devices(home="cabin")) == ["sensor_2"]
    assert ids(await store.list_devices(["default"])) == ["sensor_1", "thermo_1"]
    assert ids(await store.list_devices(["cabin", "elsewhere"], kind="sensor")) == ["sensor_2"]
    assert await store.list_devices([]) == []


async def test_availability_logged_only_on_change_and_before_config(store: Store) -> None:
    await store.apply_availability("sensor_1", True, T0)  # retained availability before the config
    await store.apply_availability("sensor_1", True, T0 + 1)
    await store.apply_config(config(SENSOR), T0 + 2)
    device = await store.get_device("sensor_1")
    assert device is not None
    assert device.online is True
    await store.apply_availability("sensor_1", False, T0 + 3)
    device = await store.get_device("sensor_1")
    assert device is not None
    assert device.online is False
    events = [(e.type, e.data) for e in await store.events_since(0)]
    assert events == [
        (EventType.AVAILABILITY, {"online": True}),
        (EventType.DEVICE_ADDED, config(SENSOR).as_dict()),
        (EventType.AVAILABILITY, {"online": False}),
    ]


async def test_remove_device_keeps_history(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    assert await store.set_device_home("sensor_1", "cabin")
    await store.apply_availability("sensor_1", True, T0)
    await store.apply_state("sensor_1", StateUpdate({"temperature": 20.5}), T0 + 1)
    await store.remove_device("sensor_1", T0 + 2)
    await store.remove_device("never_seen", T0 + 3)  # unknown: nothing to log
    assert await store.get_device("sensor_1") is None
    assert await store.get_state("sensor_1") is None
    assert [p.value for p in await store.history("sensor_1", T0, T0 + 10)] == [20.5]
    last = (await store.events_since(0))[-1]
    assert (last.type, last.device_id, last.home) == (EventType.DEVICE_REMOVED, "sensor_1", "cabin")
    # Rediscovered: a new device again, in the default home.
    await store.apply_config(config(SENSOR), T0 + 4)
    device = await store.get_device("sensor_1")
    assert device is not None
    assert (device.home, device.online, device.first_seen) == ("default", None, T0 + 4)


# --------------------------------------------------------------------------- state


async def test_partial_updates_merge(store: Store) -> None:
    await store.apply_config(config(THERMOSTAT), T0)
    assert await store.get_state("thermo_1") is None
    assert await store.apply_state("thermo_1", StateUpdate({"temperature": 20.0, "hvac_mode": "heat"}), T0 + 1)
    assert await store.apply_state("thermo_1", StateUpdate({"target_temperature": 21.5}, seq=7), T0 + 2)
    assert await store.apply_state("thermo_1", StateUpdate({"temperature": None}), T0 + 3)
    state = await store.get_state("thermo_1")
    assert state is not None
    assert state.values == {"hvac_mode": "heat", "target_temperature": 21.5, "temperature": None}
    assert state.updated_at == T0 + 3
    assert (state.device_ts, state.seq) == (None, None)  # the newest update carried neither
    await store.apply_state("thermo_1", StateUpdate({"hvac_mode": "off"}, ts=T0 + 4, seq=8), T0 + 4)
    state = await store.get_state("thermo_1")
    assert state is not None
    assert (state.values["hvac_mode"], state.device_ts, state.seq) == ("off", T0 + 4, 8)


async def test_value_types_survive(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    await store.apply_state("sensor_1", StateUpdate({"temperature": 21.0, "window_open": False}), T0)
    state = await store.get_state("sensor_1")
    assert state is not None
    assert state.values == {"temperature": 21.0, "window_open": False}
    assert type(state.values["window_open"]) is bool


async def test_older_update_arriving_late_does_not_overwrite(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    assert await store.apply_state("sensor_1", StateUpdate({"temperature": 22.0}, ts=T0 + 10, seq=2), T0 + 11)
    assert await store.apply_state(
        "sensor_1", StateUpdate({"temperature": 21.0, "humidity": 40}, ts=T0, seq=1), T0 + 12
    )
    state = await store.get_state("sensor_1")
    assert state is not None
    assert state.values == {"temperature": 22.0, "humidity": 40}  # humidity is new, temperature older
    assert (state.device_ts, state.seq) == (T0 + 10, 2)
    # Both still go to history, at their device timestamps.
    points = await store.history("sensor_1", T0 - 1, T0 + 20, keys=["temperature"])
    assert [(p.ts, p.value) for p in points] == [(T0, 21.0), (T0 + 10, 22.0)]


async def test_device_clock_far_ahead_does_not_freeze_state(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    await store.apply_state("sensor_1", StateUpdate({"temperature": 30.0}, ts=T0 + 86_400), T0)  # clock a day ahead
    later = T0 + MAX_FUTURE_SKEW + 1
    await store.apply_state("sensor_1", StateUpdate({"temperature": 20.0}, ts=later), later)  # clock fixed
    state = await store.get_state("sensor_1")
    assert state is not None
    assert state.values["temperature"] == 20.0


async def test_duplicates_are_not_stored_twice(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    update = StateUpdate({"temperature": 20.0}, ts=T0, seq=1)
    assert await store.apply_state("sensor_1", update, T0) is True
    assert await store.apply_state("sensor_1", update, T0 + 5) is False  # QoS 1 redelivery
    # Same seq but different values (a counter reset by a reboot) is a new report.
    assert await store.apply_state("sensor_1", StateUpdate({"temperature": 19.0}, ts=T0, seq=1), T0 + 6) is True
    # Same seq only, no ts: deduplicated too.
    assert await store.apply_state("sensor_1", StateUpdate({"humidity": 50}, seq=9), T0 + 7) is True
    assert await store.apply_state("sensor_1", StateUpdate({"humidity": 50}, seq=9), T0 + 8) is False
    # Neither seq nor ts: nothing to tell a redelivery apart, so both are kept.
    assert await store.apply_state("sensor_1", StateUpdate({"humidity": 51}), T0 + 9) is True
    assert await store.apply_state("sensor_1", StateUpdate({"humidity": 51}), T0 + 10) is True

    temperature = await store.history("sensor_1", T0 - 1, T0 + 20, keys=["temperature"])
    assert sorted(p.value for p in temperature if p.value is not None) == [19.0, 20.0]  # same ts: any order
    humidity = await store.history("sensor_1", T0 - 1, T0 + 20, keys=["humidity"])
    assert [p.value for p in humidity] == [50.0, 51.0, 51.0]
    states = [e for e in await store.events_since(0) if e.type is EventType.STATE]
    assert len(states) == 5
    assert states[0].data == {"values": {"temperature": 20.0}, "ts": T0, "seq": 1}


async def test_duplicates_within_one_batch(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    update = StateUpdate({"temperature": 20.0}, seq=3)
    futures = [store.apply_state("sensor_1", update, T0 + i) for i in range(5)]
    assert await asyncio.gather(*futures) == [True, False, False, False, False]
    assert len(await store.history("sensor_1", T0 - 10, T0 + 10)) == 1


async def test_futures_resolve_only_after_commit(store_url: str, store: Store) -> None:
    """While another connection holds the write lock, nothing resolves; then everything is committed."""
    await store.apply_config(config(SENSOR), T0)
    if store_url.startswith("sqlite"):
        blocker: Any = sqlite3.connect(
            store_url.removeprefix("sqlite://"), isolation_level=None, check_same_thread=False
        )
        blocker.execute("BEGIN IMMEDIATE")

        async def release() -> None:
            await asyncio.to_thread(blocker.execute, "COMMIT")
            blocker.close()
    else:
        import asyncpg  # noqa: PLC0415

        blocker = await asyncpg.connect(store_url)
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE state_values IN ACCESS EXCLUSIVE MODE")

        async def release() -> None:
            await transaction.commit()
            await blocker.close()

    try:
        futures = [
            store.apply_state("sensor_1", StateUpdate({"temperature": 20.0 + i}, seq=i), T0 + i) for i in range(50)
        ]
        await asyncio.sleep(0.3)
        assert not any(f.done() for f in futures)
    finally:
        await release()
    assert all(await asyncio.gather(*futures))
    rows = await raw_fetch(store_url, "SELECT count(*) FROM history WHERE device_id = $1", "sensor_1")
    assert rows == [(50,)]


async def test_one_failing_write_does_not_sink_its_batch(store: Store) -> None:
    await store.apply_config(config(THERMOSTAT), T0)
    record = CommandRecord("cmd-1", "thermo_1", "auth0|a", {"hvac_mode": "heat"}, CommandStatus.PENDING, T0, T0)
    await store.create_command(record)
    before = store.apply_state("thermo_1", StateUpdate({"temperature": 20.0}), T0 + 1)
    duplicate = store.create_command(record)  # same id: violates the primary key
    after = store.apply_state("thermo_1", StateUpdate({"temperature": 21.0}), T0 + 2)
    assert await before is True
    with pytest.raises(Exception):  # noqa: B017, PT011 - the backend's own integrity error
        await duplicate
    assert await after is True
    assert [p.value for p in await store.history("thermo_1", T0, T0 + 10)] == [20.0, 21.0]
    assert (await store.stats())["failed_batches_total"] >= 1


async def test_writes_after_close_are_refused(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreClosedError):
        store.apply_state("sensor_1", StateUpdate({"temperature": 1.0}), T0)


async def test_close_commits_what_is_queued(store_url: str, open_store: StoreFactory) -> None:
    store = await open_store()
    await store.apply_config(config(SENSOR), T0)
    futures = [store.apply_state("sensor_1", StateUpdate({"temperature": float(i)}), T0 + i) for i in range(300)]
    await store.close()
    assert all(f.done() and f.result() for f in futures)
    assert await raw_fetch(store_url, "SELECT count(*) FROM history") == [(300,)]


# --------------------------------------------------------------------------- history


async def test_history_range_keys_and_types(store: Store) -> None:
    await store.apply_config(config(THERMOSTAT), T0)
    await store.apply_config(config(SENSOR), T0)
    await store.apply_state(
        "thermo_1", StateUpdate({"temperature": 20.0, "target_temperature": 21.0, "hvac_mode": "heat"}), T0
    )
    await store.apply_state("sensor_1", StateUpdate({"window_open": True, "humidity": 40}), T0 + 1)
    await store.apply_state("sensor_1", StateUpdate({"window_open": False, "humidity": None}), T0 + 2)
    await store.apply_state("sensor_1", StateUpdate({"window_open": True}), T0 + 3)

    thermo = await store.history("thermo_1", T0, T0 + 1)
    assert [(p.ts, p.key, p.value) for p in thermo] == [(T0, "target_temperature", 21.0), (T0, "temperature", 20.0)]
    sensor = await store.history("sensor_1", T0 + 1, T0 + 3)  # end is exclusive
    assert [(p.ts, p.key, p.value) for p in sensor] == [
        (T0 + 1, "humidity", 40.0),
        (T0 + 1, "window_open", 1.0),
        (T0 + 2, "humidity", None),
        (T0 + 2, "window_open", 0.0),
    ]
    assert [p.value for p in await store.history("sensor_1", T0, T0 + 10, keys=["window_open"])] == [1.0, 0.0, 1.0]
    assert await store.history("sensor_1", T0, T0 + 10, keys=[]) == []
    assert len(await store.history("sensor_1", T0, T0 + 10, limit=2)) == 2
    assert await store.history("nope", T0, T0 + 10) == []


async def test_history_aggregation_matches_python(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    rng = random.Random(7)
    start = T0 + 17.5
    points: list[tuple[float, str, float | None]] = []
    futures = []
    for i in range(600):
        ts = start + i * 7.3
        temperature = round(rng.uniform(15, 25), 2)
        humidity = None if i % 50 == 0 else round(rng.uniform(30, 60), 1)
        points += [(ts, "temperature", temperature), (ts, "humidity", humidity)]
        futures.append(
            store.apply_state("sensor_1", StateUpdate({"temperature": temperature, "humidity": humidity}, ts=ts), ts)
        )
    assert all(await asyncio.gather(*futures))

    resolution = 300.0
    q_start, q_end = start + 100, start + 3500
    expected: dict[tuple[float, str], list[float]] = {}
    for ts, key, value in points:
        if q_start <= ts < q_end and value is not None:
            expected.setdefault(((ts // resolution) * resolution, key), []).append(value)
    result = await store.history("sensor_1", q_start, q_end, resolution=resolution)
    assert [(p.ts, p.key) for p in result] == sorted(expected)
    for point in result:
        values = expected[point.ts, point.key]
        assert point.count == len(values)
        assert point.value == pytest.approx(sum(values) / len(values))
        assert (point.minimum, point.maximum) == (min(values), max(values))
    only = await store.history("sensor_1", q_start, q_end, resolution=resolution, keys=["humidity"])
    assert {p.key for p in only} == {"humidity"}
    assert len(await store.history("sensor_1", q_start, q_end, resolution=resolution, limit=3)) == 3
    with pytest.raises(ValueError, match="resolution"):
        await store.history("sensor_1", q_start, q_end, resolution=0)


async def test_history_of_ten_thousand_points(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    futures = [
        store.apply_state("sensor_1", StateUpdate({"temperature": 20 + (i % 100) / 10}, ts=T0 + i), T0 + i)
        for i in range(10_000)
    ]
    assert all(await asyncio.gather(*futures))
    points = await store.history("sensor_1", T0, T0 + 10_000)
    assert len(points) == 10_000
    assert [p.ts for p in points] == [T0 + i for i in range(10_000)]
    hourly = await store.history("sensor_1", T0, T0 + 10_000, resolution=3600)
    assert sum(p.count for p in hourly) == 10_000


# --------------------------------------------------------------------------- events, offsets


async def test_event_log_offsets_and_homes(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    await store.apply_config(config(THERMOSTAT), T0)
    assert await store.set_device_home("thermo_1", "cabin")
    assert not await store.set_device_home("ghost", "cabin")
    futures: list[asyncio.Future[Any]] = []
    for i in range(40):
        device = "sensor_1" if i % 2 else "thermo_1"
        futures.append(store.apply_state(device, StateUpdate({"temperature": float(i)}), T0 + i))
    futures.append(store.record_device_event("sensor_1", DeviceEvent("button_press", {"count": 2}, T0), T0 + 50))
    await asyncio.gather(*futures)

    events = await store.events_since(0)
    offsets = [e.offset for e in events]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == len(offsets)
    assert await store.latest_offset() == offsets[-1]
    assert events[-1].type is EventType.DEVICE_EVENT
    assert events[-1].data == {"event": "button_press", "data": {"count": 2}, "ts": T0}
    # Resuming from the middle gives exactly the rest, in order.
    assert await store.events_since(offsets[10], limit=5) == events[11:16]
    cabin = await store.events_since(0, homes=["cabin"])
    assert cabin
    assert {e.device_id for e in cabin} == {"thermo_1"}
    assert all(e.home == "cabin" for e in cabin)
    assert await store.events_since(0, homes=[]) == []
    # The home is recorded when the event is written: moving the device later changes none of
    # them; the move itself is one more event for the old home (the device left it).
    assert await store.set_device_home("thermo_1", "default")
    after = await store.events_since(0, homes=["cabin"])
    assert after[: len(cabin)] == cabin
    assert [(e.type, e.device_id) for e in after[len(cabin) :]] == [(EventType.DEVICE_REMOVED, "thermo_1")]


async def test_latest_offset_empty(store: Store) -> None:
    assert await store.latest_offset() == 0
    assert await store.events_since(0) == []


# --------------------------------------------------------------------------- commands


async def test_command_lifecycle(store: Store) -> None:
    await store.apply_config(config(THERMOSTAT), T0)
    first = CommandRecord("c1", "thermo_1", "auth0|alice", {"target_temperature": 21.5}, CommandStatus.PENDING, T0, T0)
    second = CommandRecord("c2", "thermo_1", "auth0|bob", {"hvac_mode": "off"}, CommandStatus.PENDING, T0 + 5, T0 + 5)
    await asyncio.gather(store.create_command(first), store.create_command(second))
    assert await store.get_command("c1") == first
    assert await store.pending_commands(T0 + 1) == [first]
    assert await store.pending_commands(T0 + 10) == [first, second]

    acked = await store.update_command("c1", CommandStatus.ACKED, None, T0 + 2)
    assert acked is not None
    assert (acked.status, acked.updated_at, acked.values) == (CommandStatus.ACKED, T0 + 2, {"target_temperature": 21.5})
    assert await store.update_command("c1", CommandStatus.TIMED_OUT, None, T0 + 3) is None  # no longer pending
    assert await store.update_command("ghost", CommandStatus.ACKED, None, T0 + 3) is None
    failed = await store.update_command("c2", CommandStatus.FAILED, "not_supported", T0 + 6)
    assert failed is not None
    assert failed.reason == "not_supported"
    assert await store.get_command("c2") == failed
    assert await store.pending_commands(T0 + 100) == []
    assert await store.get_command("nope") is None

    commands = [e for e in await store.events_since(0) if e.type is EventType.COMMAND]
    assert [(e.data["id"], e.data["status"]) for e in commands] == [
        ("c1", "pending"),
        ("c2", "pending"),
        ("c1", "acked"),
        ("c2", "failed"),
    ]


# --------------------------------------------------------------------------- dead letters, grants


async def test_dead_letters_are_bounded(open_store: StoreFactory) -> None:
    store = await open_store(dead_letter_limit=5)
    futures = [
        store.add_dead_letter(f"thermo_bridge/d{i}/state", "invalid_json", f"bad {i}", b"x" * (i * 1000), T0 + i)
        for i in range(12)
    ]
    await asyncio.gather(*futures)
    await store.add_dead_letter("thermo_bridge/d12/state", "wrong_type", "m" * 5000, b"\x00\xff", T0 + 12)
    letters = await store.dead_letters()
    assert [d.topic for d in letters] == [f"thermo_bridge/d{i}/state" for i in range(12, 7, -1)]
    assert letters[0].payload == b"\x00\xff"
    assert len(letters[0].message) <= 1000
    assert letters[1].payload == b"x" * DEAD_LETTER_PAYLOAD_BYTES  # 11,000 bytes were truncated
    assert (letters[1].reason, letters[1].ts) == ("invalid_json", T0 + 11)
    assert len(await store.dead_letters(limit=2)) == 2


async def test_grants(store: Store) -> None:
    assert await store.get_grants("auth0|alice") == frozenset()
    await store.set_grants("auth0|alice", ["home-a", "home-b", "home-a"])
    await store.set_grants("auth0|bob", ["home-b"])
    assert await store.get_grants("auth0|alice") == {"home-a", "home-b"}
    await store.set_grants("auth0|alice", ["home-c"])  # replaces
    assert await store.all_grants() == {"auth0|alice": {"home-c"}, "auth0|bob": {"home-b"}}
    await store.set_grants("auth0|bob", [])
    assert await store.all_grants() == {"auth0|alice": {"home-c"}}


# --------------------------------------------------------------------------- retention


async def test_purge_before(store_url: str, store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    old = StateUpdate({"temperature": 10.0}, ts=T0 + 1, seq=1)
    await store.apply_state("sensor_1", old, T0 + 1)
    await store.apply_state("sensor_1", StateUpdate({"temperature": 11.0}, ts=T0 + 100, seq=2), T0 + 100)
    done = CommandRecord("c-old", "sensor_1", "u", {"hvac_mode": "off"}, CommandStatus.PENDING, T0, T0)
    waiting = CommandRecord("c-wait", "sensor_1", "u", {"hvac_mode": "off"}, CommandStatus.PENDING, T0, T0)
    await store.create_command(done)
    await store.create_command(waiting)
    await store.update_command("c-old", CommandStatus.ACKED, None, T0 + 2)

    newest = await store.latest_offset()
    deleted = await store.purge_before(T0 + 50)
    assert deleted >= 5  # history 1, events (config, state, 2 creates), dedupe key, 1 command
    assert [p.value for p in await store.history("sensor_1", 0, T0 + 1000)] == [11.0]
    kept = await store.events_since(0)
    # Everything older goes but the newest entry (the ack at T0 + 2): the log keeps its position.
    assert [e.offset for e in kept if e.ts < T0 + 50] == [newest]
    assert await store.latest_offset() == newest
    assert await store.earliest_offset() == kept[0].offset
    assert await store.get_command("c-old") is None
    assert await store.get_command("c-wait") is not None  # pending commands are never purged
    state = await store.get_state("sensor_1")
    assert state is not None
    assert state.values == {"temperature": 11.0}  # latest state is not history
    assert await store.purge_before(T0 + 50) == 0
    assert await raw_fetch(store_url, "SELECT count(*) FROM state_dedupe") == [(1,)]


async def test_retention_task_purges_in_the_background(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    await store.apply_state("sensor_1", StateUpdate({"temperature": 10.0}), T0)
    await store.apply_state("sensor_1", StateUpdate({"temperature": 11.0}), T0 + 3 * DAY)
    task = asyncio.create_task(run_retention(store, 2, 0.01, now=lambda: T0 + 3 * DAY + 1))
    try:

        async def purged() -> bool:
            return len(await store.history("sensor_1", 0, T0 + 4 * DAY)) == 1

        await wait_for(purged, what="the background purge")
        assert [p.value for p in await store.history("sensor_1", 0, T0 + 4 * DAY)] == [11.0]
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_retention_disabled_returns() -> None:
    class Untouchable(SQLiteStore):
        async def purge_before(self, ts: float) -> int:
            raise AssertionError("must not purge")

    await asyncio.wait_for(run_retention(Untouchable("unused.db"), 0, 60), 1)


# --------------------------------------------------------------------------- stats, URLs


async def test_stats(store: Store) -> None:
    await store.apply_config(config(SENSOR), T0)
    stats = await store.stats()
    assert stats["batches_total"] >= 1
    assert stats["ops_total"] >= 1
    assert stats["queue_depth"] == 0
    assert stats["last_commit_seconds"] > 0


def test_create_store_urls(tmp_path: Path) -> None:
    absolute = create_store(f"sqlite://{tmp_path}/a.db", retention_days=1, dead_letter_limit=1)
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == f"{tmp_path}/a.db"
    assert absolute.synchronous == "NORMAL"
    four_slashes = create_store(f"sqlite:///{tmp_path}/a.db", retention_days=1, dead_letter_limit=1)
    assert isinstance(four_slashes, SQLiteStore)
    assert four_slashes.path == f"{tmp_path}/a.db"
    relative = create_store("sqlite:data/b.db?synchronous=full", retention_days=1, dead_letter_limit=1)
    assert isinstance(relative, SQLiteStore)
    assert (relative.path, relative.synchronous) == ("data/b.db", "FULL")
    for bad, message in (
        ("mysql://x/y", "unsupported"),
        ("nothing", "no scheme"),
        ("sqlite:", "file path"),
        ("sqlite:a.db?journal=off", "unknown"),
        ("sqlite:a.db?synchronous=off", "synchronous"),
    ):
        with pytest.raises(StoreUrlError, match=message):
            create_store(bad, retention_days=1, dead_letter_limit=1)
    with pytest.raises(ValueError, match="needs a file"):
        create_store("sqlite::memory:", retention_days=1, dead_letter_limit=1)


async def test_sqlite_store_creates_parent_folder_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "data" / "store.db"
    store = create_store(f"sqlite://{path}", retention_days=1, dead_letter_limit=1)
    await store.open()
    try:
        await store.apply_config(config(SENSOR), T0)
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


# --------------------------------------------------------------------------- several PostgreSQL replicas


async def test_postgres_replicas_keep_offsets_ordered_and_state_merged(pg_dsn: str) -> None:
    """Two stores on one database write at once; a reader tailing the log never misses a row."""
    stores = [create_store(pg_dsn, retention_days=30, dead_letter_limit=100) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        await stores[0].apply_config(config(SENSOR), T0)
        seen: list[int] = []
        done = asyncio.Event()

        async def tail() -> None:
            offset = 0
            while True:
                finished = done.is_set()
                batch = await stores[1].events_since(offset, limit=10_000)
                seen.extend(e.offset for e in batch)
                if batch:
                    offset = batch[-1].offset
                if finished and not batch:
                    return
                await asyncio.sleep(0)

        async def write(store: Store, key: str, base: float) -> None:
            for round_ in range(20):
                futures = [
                    store.apply_state("sensor_1", StateUpdate({key: base + i}, ts=T0 + round_ * 100 + i), T0)
                    for i in range(50)
                ]
                assert all(await asyncio.gather(*futures))

        reader = asyncio.create_task(tail())
        await asyncio.gather(write(stores[0], "temperature", 0.0), write(stores[1], "humidity", 10.0))
        done.set()
        await reader

        everything = [e.offset for e in await stores[0].events_since(0, limit=100_000)]
        assert len(everything) == 1 + 2 * 20 * 50
        assert seen == everything  # the tailing reader saw every offset, in order, none skipped
        state = await stores[1].get_state("sensor_1")
        assert state is not None
        assert state.values == {"temperature": 49.0, "humidity": 59.0}
        assert state.device_ts == T0 + 19 * 100 + 49
        assert len(await stores[0].history("sensor_1", T0, T0 + 10_000)) == 2000
        # A per-session sequence cache would break the commit-order guarantee.
        cache = await raw_fetch(
            pg_dsn,
            "SELECT cache_size FROM pg_sequences WHERE schemaname = current_schema() AND sequencename LIKE 'events%'",
        )
        assert cache == [(1,)]
    finally:
        for store in stores:
            await store.close()


async def test_postgres_replicas_dedupe_the_same_redelivery(pg_dsn: str) -> None:
    stores = [create_store(pg_dsn, retention_days=30, dead_letter_limit=100) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        await stores[0].apply_config(config(SENSOR), T0)
        updates = [StateUpdate({"temperature": float(i)}, seq=i) for i in range(200)]
        results = await asyncio.gather(
            *(store.apply_state("sensor_1", update, T0) for update in updates for store in stores)
        )
        assert sum(results) == 200  # each update applied by exactly one replica
        assert len(await stores[0].history("sensor_1", 0, T0 + 1)) == 200
    finally:
        for store in stores:
            await store.close()


async def test_postgres_store_survives_killed_connections(pg_dsn: str) -> None:
    """The server drops every connection of the store (failover, restart): writes carry on."""
    import asyncpg  # noqa: PLC0415

    dsn = f"{pg_dsn}&application_name=tb_store_victim"
    store = create_store(dsn, retention_days=30, dead_letter_limit=100)
    await store.open()
    admin = await asyncpg.connect(pg_dsn)
    try:
        await store.apply_config(config(SENSOR), T0)
        for round_ in range(3):
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'tb_store_victim' AND pid <> pg_backend_pid()"
            )
            assert killed >= 1
            if round_ == 1:  # reads retry too
                assert (await store.get_state("sensor_1")) is not None
            futures = [
                store.apply_state("sensor_1", StateUpdate({"temperature": float(i)}, seq=round_ * 100 + i), T0 + i)
                for i in range(100)
            ]
            assert all(await asyncio.gather(*futures))
        assert len(await store.history("sensor_1", 0, T0 + 1000)) == 300
        assert (await store.stats())["retried_batches_total"] >= 1
    finally:
        await admin.close()
        await store.close()
