"""Device publish → WebSocket receipt latency of the real-time API, next to the floor and Home Assistant.

Every trial has a fresh private mosquitto (MQTT and WebSocket listeners, ``set_tcp_nodelay``)
and the same devices and payloads (bench/_publisher.py: N thermostats, full state reports
round-robin at R messages/s, QoS 0, each report's temperature unique per device). Variants:

- ``floor``: no server: an MQTT-over-WebSocket client on mosquitto's own WebSocket listener.
- ``sqlite``, ``postgres``: the add-on server (``python -m thermo_bridge_server``, dev auth) on
  that store; a WebSocket client subscribed to every ``state`` event.
- ``ha``: Home Assistant 2026.10 (bench/_rt_ha.py) with our integration for the devices; a client
  of HA's WebSocket API on ``subscribe_entities`` of every device's temperature sensor.

The receiver is its own process (bench/_rt_receiver.py), as is the publisher; latency is the
publisher's monotonic time of the publish call to the receiver's monotonic time of the frame
(one clock: CLOCK_MONOTONIC). For the server, ``server_ts`` (when the ingest took the message,
wall clock) splits it into broker→server and server→client (commit, routing, queue, socket).

Run alone on the machine (see bench/README.md); prints a markdown block for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _machine import cpu_model, git_head, mosquitto_version, ram  # noqa: E402
from _server_common import pg_create_schema, pg_drop_schema, pg_dsn, pg_problem, with_search_path  # noqa: E402
from ha_discovery import Publisher  # noqa: E402

from tests.broker import Mosquitto, free_port  # noqa: E402

VARIANTS = ("floor", "sqlite", "postgres", "ha")
PREFIX = "bench"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


class Proc:
    """A child speaking JSON lines on stdout, told to finish by a line on stdin."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name

    @classmethod
    async def start(cls, name: str, *argv: str, env: dict[str, str] | None = None, log: Path | None = None) -> Proc:
        stderr = log.open("ab") if log else asyncio.subprocess.DEVNULL
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
            limit=256 * 1024 * 1024,
        )
        return cls(proc, name)

    async def line(self, timeout: float = 180) -> Any:  # noqa: ASYNC109 - any JSON value
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise RuntimeError(f"{self.name} exited (code {await self.proc.wait()})")
        return json.loads(raw)

    async def tell(self, text: str = "") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def http_ok(url: str) -> bool:
    import aiohttp  # noqa: PLC0415

    try:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def device_count(url: str, token: str) -> int:
    import aiohttp  # noqa: PLC0415

    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/api/v1/devices", headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return len((await resp.json())["devices"]) if resp.status == 200 else 0


