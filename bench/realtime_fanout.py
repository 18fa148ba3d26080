"""Fan-out to many WebSocket clients: broadcast latency and server memory per connection, ours next to HA's.

Workload ``broadcast`` (the one Home Assistant was measured with): 100 thermostats, 10 state
reports per second, every client subscribed to all 100 (ours: ``subscribe`` to their
``state`` events; HA: ``subscribe_entities`` of their climate entities), so every report
reaches every client. Workload ``share`` (the target of the real-time API): 1,000
thermostats, 100 reports per second, every client subscribed to 10 of them. Workload
``latency`` (the SSE run): the latency benchmark's 1,000 thermostats at 1,000 reports per
second, 100 clients on 10 devices each (every report reaches one client), over SSE and,
for the ratio, over the WebSocket.

Per connection count: a fresh broker and server (or HA), the devices announced, then the
load generator (bench/_rt_clients.py, its own process, pinned to the other core) opens and
subscribes every client; server RSS is read before and after; then the reports are
published (bench/_publisher.py) and one client in ten records when each one arrives.
Prints a markdown block and writes a PNG plot (``--plot``).
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

from _machine import cpu_model, git_head, mosquitto_version, ram  # noqa: E402
from ha_discovery import Publisher  # noqa: E402
from realtime_latency import PREFIX, Proc, device_count, http_ok, mint, percentile, pin  # noqa: E402

from tests.broker import Mosquitto, free_port  # noqa: E402

WORKLOADS = {"broadcast": (100, 10.0, 0), "share": (1000, 100.0, 10), "latency": (1000, 1000.0, 10)}
"""devices, reports per second, devices per client (0: all)."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def start_ours(broker: Mosquitto, tmp: Path, pub: Publisher, devices: int) -> tuple[Proc, str, str, list[str]]:
    port = free_port()
    key = tmp / "dev_key.pem"
    env = {
        **os.environ,
        "THERMO_BRIDGE_MQTT_HOST": broker.host,
        "THERMO_BRIDGE_MQTT_PORT": str(broker.port),
        "THERMO_BRIDGE_MQTT_CLIENT_ID": f"tb_fanout_{port}",
        "THERMO_BRIDGE_STORE_URL": f"sqlite:///{tmp / 'server.db'}",
        "THERMO_BRIDGE_HTTP_PORT": str(port),
        "THERMO_BRIDGE_ZEROCONF": "false",
        "THERMO_BRIDGE_DEV_AUTH": "true",
        "THERMO_BRIDGE_DEV_KEY_PATH": str(key),
        "THERMO_BRIDGE_WS_ALLOW_NO_ORIGIN": "true",
        "THERMO_BRIDGE_WS_MAX_CONNECTIONS_PER_USER": "10000",
        "THERMO_BRIDGE_RATE_LIMIT_PER_MINUTE": "1000000",
        # Every load-generator client comes from one address: the per-address handshake limit is not under test.
        "THERMO_BRIDGE_WS_HANDSHAKES_PER_MINUTE": "1000000",
        "THERMO_BRIDGE_OPTIONS_FILE": "",
        "THERMO_BRIDGE_LOG_LEVEL": "warning",
    }
    server = await Proc.start("server", sys.executable, "-m", "thermo_bridge_server", env=env, log=tmp / "server.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not await http_ok(url + "/health"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"server did not start: {(tmp / 'server.log').read_text()[-2000:]}")
        await asyncio.sleep(0.1)
    token = await asyncio.to_thread(mint, key, port)
    await pub.request(op="discover", variant="ours", prefix=PREFIX, count=devices)
    while await device_count(url, token) < devices:  # noqa: ASYNC110 - polling the server over HTTP
        await asyncio.sleep(0.2)
    targets = [f"{PREFIX}_t_{i:05d}" for i in range(1, devices + 1)]
    return server, url.replace("http", "ws") + "/api/v1/ws", token, targets


async def start_ha(broker: Mosquitto, tmp: Path, pub: Publisher, devices: int) -> tuple[Proc, str, str, list[str], str]:
    ha = await Proc.start(
        "home assistant",
        sys.executable,
        str(HERE / "_rt_ha.py"),
        *("--broker-port", str(broker.port), "--config-dir", str(tmp / "ha"), "--devices", str(devices)),
        log=tmp / "ha.log",
    )
    await ha.line()
    await pub.request(op="discover", variant="ours", prefix=PREFIX, count=devices)
    await ha.tell()
    info = await ha.line()
    climates: dict[str, str] = info["climates"]
    return ha, f"ws://127.0.0.1:{info['port']}/api/websocket", info["token"], sorted(climates), json.dumps(climates)


async def trial(variant: str, workload: str, count: int, args: argparse.Namespace) -> dict[str, Any]:
    """``variant``: ours (WebSocket), sse or ha."""
    devices, rate, share = WORKLOADS[workload]
    tmp = Path(tempfile.mkdtemp(prefix=f"tb-fanout-{variant}-"))
    broker = Mosquitto(tmp / "broker", websockets=False, extra_config="set_tcp_nodelay true\n")
    children: list[Proc] = []
    pub: Publisher | None = None
    try:
        broker.start()
        pub = await Publisher.start(broker.port)
        entities = "{}"
        if variant in ("ours", "sse"):
            server, url, token, targets = await start_ours(broker, tmp, pub, devices)
            if variant == "sse":
                url = url.replace("ws://", "http://").replace("/api/v1/ws", "/api/v1/events")
        else:
            server, url, token, targets, entities = await start_ha(broker, tmp, pub, devices)
        children.append(server)
        if args.pin:
            pin(server.proc.pid, {0})
            for pid in (pub.proc.pid, broker._proc.pid if broker._proc else 0):
                if pid:
                    pin(pid, {1})
        await asyncio.sleep(2)
        rss_before = rss(server.proc.pid)
        clients = await Proc.start(
            "clients",
            sys.executable,
            str(HERE / "_rt_clients.py"),
            *("--kind", variant, "--url", url, "--token", token, "--count", str(count)),
            *("--targets", json.dumps(targets), "--entities", entities, "--share", str(share)),
            *("--sample", str(args.sample)),
            log=tmp / "clients.log",
        )
        children.append(clients)
        if args.pin:
            pin(clients.proc.pid, {1})
        ready = await clients.line(timeout=600)
        await asyncio.sleep(2)
        rss_after = rss(server.proc.pid)
        updates = int(rate * args.seconds)
        cpu0 = cpu_seconds(server.proc.pid), cpu_seconds(clients.proc.pid)
        sent = await pub.request(
            op="updates", variant="ours", prefix=PREFIX, devices=devices, count=updates, rate=rate, qos=0
        )
        await asyncio.sleep(args.drain)
        cpu1 = cpu_seconds(server.proc.pid), cpu_seconds(clients.proc.pid)
        await clients.tell()
        records: list[list[Any]] = await clients.line(timeout=600)
    finally:
        for child in reversed(children):
            await child.stop()
        if pub is not None:
            await pub.close()
        broker.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result = summarize(
        records, sent["t_pub"], devices, ready["ready"], rss_before, rss_after, share, count, args.sample
    )
    window = args.seconds + args.drain
    result["server_cpu"] = (cpu1[0] - cpu0[0]) / window  # cores busy, on average
    result["clients_cpu"] = (cpu1[1] - cpu0[1]) / window
    return result


def summarize(
    records: list[list[Any]],
    t_pub: list[float],
    devices: int,
    clients: int,
    rss_before: int,
    rss_after: int,
    share: int,
    count: int,
    sample: int,
) -> dict[str, Any]:
    published: dict[tuple[str, float], float] = {}
    for i, t in enumerate(t_pub):
        published[(f"{PREFIX}_t_{i % devices + 1:05d}", round(20.0 + (i // devices + 1) * 0.1, 1))] = t
    latencies = []
    for device, temperature, t_recv in records:
        t = published.get((device, round(float(temperature), 1)))
        if t is not None:
            latencies.append((t_recv - t) * 1000)
    # Every report reaches the sampled clients whose devices include it (client i has ``share``
    # devices from i on, as bench/_rt_clients.py assigns them; all of them when share is 0).
    reach = [0] * devices
    for client in range(0, count, sample):
        for k in range(share or devices):
            reach[(client + k) % devices if share else k] += 1
    expected = sum(reach[i % devices] for i in range(len(t_pub)))
    return {
        "clients": clients,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies, default=float("nan")),
        "frames": len(latencies),
        "expected_frames": expected,
        "rss_per_connection_kib": (rss_after - rss_before) / max(1, clients) / 1024,
        "rss_mib": rss_after / 2**20,
    }


def plot(results: dict[str, dict[int, dict[str, Any]]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (lat, mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = {"ours": "thermo_bridge", "ha": "Home Assistant 2026.10"}
    for variant, by_count in results.items():
        counts = sorted(by_count)
        lat.plot(counts, [by_count[c]["p99"] for c in counts], marker="o", label=f"{names[variant]} p99")
        lat.plot(
            counts, [by_count[c]["p50"] for c in counts], marker=".", linestyle="--", label=f"{names[variant]} p50"
        )
        mem.plot(counts, [by_count[c]["rss_per_connection_kib"] for c in counts], marker="o", label=names[variant])
    lat.set_xlabel("WebSocket clients (each on all 100 devices, 10 reports/s broadcast)")
    lat.set_ylabel("publish → receipt (ms)")
    lat.set_yscale("log")
    lat.set_xscale("log")
    lat.grid(alpha=0.3)
    lat.legend(fontsize=8)
    mem.set_xlabel("WebSocket clients")
    mem.set_ylabel("server RSS per connection (KiB)")
    mem.set_xscale("log")
    mem.grid(alpha=0.3)
    mem.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="100,500,1000,2000,5000", help="ours, broadcast workload")
    parser.add_argument("--ha-counts", default="100,500,1000,2000", help="HA, broadcast workload (empty: no HA)")
    parser.add_argument("--share-counts", default="5000", help="ours, share workload")
    parser.add_argument("--sse-counts", default="100", help="SSE (and WebSocket) clients, latency workload")
    parser.add_argument("--seconds", type=float, default=20.0, help="of reports per trial")
    parser.add_argument("--sample", type=int, default=10)
    parser.add_argument("--drain", type=float, default=3.0)
    parser.add_argument("--plot", default=str(REPO / "docs" / "img" / "realtime-fanout.png"))
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--quick", action="store_true", help="100 and 500 clients, 5 s each, no plot")
    args = parser.parse_args()
    if args.quick:
        args.counts, args.ha_counts, args.share_counts, args.seconds, args.plot = "100,500", "100", "500", 5.0, ""
        args.sse_counts = "20"

    def counts(text: str) -> list[int]:
        return [int(c) for c in text.split(",") if c.strip()]

    started, load = time.time(), os.getloadavg()[0]
    results: dict[str, dict[int, dict[str, Any]]] = {"ours": {}, "ha": {}}
    share: dict[int, dict[str, Any]] = {}
    latency: dict[str, dict[int, dict[str, Any]]] = {"sse": {}, "ours": {}}
    plan = [("ours", "broadcast", c) for c in counts(args.counts)] + [
        ("ha", "broadcast", c) for c in counts(args.ha_counts)
    ]
    plan += [("ours", "share", c) for c in counts(args.share_counts)]
    plan += [(kind, "latency", c) for c in counts(args.sse_counts) for kind in ("sse", "ours")]
    for variant, workload, count in plan:
        result = asyncio.run(trial(variant, workload, count, args))
        print(f"{variant} {workload} {count}: {json.dumps(result)}", file=sys.stderr, flush=True)
        if workload == "broadcast":
            results[variant][count] = result
        elif workload == "share":
            share[count] = result
        else:
            latency[variant][count] = result
    results = {k: v for k, v in results.items() if v}
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(results, Path(args.plot))
    head, dirty = git_head(str(REPO))
    print(f"### Real-time fan-out ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))})\n")
    print(f"Command: `.venv/bin/python bench/realtime_fanout.py {' '.join(sys.argv[1:])}`\n")
    print(f"- code: {head}{' (uncommitted changes)' if dirty else ''}")
    print(f"- cpu: {cpu_model()} ({os.cpu_count()} cores); ram: {ram()}")
    print(f"- broker: {mosquitto_version()}; python {sys.version.split()[0]}; load average before {load:.2f}")
    print(f"- server/HA on CPU 0, clients + broker + publisher on CPU 1: {args.pin}")
    print(f"- {args.seconds:g} s of reports per run\n")
    columns = ("clients", "ours p50 / p99 (ms)", "HA p50 / p99 (ms)", "ours / HA p99", "ours KiB/conn")
    print("| " + " | ".join((*columns, "HA KiB/conn", "frames (ours)")) + " |")
    print("|---|---|---|---|---|---|---|")
    for count in sorted(set(results.get("ours", {})) | set(results.get("ha", {}))):
        ours, ha = results.get("ours", {}).get(count), results.get("ha", {}).get(count)
        ratio = f"{ours['p99'] / ha['p99']:.2f}" if ours and ha else "-"
        print(
            f"| {count} | {_pair(ours)} | {_pair(ha)} | {ratio} | {_kib(ours)} | {_kib(ha)} "
            f"| {ours['frames'] if ours else '-'}/{ours['expected_frames'] if ours else '-'} |"
        )
    for count, result in sorted(share.items()):
        print(
            f"\n- share workload, {count} clients (10 of 1,000 devices each, 100 reports/s): "
            f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms, "
            f"{result['rss_per_connection_kib']:.1f} KiB per connection, "
            f"{result['frames']}/{result['expected_frames']} sampled frames"
        )
    for count, result in sorted(latency["sse"].items()):
        ws = latency["ours"].get(count)
        print(
            f"\n- SSE, {count} clients (10 of 1,000 devices each, 1,000 reports/s): p50 {result['p50']:.2f} ms, "
            f"p99 {result['p99']:.2f} ms, {result['frames']}/{result['expected_frames']} sampled events"
            + (f"; the WebSocket in the same run: p50 {ws['p50']:.2f} ms, p99 {ws['p99']:.2f} ms" if ws else "")
        )
    if args.plot:
        print(f"\nPlot: `{os.path.relpath(args.plot, REPO)}`")


def _pair(result: dict[str, Any] | None) -> str:
    return f"{result['p50']:.1f} / {result['p99']:.1f}" if result else "-"


def _kib(result: dict[str, Any] | None) -> str:
    return f"{result['rss_per_connection_kib']:.1f}" if result else "-"


if __name__ == "__main__":
    main()
