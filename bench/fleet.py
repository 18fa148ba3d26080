"""Fleet scale: 10,000 devices on one server (SQLite), cold start, memory, the paged device list, fan-out.

1. A server on an empty broker gives the baseline RSS.
2. Every device's retained config and availability are published (one raw MQTT connection
   speaks for all of them), then a fresh server starts: **cold start** is from its launch to
   the moment ``GET /api/v1/devices`` (paged) lists every device. **RSS per device** is its
   resident set then, minus the baseline, divided by the device count.
3. ``GET /api/v1/devices?limit=1000`` page after page through the whole fleet, ``--rounds``
   times: p50/p99 per page and the time for the whole list.
4. ``--clients`` WebSocket clients (bench/_fleet_load.py clients, its own process), each
   subscribed to ``--per-client`` devices so that together they cover the fleet, then
   ``--rate`` QoS 1 reports per second spread over every device for ``--seconds``
   (bench/_fleet_load.py publish, another process). **Delivery** latency is publish →
   client receipt (the report's own time stamp); **lost** is reports the broker acknowledged
   minus the distinct reports the clients received.

Targets (docs/benchmarks.md): cold start < 30 s, < 10 KB RSS per device, delivery p99 < 50 ms,
0 lost. ``--quick`` is a 1,000-device smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _server_common import BASE, RawPublisher, config_messages, count_sqlite, device_id, machine, now_iso  # noqa: E402
from realtime_latency import Proc, http_ok, mint, percentile  # noqa: E402

from tests.broker import Mosquitto, free_port  # noqa: E402


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def server_env(broker: Mosquitto, tmp: Path, port: int, db: Path) -> dict[str, str]:
    return {
        **os.environ,
        "THERMO_BRIDGE_MQTT_HOST": broker.host,
        "THERMO_BRIDGE_MQTT_PORT": str(broker.port),
        "THERMO_BRIDGE_MQTT_CLIENT_ID": f"tb_fleet_{port}",
        "THERMO_BRIDGE_STORE_URL": f"sqlite:///{db}",
        "THERMO_BRIDGE_HTTP_PORT": str(port),
        "THERMO_BRIDGE_ZEROCONF": "false",
        "THERMO_BRIDGE_DEV_AUTH": "true",
        "THERMO_BRIDGE_DEV_KEY_PATH": str(tmp / "dev_key.pem"),
        "THERMO_BRIDGE_WS_ALLOW_NO_ORIGIN": "true",
        "THERMO_BRIDGE_WS_MAX_CONNECTIONS_PER_USER": "10000",
        "THERMO_BRIDGE_RATE_LIMIT_PER_MINUTE": "1000000",
        # Every load-generator client comes from one address: the per-address handshake limit is not under test.
        "THERMO_BRIDGE_WS_HANDSHAKES_PER_MINUTE": "1000000",
        "THERMO_BRIDGE_OPTIONS_FILE": "",
        "THERMO_BRIDGE_LOG_LEVEL": "warning",
    }


async def start_server(broker: Mosquitto, tmp: Path, db: Path, name: str) -> tuple[Proc, int, float]:
    """A server process; returns it, its HTTP port and the monotonic time it was launched."""
    port = free_port()
    launched = time.monotonic()
    env = server_env(broker, tmp, port, db)
    server = await Proc.start(name, sys.executable, "-m", "thermo_bridge_server", env=env, log=tmp / f"{name}.log")
    deadline = time.monotonic() + 120
    while not await http_ok(f"http://127.0.0.1:{port}/health"):
        if time.monotonic() > deadline or server.proc.returncode is not None:
            raise RuntimeError(f"{name} did not start: {(tmp / f'{name}.log').read_text()[-2000:]}")
        await asyncio.sleep(0.05)
    return server, port, launched


async def list_all(session: Any, port: int, token: str, timings: list[float] | None = None) -> int:
    """Every device through the paged list; returns the count (page times appended to ``timings``)."""
    path: str | None = "/api/v1/devices?limit=1000"
    count = 0
    while path is not None:
        started = time.perf_counter()
        async with session.get(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}) as resp:
            body = await resp.json()
        if timings is not None:
            timings.append((time.perf_counter() - started) * 1000)
        if resp.status != 200:
            return count
        count += len(body["devices"])
        path = body["next"]
    return count


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp  # noqa: PLC0415

    tmp = Path(tempfile.mkdtemp(prefix="tb-fleet-"))
    broker = Mosquitto(tmp / "broker", websockets=False, extra_config="set_tcp_nodelay true\n")
    children: list[Proc] = []
    out: dict[str, Any] = {"tmp": str(tmp)}
    try:
        broker.start()
        empty, _, _ = await start_server(broker, tmp, tmp / "empty.db", "baseline")
        await asyncio.sleep(2)
        baseline = rss(empty.proc.pid)
        await empty.stop()

        publisher = RawPublisher(broker.host, broker.port)
        retained = config_messages(args.devices) + [
            (f"{BASE}/{device_id(i)}/availability", b"online") for i in range(args.devices)
        ]
        out["retained_acked"] = publisher.publish_all(retained, retain=True)
        publisher.close()

        server, port, launched = await start_server(broker, tmp, tmp / "fleet.db", "server")
        children.append(server)
        out["health_s"] = time.monotonic() - launched
        token = await asyncio.to_thread(mint, tmp / "dev_key.pem", port)
        async with aiohttp.ClientSession() as session:
            while (listed := await list_all(session, port, token)) < args.devices:
                if time.monotonic() - launched > args.timeout:
                    raise RuntimeError(f"only {listed} of {args.devices} devices listed after {args.timeout} s")
                await asyncio.sleep(0.2)
            out["cold_start_s"] = time.monotonic() - launched
            await asyncio.sleep(2)
            out["rss_mib"] = rss(server.proc.pid) / 2**20
            out["rss_per_device_kib"] = (rss(server.proc.pid) - baseline) / args.devices / 1024
            out["baseline_rss_mib"] = baseline / 2**20
            pages: list[float] = []
            totals: list[float] = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                assert await list_all(session, port, token, pages) == args.devices
                totals.append((time.perf_counter() - started) * 1000)
            out["page_p50_ms"], out["page_p99_ms"] = percentile(pages, 50), percentile(pages, 99)
            out["list_all_ms"] = percentile(totals, 50)

        clients = await Proc.start(
            "clients",
            sys.executable,
            str(HERE / "_fleet_load.py"),
            "clients",
            *("--http-port", str(port), "--token", token, "--devices", str(args.devices)),
            *("--ws", str(args.clients), "--per-client", str(args.per_client), "--interval", "3600"),
            log=tmp / "clients.log",
        )
        children.append(clients)
        await clients.line(timeout=900)
        await asyncio.sleep(2)
        out["rss_with_clients_mib"] = rss(server.proc.pid) / 2**20
        load = await Proc.start(
            "publisher",
            sys.executable,
            str(HERE / "_fleet_load.py"),
            "publish",
            *("--port", str(broker.port), "--devices", str(args.devices)),
            *("--rate", str(args.rate), "--seconds", str(args.seconds)),
            log=tmp / "publisher.log",
        )
        children.append(load)
        await load.line()
        cpu_before = _cpu(server.proc.pid)
        sent = await load.line(timeout=args.seconds + 120)
        out["server_cpu_s_per_1000"] = (_cpu(server.proc.pid) - cpu_before) / max(1, sent["acked"]) * 1000
        await asyncio.sleep(3)
        await clients.tell()
        interval = (await clients.line())["interval"]
        received: dict[str, int] = (await clients.line(timeout=120))["received"]
        covered = {
            device_id((i * args.per_client + k) % args.devices)
            for i in range(args.clients)
            for k in range(args.per_client)
        }
        expected = sum(n for i, n in enumerate(sent["per_device"]) if device_id(i) in covered)
        out.update(
            sent=sent["sent"],
            acked=sent["acked"],
            delivered=sum(received.values()),
            expected=expected,
            lost=expected - sum(received.values()),
            delivery_p50_ms=interval["p50"],
            delivery_p99_ms=interval["p99"],
            clients_closed=interval["closed"],
        )
        await server.stop()
        children.remove(server)
        stored = count_sqlite(str(tmp / "fleet.db"))
        out["stored_distinct"] = stored["distinct_reports"]
    finally:
        for child in reversed(children):
            await child.stop()
        broker.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(result: dict[str, Any], args: argparse.Namespace, command: str) -> None:
    def f(key: str, digits: int = 1) -> str:
        value = result.get(key)
        return "n/a" if value is None else f"{value:,.{digits}f}"

    print(f"\n### Fleet ({args.devices:,} devices, {args.clients:,} WebSocket clients)\n")
    print(f"Command: `{command}` ({now_iso()})\n")
    for key, value in machine().items():
        print(f"- {key}: {value}")
    load = os.getloadavg()
    print(f"- load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    rows = [
        ("cold start until every device is listed (s)", f("cold_start_s"), "< 30"),
        ("/health answering after launch (s)", f("health_s"), ""),
        ("RSS per device (KiB)", f("rss_per_device_kib", 2), "< 10 KB"),
        (
            "server RSS with the fleet / baseline / with the clients (MiB)",
            f"{f('rss_mib')} / {f('baseline_rss_mib')} / {f('rss_with_clients_mib')}",
            "",
        ),
        ("`GET /devices?limit=1000` page p50 / p99 (ms)", f"{f('page_p50_ms')} / {f('page_p99_ms')}", ""),
        ("the whole list, page by page (ms, median)", f("list_all_ms"), ""),
        (
            f"delivery p50 / p99 (ms) at {args.rate:,.0f} msg/s",
            f"{f('delivery_p50_ms')} / {f('delivery_p99_ms')}",
            "p99 < 50",
        ),
        (
            "reports acknowledged by the broker / delivered / expected",
            f"{result.get('acked')} / {result.get('delivered')} / {result.get('expected')}",
            "",
        ),
        ("lost", str(result.get("lost")), "0"),
        ("stored (distinct reports in the database)", str(result.get("stored_distinct")), "= acknowledged"),
        ("server CPU per 1,000 reports (s)", f("server_cpu_s_per_1000", 3), ""),
        ("clients closed by the server", str(result.get("clients_closed")), "0"),
    ]
    print("| figure | value | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=1_000)
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1_000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=20, help="walks through the paged device list")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for the cold start")
    parser.add_argument("--quick", action="store_true", help="1,000 devices, 100 clients, 10 s")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, database)")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.clients, args.seconds, args.rounds = 1_000, 100, 10.0, 5
    command = " ".join([".venv/bin/python", "bench/fleet.py", *sys.argv[1:]])
    result = asyncio.run(run(args))
    report(result, args, command)
    if args.keep:
        print(f"\nlogs and database: {result['tmp']}")
    print(json.dumps(result), file=sys.stderr)


if __name__ == "__main__":
    main()
