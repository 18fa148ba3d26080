"""Shared pieces of the add-on server benchmarks: devices, a lean publisher, store counts, machine.

The publisher speaks raw MQTT 3.1.1 over one socket with pre-encoded packets (no paho):
on a 2-core machine a paho publisher would take a core of its own, and it only runs while
no consumer is being measured anyway (the broker queue is pre-loaded, see server_ingest.py).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# THERMO_BRIDGE_BENCH_ADDON: import the server and protocol packages from another folder
# (a scratch copy with a candidate change) to compare it against the floor in the same way.
ADDON = Path(os.environ.get("THERMO_BRIDGE_BENCH_ADDON") or REPO / "addon")
for _path in (str(REPO), str(ADDON)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from _machine import cpu_model, git_head, mosquitto_version, ram  # noqa: E402

from tests.mqtt_wire import connect_packet, publish_packet  # noqa: E402
from thermo_bridge_protocol import DeviceConfig, parse_config  # noqa: E402
from thermo_bridge_sim import devices  # noqa: E402

BASE = "thermo_bridge"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_DSN_ENV = "THERMO_BRIDGE_PG_DSN"


def device_id(index: int) -> str:
    """The id of bench thermostat ``index`` (from 0)."""
    return f"bench_t_{index:04d}"


def wire_config(index: int) -> devices.WireConfig:
    """Bench thermostat ``index`` with the two measurements its state reports carry."""
    return devices.bench_thermostat(device_id(index), index, ("temperature", "humidity"))


def device_config(index: int) -> DeviceConfig:
    """``wire_config(index)`` as the protocol's model (what the store is given)."""
    return parse_config(devices.encode(wire_config(index)))


_STATE = b'{"temperature":%.1f,"humidity":%d,"hvac_action":"%s","ts":%.3f,"seq":%d}'


def state_payload(seq: int, ts: float) -> bytes:
    """A state report shaped like the simulator's load mode (~90 bytes, two history values)."""
    return _STATE % (18.0 + (seq % 50) / 10, 35 + seq % 30, b"heating" if seq % 2 else b"idle", ts, seq)


# --------------------------------------------------------------------------- raw MQTT 3.1.1 publisher


class RawPublisher:
    """One MQTT 3.1.1 connection that sends pre-encoded QoS 1 PUBLISHes in windows and counts PUBACKs."""

    def __init__(self, host: str, port: int, client_id: str = "") -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client_id = client_id or f"bench-pub-{uuid.uuid4().hex[:8]}"
        self.sock.sendall(connect_packet(client_id, keepalive=0))
        connack = self._read_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"CONNACK refused: {connack!r}")
        self._buf = b""

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def publish_all(self, messages: list[tuple[str, bytes]], *, retain: bool = False, window: int = 2000) -> int:
        """Publish every (topic, payload) with QoS 1; return how many the broker acknowledged."""
        acked = 0
        for start in range(0, len(messages), window):
            chunk = messages[start : start + window]
            pending = set()
            packets = []
            for offset, (topic, payload) in enumerate(chunk):
                packet_id = offset + 1
                pending.add(packet_id)
                packets.append(publish_packet(topic, payload, packet_id, retain=retain))
            self.sock.sendall(b"".join(packets))
            while pending:
                data = self._buf + self.sock.recv(65536)
                if len(data) == len(self._buf):
                    raise ConnectionError("broker closed the connection")
                pos = 0
                while len(data) - pos >= 4:
                    if data[pos] != 0x40 or data[pos + 1] != 2:
                        raise RuntimeError(f"unexpected packet {data[pos : pos + 4]!r}")
                    packet_id = struct.unpack_from("!H", data, pos + 2)[0]
                    if packet_id in pending:
                        pending.discard(packet_id)
                        acked += 1
                    pos += 4
                self._buf = data[pos:]
        return acked

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")
        self.sock.close()


# --------------------------------------------------------------------------- PostgreSQL


def pg_dsn() -> str:
    """The DSN from THERMO_BRIDGE_PG_DSN, or this machine's default."""
    return os.environ.get(PG_DSN_ENV) or DEFAULT_PG_DSN


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` with ``search_path`` set (the store passes it as a server setting)."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"] + [("search_path", schema)]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def pg_problem() -> str | None:
    """Why PostgreSQL at ``pg_dsn()`` cannot be used, or None when it answers."""
    try:
        import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415

        conn = await asyncpg.connect(pg_dsn(), timeout=5)
        await conn.close()
    except Exception as err:  # any failure is reported to the user as is
        return f"{type(err).__name__}: {err}"
    return None


async def pg_create_schema(dsn: str, prefix: str) -> str:
    """A fresh, empty schema (so parallel or earlier runs never collide); returns its name."""
    import asyncpg  # noqa: PLC0415

    schema = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return schema


async def pg_drop_schema(dsn: str, schema: str) -> None:
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


# --------------------------------------------------------------------------- what the store holds

_COUNT_SQLITE = (
    "SELECT (SELECT count(*) FROM (SELECT DISTINCT device_id, json_extract(data, '$.seq') FROM events"
    " WHERE type = 'state')), (SELECT count(*) FROM events WHERE type = 'state'),"
    " (SELECT count(*) FROM history)"
)
_COUNT_PG = (
    "SELECT (SELECT count(*) FROM (SELECT DISTINCT device_id, data->>'seq' FROM events WHERE type = 'state') d),"
    " (SELECT count(*) FROM events WHERE type = 'state'), (SELECT count(*) FROM history)"
)


def count_sqlite(path: str) -> dict[str, int]:
    """Distinct (device, seq) state reports, state events and history rows in a SQLite store file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        distinct, events, history = conn.execute(_COUNT_SQLITE).fetchone()
    finally:
        conn.close()
    return {"distinct_reports": distinct, "state_events": events, "history_rows": history}


async def count_pg(dsn: str, schema: str) -> dict[str, int]:
    """The same counts in a PostgreSQL schema."""
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'SET search_path TO "{schema}"')
        row = await conn.fetchrow(_COUNT_PG)
    finally:
        await conn.close()
    assert row is not None
    return {"distinct_reports": row[0], "state_events": row[1], "history_rows": row[2]}


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    pg = "unknown"
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["psql", pg_dsn(), "-Atc", "SHOW server_version"], capture_output=True, text=True, timeout=5, check=False
        )
        pg = out.stdout.strip() or "unknown"
    head, dirty = git_head("addon")
    code = f"{head}{' + uncommitted changes under addon/' if dirty else ''}"
    if ADDON != REPO / "addon":
        code += f" (server and protocol imported from {ADDON})"
    return {
        "code (git)": code,
        "cpus (nproc)": str(os.cpu_count()),
        "cpu": cpu_model(),
        "ram": ram(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "paho-mqtt": importlib.metadata.version("paho-mqtt"),
        "asyncpg": importlib.metadata.version("asyncpg"),
        "sqlite": sqlite3.sqlite_version,
        "broker": mosquitto_version(),
        "postgresql": pg,
    }


def now_iso() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def config_messages(count: int) -> list[tuple[str, bytes]]:
    """Every device's retained config."""
    return [(f"{BASE}/{device_id(i)}/config", devices.encode(wire_config(i))) for i in range(count)]


def state_messages(devices: int, count: int, first_seq: int) -> list[tuple[str, bytes]]:
    """``count`` state reports round-robin over the devices, each with a per-device unique ``seq``."""
    ts = time.time()
    out = []
    for i in range(count):
        dev = i % devices
        seq = first_seq + i // devices
        out.append((f"{BASE}/{device_id(dev)}/state", state_payload(seq, ts + i * 1e-3)))
    return out


def dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
