"""The receiving end of bench/realtime_latency.py, run as its own process: it records when each state arrives.

Kinds (``--kind``):

- ``floor``: an MQTT-over-WebSocket client on mosquitto's own WebSocket listener (paho,
  ``transport="websockets"``), subscribed to every device's state topic: the broker alone.
- ``ours``: a WebSocket client of the add-on server (``/api/v1/ws``, auth, ``subscribe`` to
  ``state`` events).
- ``ha``: a client of Home Assistant's WebSocket API (``subscribe_entities`` on the devices'
  temperature sensors, the way HA's frontend follows entities).

It prints ``{"ready": true}`` once subscribed, then records ``[device, temperature,
t_monotonic, t_wall, server_ts]`` per state until a line arrives on stdin, prints the records
as one JSON line and exits. The garbage collector is off while it listens, so its own pauses
never count as the server's latency (it allocates little and lives for seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import sys
import threading
import time
from typing import Any

Record = list[Any]


def _stdin_line() -> None:
    sys.stdin.readline()


def floor(args: argparse.Namespace) -> list[Record]:
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    records: list[Record] = []
    ready = threading.Event()
    prefix_len = len(args.base) + 1

    def on_connect(client: mqtt.Client, *_: object) -> None:
        client.subscribe(f"{args.base}/+/state", qos=0)

    def on_subscribe(*_: object) -> None:
        ready.set()

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        now, wall = time.monotonic(), time.time()
        device = message.topic[prefix_len:].partition("/")[0]
        records.append([device, json.loads(message.payload)["temperature"], now, wall, None])

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"rt-floor-{time.time_ns()}", transport="websockets")
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()
    sock = client.socket()
    raw = getattr(sock, "_socket", sock)  # paho wraps the TCP socket for websockets
    if isinstance(raw, socket.socket):
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not ready.wait(15):
        raise SystemExit("floor receiver: no SUBACK")
    print(json.dumps({"ready": True}), flush=True)
    _stdin_line()
    client.loop_stop()
    return records


async def ours(args: argparse.Namespace) -> list[Record]:
    import aiohttp  # noqa: PLC0415

    records: list[Record] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(args.url, max_msg_size=0) as ws:
        assert (await ws.receive_json())["type"] == "auth_required"
        await ws.send_json({"type": "auth", "access_token": args.token})
        ok = await ws.receive_json()
        if ok.get("type") != "auth_ok":
            raise SystemExit(f"ours receiver: {ok}")
        await ws.send_json({"id": 1, "type": "subscribe", "events": ["state"], "snapshot": False})
        result = await ws.receive_json()
        if not result.get("success"):
            raise SystemExit(f"ours receiver: {result}")
        print(json.dumps({"ready": True}), flush=True)
        stop = asyncio.get_running_loop().run_in_executor(None, _stdin_line)
        loads = json.loads
        while not stop.done():
            receive = asyncio.ensure_future(ws.receive())
            done, _ = await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                break
            msg = receive.result()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            now, wall = time.monotonic(), time.time()
            event = loads(msg.data).get("event")
            if event is not None:
                temperature = event["data"]["values"].get("temperature")
                records.append([event["device_id"], temperature, now, wall, event["ts"]])
    return records


async def ha(args: argparse.Namespace) -> list[Record]:
    import aiohttp  # noqa: PLC0415

    entities: dict[str, str] = json.loads(args.entities)
    records: list[Record] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(args.url, max_msg_size=0) as ws:
        assert (await ws.receive_json())["type"] == "auth_required"
        await ws.send_json({"type": "auth", "access_token": args.token})
        ok = await ws.receive_json()
        if ok.get("type") != "auth_ok":
            raise SystemExit(f"ha receiver: {ok}")
        await ws.send_json({"id": 1, "type": "subscribe_entities", "entity_ids": sorted(entities)})
        while True:  # the result, then the initial states
            message = await ws.receive_json()
            if message.get("type") == "event" and "a" in message["event"]:
                break
        print(json.dumps({"ready": True}), flush=True)
        stop = asyncio.get_running_loop().run_in_executor(None, _stdin_line)
        loads = json.loads
        while not stop.done():
            receive = asyncio.ensure_future(ws.receive())
            done, _ = await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                break
            msg = receive.result()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            now, wall = time.monotonic(), time.time()
            changes = loads(msg.data).get("event", {}).get("c", {})
            for entity_id, change in changes.items():
                state = change.get("+", {}).get("s")
                if state is not None and entity_id in entities:
                    records.append([entities[entity_id], float(state), now, wall, None])
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=("floor", "ours", "ha"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--base", default="thermo_bridge")
    parser.add_argument("--url", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--entities", default="{}", help="JSON: HA entity id -> device id")
    args = parser.parse_args()
    gc.collect()
    gc.freeze()
    gc.disable()
    if args.kind == "floor":
        records = floor(args)
    elif args.kind == "ours":
        records = asyncio.run(ours(args))
    else:
        records = asyncio.run(ha(args))
    print(json.dumps(records), flush=True)


if __name__ == "__main__":
    main()
