"""Shared pieces of the fault tests: a counting load publisher, an SSE reader and the store's counts.

The publisher speaks raw MQTT 3.1.1 (QoS 1) from a thread of its own and records which
reports the broker acknowledged: a report the broker acknowledged is one the server must end
up storing, exactly once, whatever failed in between. It reconnects by itself when the broker
goes away; reports in flight then are "unconfirmed" (the broker may or may not have them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Iterable
from typing import Any

import aiohttp

from tests.mqtt_wire import connect_packet, publish_packet
from thermo_bridge_server.store.base import EventType, Store
from thermo_bridge_sim import devices

BASE = "thermo_bridge"


def sensor_config(device_id: str) -> bytes:
    """A sensor reporting temperature and humidity, in the protocol's wire form."""
    return devices.encode(
        devices.sensor(device_id, name=device_id, measurements=devices.measurements("temperature", "humidity"))
    )


def report(seq: int) -> bytes:
    return b'{"temperature":%.1f,"humidity":%d,"ts":%.3f,"seq":%d}' % (
        15 + (seq % 100) / 10,
        seq % 100,
        time.time(),
        seq,
    )


class LoadPublisher:
    """State reports at ``rate`` per second round-robin over ``device_ids``, QoS 1, counted.

    ``acked`` holds the (device, seq) the broker acknowledged; ``unconfirmed`` those in flight
    when a connection dropped. ``publish_retained`` sends the devices' configs (and
    availability) first and waits for the broker's acknowledgements.
    """

    def __init__(self, host: str, port: int, device_ids: Iterable[str], rate: float, client_id: str = "") -> None:
        self.host = host
        self.port = port
        self.devices = list(device_ids)
        self.rate = rate
        self.client_id = client_id or f"tb-load-{id(self):x}"
        self.acked: set[tuple[str, int]] = set()
        self.unconfirmed: set[tuple[str, int]] = set()
        self.sent = 0
        self.connects = 0
        self._seq = dict.fromkeys(self.devices, 0)
        self._pending: dict[int, tuple[str, int]] = {}
        self._next_id = 0
        self._sock: socket.socket | None = None
        self._buf = b""
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ connection
    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(self.client_id, keepalive=60))
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                raise ConnectionError("broker closed the connection before CONNACK")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"CONNACK refused: {connack!r}")
        sock.settimeout(0)
        self._sock, self._buf = sock, b""
        self.connects += 1

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        with self._lock:
            self.unconfirmed.update(self._pending.values())
            self._pending.clear()

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._pending:
                return self._next_id
        raise RuntimeError("65535 publishes in flight")

    def _send(self, topic: str, payload: bytes, key: tuple[str, int], retain: bool = False) -> None:
        assert self._sock is not None
        packet_id = self._packet_id()
        with self._lock:
            self._pending[packet_id] = key
        self._sock.setblocking(True)
        try:
            self._sock.sendall(publish_packet(topic, payload, packet_id, retain=retain))
        finally:
            self._sock.setblocking(False)

    def _read_acks(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            raise ConnectionError("broker closed the connection")
        data = self._buf + data
        pos = 0
        while len(data) - pos >= 4:
            if data[pos] != 0x40 or data[pos + 1] != 2:
                raise ConnectionError(f"unexpected packet {data[pos : pos + 4]!r}")
            packet_id = struct.unpack_from("!H", data, pos + 2)[0]
            with self._lock:
                key = self._pending.pop(packet_id, None)
                if key is not None and key[1] > 0:
                    self.acked.add(key)
            pos += 4
        self._buf = data[pos:]

    # ------------------------------------------------------------------ API
    @property
    def in_flight(self) -> int:
        """Reports sent whose acknowledgement from the broker has not arrived yet."""
        return len(self._pending)

    def publish_retained(self, messages: Iterable[tuple[str, bytes]], timeout: float = 30.0) -> None:
        """Retained messages (configs, availability), acknowledged before this returns."""
        if self._sock is None:
            self._connect()
        for topic, payload in messages:
            self._send(topic, payload, (topic, 0), retain=True)
        deadline = time.monotonic() + timeout
        while self._pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._pending)} retained messages not acknowledged")
            self._read_acks()
            time.sleep(0.005)

    def configs(self) -> list[tuple[str, bytes]]:
        return [(f"{BASE}/{d}/config", sensor_config(d)) for d in self.devices] + [
            (f"{BASE}/{d}/availability", b"online") for d in self.devices
        ]

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="load-publisher", daemon=True)
        self._thread.start()

    def pause(self, paused: bool = True) -> None:
        """Stop (or resume) publishing new reports; acknowledgements are still read."""
        if paused:
            self._paused.set()
        else:
            self._paused.clear()

    def _run(self) -> None:
        t0 = time.monotonic()
        due_sent = 0
        rr = 0
        while not self._stop.is_set():
            if self._sock is None:
                try:
                    self._connect()
                except OSError:
                    time.sleep(0.1)
                    continue
            try:
                self._read_acks()
                if self._paused.is_set():
                    t0, due_sent = time.monotonic(), 0
                else:
                    due = int((time.monotonic() - t0) * self.rate) - due_sent
                    for _ in range(max(0, min(due, 200))):
                        device = self.devices[rr]
                        rr = (rr + 1) % len(self.devices)
                        self._seq[device] += 1
                        seq = self._seq[device]
                        self._send(f"{BASE}/{device}/state", report(seq), (device, seq))
                        self.sent += 1
                        due_sent += 1
            except OSError:
                self._drop()
                continue
            time.sleep(0.002)

    def stop(self, wait_acks: float = 10.0) -> None:
        """Stop publishing; wait for the broker's acknowledgements of what is in flight, then disconnect."""
        self.pause()
        deadline = time.monotonic() + wait_acks
        while self._pending and time.monotonic() < deadline and self._thread is not None:
            time.sleep(0.01)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.setblocking(True)
                self._sock.sendall(b"\xe0\x00")
        self._drop()


