"""One consumer process of bench/server_ingest.py: the bare paho floor or our ingest.

Driven over stdin/stdout, one JSON object per line:

* ``--phase register``: create the persistent session (connect, subscribe, for our ingest
  also take the retained configs into the store), disconnect, print ``{"registered": ...}``
  and exit. The broker then queues every state message for this session.
* ``--phase drain``: set everything up that does not touch the broker (open the store),
  print ``{"ready": true}``, wait for ``go`` on stdin, then connect and consume. Every 50 ms
  it prints ``{"n": <state messages done>, "t_last": <monotonic of the last one>}`` until
  ``stop`` arrives; then it shuts down like the server does and prints the final
  ``{"final": true, ...}`` line.

"Done" means, for the floor, received and ``json.loads``-ed (paho acknowledges QoS 1
itself); for our ingest, committed by the store (its batch is durable, so the QoS 1
acknowledgement goes out right then).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import logging
import os
import pstats
import sys
import threading
import time
from typing import Any

from _server_common import BASE, dump

WAKE = 0.05


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(dump(obj) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    """CPU time of this whole process (every thread)."""
    return time.process_time()


# --------------------------------------------------------------------------- the floor


def run_floor(args: argparse.Namespace) -> None:
    """A bare paho subscriber (MQTT v5 persistent session, QoS 1) that only decodes JSON."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: PLC0415
    from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
    from paho.mqtt.properties import Properties  # noqa: PLC0415

    connected = threading.Event()
    subscribed = threading.Event()
    state = {"n": 0, "t_last": 0.0, "t_first": 0.0}
    seen: set[tuple[str, int]] = set()

    def on_connect(client: mqtt.Client, userdata: object, flags: Any, reason: Any, props: Any) -> None:
        connected.set()

    def on_subscribe(client: mqtt.Client, userdata: object, mid: int, reasons: Any, props: Any) -> None:
        subscribed.set()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        data = json.loads(message.payload)
        seen.add((message.topic, data["seq"]))
        now = time.monotonic()
        if not state["n"]:
            state["t_first"] = now
        state["n"] += 1
        state["t_last"] = now

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 65535  # the same as our transport asks for

    def connect() -> float:
        t0 = time.monotonic()
        client.connect(args.host, args.port, keepalive=60, clean_start=False, properties=props)
        client.loop_start()
        if not connected.wait(10):
            raise RuntimeError("floor: no CONNACK")
        sock = client.socket()
        import socket  # noqa: PLC0415

        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return t0

    if args.phase == "register":
        connect()
        client.subscribe(f"{BASE}/+/state", qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("floor: no SUBACK")
        client.disconnect()
        client.loop_stop()
        emit({"registered": True})
        return

    gc.collect()
    gc.freeze()
    emit({"ready": True})
    if sys.stdin.readline().strip() != "go":
        return
    cpu0 = cpu_seconds()
    t_connect = connect()
    stop = threading.Event()

    def read_stop() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=read_stop, daemon=True).start()
    while not stop.wait(WAKE):
        emit({"n": state["n"], "t_last": state["t_last"]})
    cpu = cpu_seconds() - cpu0
    client.disconnect()
    client.loop_stop()
    emit(
        {
            "final": True,
            "n": state["n"],
            "distinct": len(seen),
            "t_connect": t_connect,
            "t_first": state["t_first"],
            "t_last": state["t_last"],
            "cpu": cpu,
        }
    )


# --------------------------------------------------------------------------- our ingest


def write_profile_text(profiler: cProfile.Profile, path: str) -> None:
    """The 40 most expensive functions by own time, next to the binary dump."""
    with open(path, "w") as out:
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(40)


async def run_ingest(args: argparse.Namespace) -> None:
    """Store + MqttTransport + Ingest, started and stopped in the server's own order (app.py)."""
    from thermo_bridge_server.config import MqttSettings  # noqa: PLC0415
    from thermo_bridge_server.ingest import Ingest  # noqa: PLC0415
    from thermo_bridge_server.mqtt import MqttTransport  # noqa: PLC0415
    from thermo_bridge_server.store import create_store  # noqa: PLC0415

    settings = MqttSettings(
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        base_topic=BASE,
        shared_group=args.shared_group or None,
        session_expiry=3600,
    )
    store = create_store(args.store, retention_days=365, dead_letter_limit=1000)
    await store.open()
    transport = MqttTransport(settings)
    ingest = Ingest(store, transport, base_topic=BASE, command_timeout=10.0, shared_group=settings.shared_group)

    if args.phase == "register":
        await transport.connect(wait_seconds=10)
        await ingest.start()
        deadline = time.monotonic() + 30
        while args.expect_devices and time.monotonic() < deadline:
            if len(await store.list_devices()) >= args.expect_devices:
                break
            await asyncio.sleep(0.05)
        devices = len(await store.list_devices())
        await ingest.stop()
        await store.close()
        await transport.flush_acks()
        await transport.disconnect()
        emit({"registered": True, "devices": devices})
        return

    counts = {"n": 0, "t_last": 0.0, "t_first": 0.0, "failed": 0}
    original = store.apply_state

    def done(fut: asyncio.Future[bool]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            counts["failed"] += 1
            return
        now = time.monotonic()
        if not counts["n"]:
            counts["t_first"] = now
        counts["n"] += 1
        counts["t_last"] = now

    def counting_apply_state(*a: Any) -> asyncio.Future[bool]:
        fut = original(*a)
        fut.add_done_callback(done)
        return fut

    store.apply_state = counting_apply_state  # type: ignore[method-assign,assignment]

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    go = asyncio.Event()

    def read_stdin() -> None:
        for line in sys.stdin:
            word = line.strip()
            if word == "go":
                loop.call_soon_threadsafe(go.set)
            elif word == "stop":
                loop.call_soon_threadsafe(stop.set)
                return
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read_stdin, daemon=True).start()
    gc.collect()
    gc.freeze()  # as app.py does after start-up
    emit({"ready": True})
    await go.wait()
    profiler = cProfile.Profile() if args.profile else None
    cpu0 = cpu_seconds()
    t_connect = time.monotonic()
    if profiler is not None:
        profiler.enable()
    await transport.connect(wait_seconds=10)
    await ingest.start()
    while not stop.is_set():
        emit({"n": counts["n"], "t_last": counts["t_last"]})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), WAKE)
    if profiler is not None:
        profiler.disable()
    cpu = cpu_seconds() - cpu0
    store_stats = dict(await store.stats())
    await ingest.stop()
    await store.close()
    await transport.flush_acks()
    await transport.disconnect()
    if profiler is not None:
        profiler.dump_stats(args.profile)
        write_profile_text(profiler, args.profile + ".txt")
    emit(
        {
            "final": True,
            "n": counts["n"],
            "failed": counts["failed"],
            "t_connect": t_connect,
            "t_first": counts["t_first"],
            "t_last": counts["t_last"],
            "cpu": cpu,
            "ingest": ingest.stats(),
            "transport": transport.stats_dict(),
            "store": store_stats,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=("floor", "ingest"), required=True)
    parser.add_argument("--phase", choices=("register", "drain"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--store", default="")
    parser.add_argument("--shared-group", default="")
    parser.add_argument("--expect-devices", type=int, default=0)
    parser.add_argument("--profile", default="", help="write a cProfile of the drain to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if args.kind == "floor":
        run_floor(args)
    else:
        asyncio.run(run_ingest(args))


if __name__ == "__main__":
    main()
