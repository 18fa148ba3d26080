"""Load generators for bench/fleet.py and bench/soak.py, each run as its own process.

``publish``: state reports at ``--rate`` per second round-robin over ``--devices`` bench
thermostats, QoS 1 over one raw MQTT 3.1.1 socket (one connection speaks for every device).
Each report carries its wall-clock publish time as the device ``ts`` and a per-device
``seq``, so a client measures latency from the event alone. Prints ``{"sent", "acked",
"per_device"}`` when told to stop (a line on stdin) or when ``--seconds`` have passed.

``clients``: ``--ws`` WebSocket clients, client ``i`` subscribed to the ``state`` events of
devices ``i*k … i*k+k-1`` (``--per-client k``, modulo the device count), so together they
cover the fleet once; ``--sse`` SSE streams, each on ``--sse-devices`` devices; and REST
requests at ``--rest-rate`` per second (a device's state, a page of the device list). Every
``--interval`` seconds it prints one line of figures for that interval (events, latency
p50/p99 in ms, REST p50/p99, errors); when told to stop it prints the distinct (device, seq)
received per device, for the loss count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import socket
import struct
import sys
import threading
import time
from typing import Any

HERE = __import__("pathlib").Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _server_common import BASE, device_id, publish_packet  # noqa: E402

CONNECT_CONCURRENCY = 16


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


# --------------------------------------------------------------------------- publisher


def publish(args: argparse.Namespace) -> None:
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", 12) + b"fleet-loader"
    sock.sendall(b"\x10" + bytes([len(body)]) + body)
    assert sock.recv(4)[:1] == b"\x20"
    sock.setblocking(False)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    topics = [f"{BASE}/{device_id(i)}/state" for i in range(args.devices)]
    seqs = [0] * args.devices
    pending: dict[int, int] = {}
    acked = sent = 0
    next_id = 0
    buf = b""
    t0 = time.monotonic()
    end = t0 + args.seconds if args.seconds else float("inf")
    emit({"started": True})
    while not stop.is_set() and time.monotonic() < end:
        due = int((time.monotonic() - t0) * args.rate) - sent
        out = []
        for _ in range(max(0, min(due, 2000))):
            dev = sent % args.devices
            seqs[dev] += 1
            next_id = next_id % 65535 + 1
            while next_id in pending:
                next_id = next_id % 65535 + 1
            pending[next_id] = dev
            payload = b'{"temperature":%.1f,"humidity":%d,"hvac_action":"idle","ts":%.6f,"seq":%d}' % (
                18.0 + (seqs[dev] % 50) / 10,
                35 + seqs[dev] % 30,
                time.time(),
                seqs[dev],
            )
            out.append(publish_packet(topics[dev], payload, next_id))
            sent += 1
        if out:
            sock.setblocking(True)
            sock.sendall(b"".join(out))
            sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            data = buf + sock.recv(1 << 20)
            pos = 0
            while len(data) - pos >= 4:
                packet_id = struct.unpack_from("!H", data, pos + 2)[0]
                if pending.pop(packet_id, None) is not None:
                    acked += 1
                pos += 4
            buf = data[pos:]
        time.sleep(0.002)
    deadline = time.monotonic() + 10
    while pending and time.monotonic() < deadline:
        with contextlib.suppress(BlockingIOError):
            data = buf + sock.recv(1 << 20)
            pos = 0
            while len(data) - pos >= 4:
                if pending.pop(struct.unpack_from("!H", data, pos + 2)[0], None) is not None:
                    acked += 1
                pos += 4
            buf = data[pos:]
        time.sleep(0.01)
    sock.setblocking(True)
    sock.sendall(b"\xe0\x00")
    sock.close()
    emit({"sent": sent, "acked": acked, "unacked": len(pending), "per_device": seqs})


# --------------------------------------------------------------------------- clients


class Figures:
    """What the clients saw in the current interval, and in total."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.rest: list[float] = []
        self.errors = 0
        self.closed = 0
        self.received: dict[str, set[int]] = {}

    def event(self, event: dict[str, Any], now: float) -> None:
        data = event.get("data", {})
        ts = data.get("ts")
        if ts is not None:
            self.latencies.append((now - ts) * 1000)
        seq = data.get("seq")
        if seq is not None:
            self.received.setdefault(event["device_id"], set()).add(seq)

    def interval(self) -> dict[str, Any]:
        out = {
            "events": len(self.latencies),
            "p50": percentile(self.latencies, 50),
            "p99": percentile(self.latencies, 99),
            "rest": len(self.rest),
            "rest_p50": percentile(self.rest, 50),
            "rest_p99": percentile(self.rest, 99),
            "errors": self.errors,
            "closed": self.closed,
        }
        self.latencies, self.rest = [], []
        return out


