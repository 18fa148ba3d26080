"""Many WebSocket clients in one process, for bench/realtime_fanout.py: the load generator.

Kinds: ``ours`` (the add-on server: auth, ``subscribe`` to the given devices' ``state`` events),
``sse`` (the same events as Server-Sent Events, ``GET /api/v1/events`` with a bearer token)
and ``ha`` (Home Assistant: auth, ``subscribe_entities`` of the given climate entities). Every
client reads every frame; one in ``--sample`` parses them and records ``[device, temperature,
t_monotonic]``, so the generator itself stays cheap. It prints ``{"ready": n}`` once every
client is subscribed, records until a line arrives on stdin, then prints the records.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from typing import Any

import aiohttp

Record = list[Any]
CONNECT_CONCURRENCY = 16
"""Handshakes in flight: under the server's cap on connections in the auth phase per address (20)."""


def share_of(index: int, targets: list[str], share: int) -> list[str]:
    """Client ``index``'s devices: ``share`` of them from its own index on (all with share 0)."""
    return targets if share <= 0 else [targets[(index + i) % len(targets)] for i in range(share)]


async def sse_client(
    index: int, args: argparse.Namespace, session: aiohttp.ClientSession, gate: asyncio.Semaphore, out: list[Record]
) -> aiohttp.ClientResponse:
    devices = ",".join(share_of(index, json.loads(args.targets), args.share))
    async with gate:
        resp = await session.get(
            args.url, params={"devices": devices, "events": "state"}, headers={"Authorization": f"Bearer {args.token}"}
        )
        if resp.status != 200:
            raise SystemExit(f"sse client {index}: {resp.status} {await resp.text()}")
        async for line in resp.content:  # until ready: the stream has started
            if line.startswith(b"event: ready"):
                break
    asyncio.get_running_loop().create_task(read_sse(resp, index % args.sample == 0, out))
    return resp


async def read_sse(resp: aiohttp.ClientResponse, sampled: bool, out: list[Record]) -> None:
    loads = json.loads
    async for line in resp.content:
        if sampled and line.startswith(b"data: "):
            now = time.monotonic()
            event = loads(line[6:])
            if "values" in event.get("data", {}):
                out.append([event["device_id"], event["data"]["values"].get("temperature"), now])


async def client(
    index: int, args: argparse.Namespace, session: aiohttp.ClientSession, gate: asyncio.Semaphore, out: list[Record]
) -> aiohttp.ClientWebSocketResponse:
    targets: list[str] = json.loads(args.targets)
    async with gate:
        ws = await session.ws_connect(args.url, max_msg_size=0, heartbeat=None)
        await ws.receive_json()
        await ws.send_json({"type": "auth", "access_token": args.token})
        ok = await ws.receive_json()
        if ok.get("type") != "auth_ok":
            raise SystemExit(f"client {index}: {ok}")
        if args.kind == "ours":
            share = share_of(index, targets, args.share)
            await ws.send_json({"id": 1, "type": "subscribe", "devices": share, "events": ["state"], "snapshot": False})
            result = await ws.receive_json()
            if not result.get("success"):
                raise SystemExit(f"client {index}: {result}")
        else:
            await ws.send_json({"id": 1, "type": "subscribe_entities", "entity_ids": targets})
            while True:
                message = await ws.receive_json()
                if message.get("type") == "event" and "a" in message["event"]:
                    break
    asyncio.get_running_loop().create_task(read(ws, args, index % args.sample == 0, out))
    return ws


async def read(ws: aiohttp.ClientWebSocketResponse, args: argparse.Namespace, sampled: bool, out: list[Record]) -> None:
    entities: dict[str, str] = json.loads(args.entities)
    loads = json.loads
    async for msg in ws:
        if not sampled or msg.type is not aiohttp.WSMsgType.TEXT:
            continue
        now = time.monotonic()
        data = loads(msg.data)
        if args.kind == "ours":
            event = data.get("event")
            if event is not None:
                out.append([event["device_id"], event["data"]["values"].get("temperature"), now])
        else:
            for entity_id, change in data.get("event", {}).get("c", {}).items():
                current = change.get("+", {}).get("a", {}).get("current_temperature")
                if current is not None and entity_id in entities:
                    out.append([entities[entity_id], current, now])


async def main(args: argparse.Namespace) -> None:
    out: list[Record] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=0)
    # No total timeout: aiohttp's default (5 minutes) would end a long run's SSE streams.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        connect = sse_client if args.kind == "sse" else client
        streams = await asyncio.gather(*(connect(i, args, session, gate, out) for i in range(args.count)))
        print(json.dumps({"ready": len(streams)}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print(json.dumps(out), flush=True)
        for stream in streams:
            stream.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=("ours", "sse", "ha"), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--targets", required=True, help="JSON list: device ids (ours) or entity ids (ha)")
    parser.add_argument("--entities", default="{}", help="JSON: entity id -> device id (ha)")
    parser.add_argument("--share", type=int, default=0, help="ours: devices per client (0: all targets)")
    parser.add_argument("--sample", type=int, default=10, help="one client in this many records timings")
    arguments = parser.parse_args()
    gc.collect()
    gc.freeze()
    gc.disable()  # the generator's own pauses must not count as the server's latency
    asyncio.run(main(arguments))