def mint(key: Path, port: int) -> str:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "thermo_bridge_server.auth.devauth", "--key", str(key)),
            *("--issuer", f"http://localhost:{port}/", "--sub", "dev|bench", "--permissions", "read:devices", "admin"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def pin(pid: int, cpus: set[int]) -> None:
    """Keep a process on ``cpus`` (the server gets a core, the load generators the other)."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, cpus)


async def trial(variant: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    broker = Mosquitto(tmp / "broker", websockets=True, extra_config="set_tcp_nodelay true\n")
    children: list[Proc] = []
    schema: str | None = None
    pub: Publisher | None = None
    server_cpus, load_cpus = ({0}, {1}) if args.pin and (os.cpu_count() or 1) >= 2 else (None, None)
    try:
        broker.start()
        if load_cpus and broker._proc is not None:
            pin(broker._proc.pid, load_cpus)
        pub = await Publisher.start(broker.port)
        if load_cpus:
            pin(pub.proc.pid, load_cpus)
        receiver_args: list[str]
        if variant == "floor":
            await pub.request(op="discover", variant="ours", prefix=PREFIX, count=args.devices)
            assert broker.ws_port is not None
            receiver_args = ["--kind", "floor", "--port", str(broker.ws_port)]
        elif variant in ("sqlite", "postgres"):
            port = free_port()
            key = tmp / "dev_key.pem"
            store_url = f"sqlite:///{tmp / 'server.db'}"
            if variant == "postgres":
                schema = await pg_create_schema(pg_dsn(), "tb_rtbench")
                store_url = with_search_path(pg_dsn(), schema)
            env = {
                **os.environ,
                "THERMO_BRIDGE_MQTT_HOST": broker.host,
                "THERMO_BRIDGE_MQTT_PORT": str(broker.port),
                "THERMO_BRIDGE_MQTT_CLIENT_ID": f"tb_rtbench_{port}",
                "THERMO_BRIDGE_STORE_URL": store_url,
                "THERMO_BRIDGE_HTTP_PORT": str(port),
                "THERMO_BRIDGE_ZEROCONF": "false",
                "THERMO_BRIDGE_DEV_AUTH": "true",
                "THERMO_BRIDGE_DEV_KEY_PATH": str(key),
                # On PostgreSQL its default is the working directory.
                "THERMO_BRIDGE_INTERNAL_TOKEN_PATH": str(tmp / "internal_token"),
                "THERMO_BRIDGE_WS_ALLOW_NO_ORIGIN": "true",
                "THERMO_BRIDGE_RATE_LIMIT_PER_MINUTE": "1000000",
                # Every load-generator client comes from one address: the per-address handshake limit is not under test.
                "THERMO_BRIDGE_WS_HANDSHAKES_PER_MINUTE": "1000000",
                "THERMO_BRIDGE_OPTIONS_FILE": "",
                "THERMO_BRIDGE_LOG_LEVEL": "warning",
            }
            server = await Proc.start(
                "server", sys.executable, "-m", "thermo_bridge_server", env=env, log=tmp / "server.log"
            )
            children.append(server)
            if server_cpus:
                pin(server.proc.pid, server_cpus)
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while not await http_ok(url + "/health"):
                if time.monotonic() > deadline or server.proc.returncode is not None:
                    raise RuntimeError(f"server did not start: {(tmp / 'server.log').read_text()[-2000:]}")
                await asyncio.sleep(0.1)
            token = await asyncio.to_thread(mint, key, port)
            await pub.request(op="discover", variant="ours", prefix=PREFIX, count=args.devices)
            while await device_count(url, token) < args.devices:
                if time.monotonic() > deadline + 60:
                    raise RuntimeError("the server did not store every device")
                await asyncio.sleep(0.2)
            receiver_args = ["--kind", "ours", "--url", url.replace("http", "ws") + "/api/v1/ws", "--token", token]
        else:
            ha = await Proc.start(
                "home assistant",
                sys.executable,
                str(HERE / "_rt_ha.py"),
                "--broker-port",
                str(broker.port),
                "--config-dir",
                str(tmp / "ha"),
                "--devices",
                str(args.devices),
                log=tmp / "ha.log",
            )
            children.append(ha)
            if server_cpus:
                pin(ha.proc.pid, server_cpus)
            await ha.line()
            await pub.request(op="discover", variant="ours", prefix=PREFIX, count=args.devices)
            await ha.tell()
            info = await ha.line()
            receiver_args = [
                "--kind",
                "ha",
                "--url",
                f"ws://127.0.0.1:{info['port']}/api/websocket",
                "--token",
                info["token"],
                "--entities",
                json.dumps(info["entities"]),
            ]
        await asyncio.sleep(args.settle)
        receiver = await Proc.start("receiver", sys.executable, str(HERE / "_rt_receiver.py"), *receiver_args)
        children.append(receiver)
        if load_cpus:
            pin(receiver.proc.pid, load_cpus)
        await receiver.line()
        sent = await pub.request(
            op="updates", variant="ours", prefix=PREFIX, devices=args.devices, count=args.updates, rate=args.rate, qos=0
        )
        t_pub: list[float] = sent["t_pub"]
        await asyncio.sleep(args.drain)
        await receiver.tell()
        records: list[list[Any]] = await receiver.line()
    finally:
        for child in reversed(children):
            await child.stop()
        if pub is not None:
            await pub.close()
        broker.stop()
        if schema is not None:
            await pg_drop_schema(pg_dsn(), schema)
    return measure(records, t_pub, args.devices)


def measure(records: list[list[Any]], t_pub: list[float], devices: int) -> dict[str, Any]:
    """Latency per update, matched by (device, temperature): update i's temperature is unique per device."""
    expected: dict[tuple[str, float], float] = {}
    for i, published in enumerate(t_pub):
        round_no = i // devices
        expected[(f"{PREFIX}_t_{i % devices + 1:05d}", round(20.0 + (round_no + 1) * 0.1, 1))] = published
    latencies: list[float] = []
    server_leg: list[float] = []
    seen: set[tuple[str, float]] = set()
    for device, temperature, t_mono, t_wall, server_ts in records:
        key = (device, round(float(temperature), 1))
        published = expected.get(key)
        if published is None or key in seen:
            continue
        seen.add(key)
        latencies.append((t_mono - published) * 1000)
        if server_ts is not None:
            server_leg.append((t_wall - server_ts) * 1000)
    return {
        "received": len(seen),
        "expected": len(expected),
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "max": max(latencies, default=float("nan")),
        "server_p50": percentile(server_leg, 50) if server_leg else None,
        "server_p99": percentile(server_leg, 99) if server_leg else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0, help="state reports per second")
    parser.add_argument("--updates", type=int, default=10_000, help="state reports per trial")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of quiet before measuring")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds to wait for the last frames")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not put the server on its own core")
    parser.add_argument("--quick", action="store_true", help="100 devices, 2,000 updates, 1 run")
    parser.add_argument("--keep", action="store_true", help="keep the trial folders (logs)")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.updates, args.repeats = 100, 2000, 1
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "postgres" in variants and (problem := asyncio.run(pg_problem())):
        print(f"skipping postgres: {problem}", file=sys.stderr)
        variants.remove("postgres")
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    started = time.time()
    load_before = os.getloadavg()[0]
    for repeat in range(args.repeats):
        for variant in variants:  # alternate, so drift over the run spreads evenly
            tmp = Path(tempfile.mkdtemp(prefix=f"tb-rt-{variant}-"))
            result = asyncio.run(trial(variant, args, tmp))
            results[variant].append(result)
            print(f"run {repeat + 1} {variant:9} {json.dumps(result)}", file=sys.stderr, flush=True)
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
    report(results, args, started, load_before)


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, started: float, load: float) -> None:
    def med(variant: str, key: str) -> float:
        values = [r[key] for r in results[variant] if r[key] is not None]
        return statistics.median(values) if values else float("nan")

    print(f"### Real-time latency ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))})\n")
    print(f"Command: `.venv/bin/python bench/realtime_latency.py {' '.join(sys.argv[1:])}`\n")
    head, dirty = git_head(str(REPO))
    print(f"- code: {head}{' (uncommitted changes)' if dirty else ''}")
    print(f"- cpu: {cpu_model()} ({os.cpu_count()} cores)\n- ram: {ram()}")
    print(f"- broker: {mosquitto_version()}\n- python: {sys.version.split()[0]}")
    print(f"- load average before / after: {load:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"- {args.devices} devices, {args.updates} state reports at {args.rate:g}/s, QoS 0, {args.repeats} runs each")
    print(f"- server/HA pinned to CPU 0, broker + publisher + receiver to CPU 1: {args.pin}\n")
    print("| variant | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | server→client p50 / p99 (ms) | received |")
    print("|---|---|---|---|---|---|---|")
    for variant, runs in results.items():
        server = (
            f"{med(variant, 'server_p50'):.2f} / {med(variant, 'server_p99'):.2f}"
            if runs and runs[0]["server_p50"] is not None
            else "-"
        )
        received = min(r["received"] for r in runs), runs[0]["expected"]
        print(
            f"| {variant} | {med(variant, 'p50'):.2f} | {med(variant, 'p95'):.2f} | {med(variant, 'p99'):.2f} "
            f"| {med(variant, 'max'):.1f} | {server} | {received[0]}/{received[1]} (worst run) |"
        )
    print()
    for variant, runs in results.items():
        print(f"- {variant} per run (p50/p99 ms): " + "; ".join(f"{r['p50']:.2f}/{r['p99']:.2f}" for r in runs))
    if "floor" in results:
        for variant in results:
            if variant != "floor":
                print(f"- {variant} p99 / floor p99: {med(variant, 'p99') / med('floor', 'p99'):.2f}")
    if "ha" in results:
        for variant in ("sqlite", "postgres"):
            if variant in results:
                print(f"- {variant} p99 / HA p99: {med(variant, 'p99') / med('ha', 'p99'):.2f}")


if __name__ == "__main__":
    main()