async def stored_reports(store: Store, device_ids: Iterable[str]) -> list[tuple[str, int]]:
    """Every stored state report of these devices as (device, seq), in log order (duplicates kept)."""
    wanted = set(device_ids)
    out: list[tuple[str, int]] = []
    offset = 0
    while True:
        batch = await store.events_since(offset, limit=5000)
        if not batch:
            return out
        out.extend(
            (e.device_id, int(e.data["seq"])) for e in batch if e.type is EventType.STATE and e.device_id in wanted
        )
        offset = batch[-1].offset


async def log_state_offsets(store: Store, device_ids: Iterable[str]) -> list[int]:
    """The offsets of these devices' state events in the log."""
    wanted = set(device_ids)
    out: list[int] = []
    offset = 0
    while True:
        batch = await store.events_since(offset, limit=5000)
        if not batch:
            return out
        out.extend(e.offset for e in batch if e.type is EventType.STATE and e.device_id in wanted)
        offset = batch[-1].offset


class SseStream:
    """An SSE connection read into records (``event``, ``id``, ``data``); keep-alive comments counted."""

    def __init__(self, response: aiohttp.ClientResponse, session: aiohttp.ClientSession) -> None:
        self.response = response
        self.session = session
        self.records: list[dict[str, Any]] = []
        self.ended = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, base_url: str, token: str, query: str = "", last_event_id: str | None = None) -> SseStream:
        session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            response = await session.get(f"{base_url}/api/v1/events?{query}", headers=headers)
            assert response.status == 200, await response.text()
        except BaseException:
            await session.close()
            raise
        return cls(response, session)

    async def _read(self) -> None:
        record: dict[str, Any] = {}
        try:
            async for raw in self.response.content:
                line = raw.decode().rstrip("\n")
                if not line:
                    if record:
                        self.records.append(record)
                    record = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(": ")
                    record[field] = json.loads(value) if field == "data" else value
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError):
            pass
        finally:
            self.ended.set()

    def of(self, event: str) -> list[dict[str, Any]]:
        return [r["data"] for r in self.records if r.get("event") == event]

    @property
    def last_id(self) -> str | None:
        ids = [r["id"] for r in self.records if "id" in r]
        return ids[-1] if ids else None

    async def close(self) -> None:
        self.response.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.session.close()