async def ws_client(
    index: int, args: argparse.Namespace, session: Any, gate: asyncio.Semaphore, figures: Figures
) -> Any:
    import aiohttp  # noqa: PLC0415

    share = [device_id((index * args.per_client + k) % args.devices) for k in range(args.per_client)]
    async with gate:
        ws = await session.ws_connect(f"ws://127.0.0.1:{args.http_port}/api/v1/ws", max_msg_size=0, heartbeat=None)
        await ws.receive_json()
        await ws.send_json({"type": "auth", "access_token": args.token})
        ok = await ws.receive_json()
        if ok.get("type") != "auth_ok":
            raise SystemExit(f"client {index}: {ok}")
        await ws.send_json({"id": 1, "type": "subscribe", "devices": share, "events": ["state"], "snapshot": False})
        while (result := await ws.receive_json()).get("type") != "result":
            pass
        if not result.get("success"):
            raise SystemExit(f"client {index}: {result}")

    async def read() -> None:
        loads = json.loads
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                data = loads(msg.data)
                if data.get("type") == "event":
                    figures.event(data["event"], time.time())
        figures.closed += 1

    asyncio.get_running_loop().create_task(read())
    return ws


async def sse_client(index: int, args: argparse.Namespace, session: Any, figures: Figures) -> None:
    first = (index * 97) % args.devices
    share = ",".join(device_id((first + k) % args.devices) for k in range(args.sse_devices))
    url = f"http://127.0.0.1:{args.http_port}/api/v1/events?events=state&devices={share}"
    async with session.get(url, headers={"Authorization": f"Bearer {args.token}"}) as resp:
        event = ""
        async for raw in resp.content:
            line = raw.decode()
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: ") and event == "state":
                figures.event(json.loads(line[6:]), time.time())
    figures.closed += 1


async def rest_load(args: argparse.Namespace, session: Any, figures: Figures, stop: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {args.token}"}
    base = f"http://127.0.0.1:{args.http_port}/api/v1"
    i = 0
    while not stop.is_set():
        i += 1
        path = f"/devices/{device_id(i * 7919 % args.devices)}/state" if i % 4 else "/devices?limit=100"
        started = time.perf_counter()
        try:
            async with session.get(base + path, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    figures.errors += 1
        except Exception:
            figures.errors += 1
        figures.rest.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(1 / args.rest_rate)


async def clients(args: argparse.Namespace) -> None:
    import aiohttp  # noqa: PLC0415

    figures = Figures()
    stop = asyncio.Event()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    # No total timeout: aiohttp's default (5 minutes) would end every SSE stream mid-soak.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        sockets = await asyncio.gather(*(ws_client(i, args, session, gate, figures) for i in range(args.ws)))
        streams = [
            asyncio.get_running_loop().create_task(sse_client(i, args, session, figures)) for i in range(args.sse)
        ]
        rest = (
            [asyncio.get_running_loop().create_task(rest_load(args, session, figures, stop))] if args.rest_rate else []
        )
        emit({"ready": len(sockets), "sse": len(streams)})
        loop = asyncio.get_running_loop()
        told = loop.run_in_executor(None, sys.stdin.readline)
        figures.interval()  # what arrived while connecting is not part of the first interval
        while not told.done():
            await asyncio.wait([told], timeout=args.interval)
            emit({"interval": figures.interval()})
        stop.set()
        emit({"received": {dev: len(seqs) for dev, seqs in figures.received.items()}})
        for task in streams + rest:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), *streams, *rest, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    pub = sub.add_parser("publish")
    pub.add_argument("--port", type=int, required=True)
    pub.add_argument("--devices", type=int, required=True)
    pub.add_argument("--rate", type=float, required=True)
    pub.add_argument("--seconds", type=float, default=0.0)
    cli = sub.add_parser("clients")
    cli.add_argument("--http-port", type=int, required=True)
    cli.add_argument("--token", required=True)
    cli.add_argument("--devices", type=int, required=True)
    cli.add_argument("--ws", type=int, default=0)
    cli.add_argument("--per-client", type=int, default=10)
    cli.add_argument("--sse", type=int, default=0)
    cli.add_argument("--sse-devices", type=int, default=20)
    cli.add_argument("--rest-rate", type=float, default=0.0)
    cli.add_argument("--interval", type=float, default=60.0)
    args = parser.parse_args()
    if args.mode == "publish":
        publish(args)
    else:
        gc.collect()
        gc.freeze()
        asyncio.run(clients(args))


if __name__ == "__main__":
    main()
