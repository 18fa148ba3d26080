"""Soak: ``--minutes`` (10) at 1,000 reports/s from 1,000 devices, 500 WebSocket and 20 SSE clients, steady REST.

The server (SQLite, dev auth) runs as its own process; the publisher and the clients are two
more processes (bench/_fleet_load.py), so no load generator shares the server's process.
Every minute (``--interval``) the clients report the events they received with their
publish → receipt latency p50/p99 and the REST latency, and the server's ``/metrics`` gives
its resident set, open file descriptors and asyncio tasks. At the end: growth of each after
the first two intervals, reports lost (acknowledged by the broker, not received by the
clients that cover them), and a PNG plot of the series (``--plot``).

Targets (docs/benchmarks.md): growth after the first two minutes < 10 %, no fd or task
growth, 0 lost, latency stable. ``--quick`` is a one-minute smoke run with 10 s intervals.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
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

from _server_common import BASE, RawPublisher, config_messages, device_id, machine, now_iso  # noqa: E402
from fleet import start_server  # noqa: E402
from realtime_latency import Proc, mint  # noqa: E402

from tests.broker import Mosquitto  # noqa: E402

GAUGES = {
    "rss_mib": "thermo_bridge_process_resident_memory_bytes",
    "fds": "thermo_bridge_process_open_fds",
    "tasks": "thermo_bridge_asyncio_tasks",
}


async def scrape(port: int) -> dict[str, float]:
    import aiohttp  # noqa: PLC0415

    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for key, name in GAUGES.items():
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        if match:
            value = float(match.group(1))
            out[key] = value / 2**20 if key == "rss_mib" else value
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tb-soak-"))
    broker = Mosquitto(tmp / "broker", websockets=False, extra_config="set_tcp_nodelay true\n")
    children: list[Proc] = []
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"tmp": str(tmp), "rows": rows}
    try:
        broker.start()
        publisher = RawPublisher(broker.host, broker.port)
        retained = config_messages(args.devices) + [
            (f"{BASE}/{device_id(i)}/availability", b"online") for i in range(args.devices)
        ]
        publisher.publish_all(retained, retain=True)
        publisher.close()
        server, port, _ = await start_server(broker, tmp, tmp / "soak.db", "server")
        children.append(server)
        token = await asyncio.to_thread(mint, tmp / "dev_key.pem", port)
        clients = await Proc.start(
            "clients",
            sys.executable,
            str(HERE / "_fleet_load.py"),
            "clients",
            *("--http-port", str(port), "--token", token, "--devices", str(args.devices)),
            *("--ws", str(args.ws), "--per-client", str(max(1, args.devices // max(1, args.ws)))),
            *("--sse", str(args.sse), "--sse-devices", "20", "--rest-rate", str(args.rest_rate)),
            *("--interval", str(args.interval)),
            log=tmp / "clients.log",
        )
        children.append(clients)
        await clients.line(timeout=600)
        load = await Proc.start(
            "publisher",
            sys.executable,
            str(HERE / "_fleet_load.py"),
            "publish",
            *("--port", str(broker.port), "--devices", str(args.devices)),
            *("--rate", str(args.rate), "--seconds", str(args.minutes * 60)),
            log=tmp / "publisher.log",
        )
        children.append(load)
        await load.line()
        started = time.monotonic()
        intervals = round(args.minutes * 60 / args.interval)
        for index in range(intervals):
            figures = (await clients.line(timeout=args.interval * 3))["interval"]
            rows.append({"t": round(time.monotonic() - started), **figures, **await scrape(port)})
            row = rows[-1]
            print(
                f"  {index + 1}/{intervals}: {row['events']} events, p50 {row['p50']:.1f} / p99 {row['p99']:.1f} ms,"
                f" RSS {row['rss_mib']:.1f} MiB, {row['fds']:.0f} fds, {row['tasks']:.0f} tasks",
                file=sys.stderr,
            )
        sent = await load.line(timeout=120)
        await asyncio.sleep(3)
        await clients.tell()
        await clients.line()  # the last, partial interval
        received: dict[str, int] = (await clients.line(timeout=120))["received"]
        out.update(
            sent=sent["sent"],
            acked=sent["acked"],
            expected=sum(sent["per_device"]),
            delivered=sum(received.values()),
        )
        out["lost"] = out["expected"] - out["delivered"]
    finally:
        for child in reversed(children):
            await child.stop()
        broker.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def growth(rows: list[dict[str, Any]], key: str, skip: int) -> float | None:
    """Relative growth of ``key`` from the end of interval ``skip`` to the last one."""
    if len(rows) <= skip:
        return None
    base = rows[skip - 1][key] if skip else rows[0][key]
    return (rows[-1][key] - base) / base if base else None


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    minutes = [r["t"] / 60 for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    panels = [
        (axes[0][0], "server RSS (MiB)", [("rss_mib", "RSS")]),
        (axes[0][1], "open fds / asyncio tasks", [("fds", "fds"), ("tasks", "tasks")]),
        (axes[1][0], "publish → client latency (ms)", [("p50", "p50"), ("p99", "p99")]),
        (axes[1][1], "REST latency (ms)", [("rest_p50", "p50"), ("rest_p99", "p99")]),
    ]
    for ax, label, series in panels:
        for key, name in series:
            ax.plot(minutes, [r.get(key) for r in rows], marker="o", label=name)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def report(result: dict[str, Any], args: argparse.Namespace, command: str) -> None:
    rows = result["rows"]
    skip = min(2, max(0, len(rows) - 1)) if args.interval >= 60 else min(len(rows) - 1, round(120 / args.interval))

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 100:+.1f} %"

    print(f"\n### Soak ({args.minutes:g} min, {args.devices:,} devices at {args.rate:,.0f} msg/s)\n")
    print(f"Command: `{command}` ({now_iso()})\n")
    for key, value in machine().items():
        print(f"- {key}: {value}")
    load = os.getloadavg()
    print(f"- load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"- clients: {args.ws} WebSocket, {args.sse} SSE, REST at {args.rest_rate:g} requests/s\n")
    print(
        "| t (s) | events | p50 (ms) | p99 (ms) | REST p50 / p99 (ms) | RSS (MiB) | fds | tasks | errors"
        " | streams ended |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rest = f"{r['rest_p50']:.1f} / {r['rest_p99']:.1f}"
        print(
            f"| {r['t']} | {r['events']:,} | {r['p50']:.1f} | {r['p99']:.1f} | {rest}"
            f" | {r['rss_mib']:.1f} | {r['fds']:.0f} | {r['tasks']:.0f} | {r['errors']} | {r['closed']} |"
        )
    print(
        f"\nGrowth from t={rows[skip - 1]['t'] if skip else 0} s to the end: RSS {pct(growth(rows, 'rss_mib', skip))},"
        f" fds {pct(growth(rows, 'fds', skip))}, tasks {pct(growth(rows, 'tasks', skip))}."
        f" Reports acknowledged by the broker {result['acked']:,} of {result['sent']:,} sent;"
        f" received by the clients {result['delivered']:,} of {result['expected']:,}: lost {result['lost']}."
        f" WebSocket and SSE streams that ended before the run did: {rows[-1]['closed']}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per row")
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=1_000.0)
    parser.add_argument("--ws", type=int, default=500)
    parser.add_argument("--sse", type=int, default=20)
    parser.add_argument("--rest-rate", type=float, default=10.0)
    parser.add_argument("--plot", type=Path, help="write the series as a PNG (e.g. docs/img/soak.png)")
    parser.add_argument("--quick", action="store_true", help="one minute, a row every 10 s")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, database)")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.interval = 1.0, 10.0
    command = " ".join([".venv/bin/python", "bench/soak.py", *sys.argv[1:]])
    result = asyncio.run(run(args))
    report(result, args, command)
    if args.plot:
        plot(result["rows"], args.plot, f"thermo_bridge soak: {args.devices:,} devices, {args.rate:,.0f} msg/s")
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
