"""Benchmark: the add-on server's sustained MQTT ingest with persistence, against a bare paho floor.

Run: ``.venv/bin/python bench/server_ingest.py [--messages 100000] [--repeats 3] [--workers 2]``
(``--quick``: 5,000 messages, one repeat, < 1 min). PostgreSQL from ``THERMO_BRIDGE_PG_DSN``
(default ``postgresql://postgres@127.0.0.1:5432/test``; each variant gets a fresh schema,
dropped afterwards); ``--variants floor,sqlite`` runs without it.

How the load generator is kept from starving the subscriber on 2 cores: the broker queue
is pre-loaded. Every consumer first creates its MQTT v5 persistent session (clean start
off, session expiry, QoS 1 subscription) and disconnects; then a raw-socket MQTT 3.1.1
publisher (pre-encoded packets, no paho) publishes the state reports with QoS 1 and counts
the broker's PUBACKs; only then is each consumer started, alone, and timed while it drains
its queue. No publisher runs during a measurement, so the figure is what one consumer
sustains when it is the bottleneck: the broker hands it messages as fast as it takes them.
This is also the production situation it models: the server coming back after a restart
or an outage to a backlog.

Variants, all draining byte-identical messages from the same broker in the same run:

* ``floor``: a bare paho 2.x subscriber (MQTT v5, persistent session, QoS 1, paho's own
  acks) that only ``json.loads`` each payload. paho's own receive loop in its thread.
* ``sqlite``: our server's ingest (``MqttTransport`` + ``Ingest`` + store, started and
  stopped in app.py's order, ``gc.freeze()`` after start-up like the app) into a SQLite
  file (WAL, synchronous=NORMAL, the default URL).
* ``postgres``: the same into PostgreSQL.
* ``shared``: ``--workers`` ingest processes in one MQTT v5 shared subscription group
  (``$share/bench/...``), all into one PostgreSQL schema: the path past one core.

Every state report has a per-device unique ``seq`` (100 devices round-robin). Figures:

* rate: state reports done / (time of the last one - the consumer's connect call), msg/s;
  done = decoded (floor) or committed by the store (ours; its QoS 1 ack goes out then).
  Median over ``--repeats`` runs, each run with a fresh broker and fresh stores; the
  order of the variants rotates between runs.
* lost: reports the broker acknowledged to the publisher minus distinct (device, seq)
  state reports counted in the store's database afterwards (the floor: distinct ones it
  decoded). Also checked: history rows = 2 x stored reports (temperature, humidity).
* ratio: variant rate / floor rate of the same run.
* CPU: the consumer process's CPU seconds per 1,000 messages; machine busy: share of both
  cores busy during the drain (from /proc/stat: broker, PostgreSQL and consumer together).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _server_common import (
    PG_DSN_ENV,
    REPO,
    RawPublisher,
    config_messages,
    count_pg,
    count_sqlite,
    device_config,
    machine,
    now_iso,
    pg_create_schema,
    pg_drop_schema,
    pg_dsn,
    pg_problem,
    state_messages,
    with_search_path,
)

from tests.broker import Mosquitto

WORKER = str(Path(__file__).resolve().parent / "_server_worker.py")
ALL_VARIANTS = ("floor", "sqlite", "postgres", "shared")
STALL_SECONDS = 20.0


class Worker:
    """A consumer process; a thread reads its JSON lines."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=REPO
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.latest: dict[str, Any] = {"n": 0, "t_last": 0.0}
        self.final: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        import json  # noqa: PLC0415

        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if "final" in obj:
                self.final = obj
            elif "n" in obj:
                self.latest = obj
                continue
            self.lines.put(obj)
        self.lines.put(None)

    def expect(self, key: str, timeout: float = 60) -> dict[str, Any]:
        """The next control line (it must have ``key``)."""
        obj = self.lines.get(timeout=timeout)
        if obj is None or key not in obj:
            raise RuntimeError(f"worker said {obj!r} instead of {key!r}; see {self.log.name}")
        return obj

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 60) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def snapshot() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds so far) of every process on the machine."""
    out: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            comm = text[text.index("(") + 1 : text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            out[int(stat.parent.name)] = (comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def cpu_by_name(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], exclude: set[int]
) -> dict[str, float]:
    """CPU seconds used between two snapshots, summed per command name (new processes count whole)."""
    used: dict[str, float] = {}
    for pid, (comm, cpu) in after.items():
        if pid in exclude:
            continue
        delta = cpu - before[pid][1] if pid in before else cpu  # kernel workers rename themselves: keep the pid
        if delta > 0:
            used[comm] = used.get(comm, 0.0) + delta
    return used


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


def wait_idle(limit: float, threshold: float = 0.15) -> float:
    """Wait (at most ``limit`` s) for a quiet machine; return the busy share of the last 0.5 s.

    On a shared machine other work (a test suite) shows up directly in the figures; this
    waits for it to pause, and the figure is printed next to each drain either way.
    """
    deadline = time.monotonic() + limit
    while True:
        b0 = cpu_busy()
        time.sleep(0.5)
        b1 = cpu_busy()
        busy = (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
        if busy <= threshold or time.monotonic() >= deadline:
            return busy


class Run:
    """One repeat: a fresh broker, fresh stores, every variant's session, one pre-load, the drains."""

    def __init__(self, args: argparse.Namespace, index: int, workdir: Path) -> None:
        self.args = args
        self.index = index
        self.dir = workdir / f"run{index}"
        self.dir.mkdir(parents=True)
        self.broker = Mosquitto(self.dir / "broker", websockets=False, extra_config="autosave_interval 1800\n")
        self.schemas: dict[str, str] = {}
        self.stores: dict[str, str] = {}

    def consumers(self, variant: str) -> list[tuple[str, list[str]]]:
        """(client id, extra argv) of each process of a variant."""
        if variant == "floor":
            return [("bench_floor", ["--kind", "floor"])]
        if variant == "shared":
            return [
                (f"bench_shared_{i}", ["--kind", "ingest", "--store", self.stores[variant], "--shared-group", "bench"])
                for i in range(self.args.workers)
            ]
        return [(f"bench_{variant}", ["--kind", "ingest", "--store", self.stores[variant]])]

    def spawn(self, variant: str, phase: str, extra: list[str] | None = None) -> list[Worker]:
        workers = []
        for i, (client_id, argv) in enumerate(self.consumers(variant)):
            cmd = [
                sys.executable,
                WORKER,
                "--phase",
                phase,
                "--port",
                str(self.broker.port),
                "--client-id",
                client_id,
                *argv,
                *(extra or []),
            ]
            if phase == "drain" and self.args.profile and variant != "floor":
                cmd += ["--profile", str(Path(self.args.profile) / f"run{self.index}_{variant}_{i}.prof")]
            workers.append(Worker(cmd, self.dir / f"{phase}_{variant}_{i}.log"))
        return workers

    async def prepare(self) -> None:
        self.broker.start()
        dsn = pg_dsn()
        for variant in self.args.variants:
            if variant == "sqlite":
                self.stores[variant] = f"sqlite:///{self.dir / 'ingest.db'}"
            elif variant in ("postgres", "shared"):
                schema = await pg_create_schema(dsn, f"tb_bench_{variant}")
                self.schemas[variant] = schema
                self.stores[variant] = with_search_path(dsn, schema)
        if "shared" in self.stores:
            await self._seed_shared()
        pub = RawPublisher(self.broker.host, self.broker.port)
        try:
            pub.publish_all(config_messages(self.args.devices), retain=True)
        finally:
            pub.close()
        registering: list[tuple[str, Worker]] = []
        for variant in self.args.variants:
            expect = ["--expect-devices", str(self.args.devices)] if variant in ("sqlite", "postgres") else []
            registering += [(variant, w) for w in self.spawn(variant, "register", expect)]
        for variant, worker in registering:
            answer = worker.expect("registered")
            worker.wait()
            if variant in ("sqlite", "postgres") and answer.get("devices") != self.args.devices:
                raise RuntimeError(f"{variant}: {answer.get('devices')} devices stored at registration")

    async def _seed_shared(self) -> None:
        """Shared subscriptions get no retained messages (MQTT v5 4.8.2): the replicas' store knows the devices."""
        from thermo_bridge_server.store import create_store  # noqa: PLC0415

        store = create_store(self.stores["shared"], retention_days=365, dead_letter_limit=1000)
        await store.open()
        try:
            now = time.time()
            await asyncio.gather(*(store.apply_config(device_config(i), now) for i in range(self.args.devices)))
        finally:
            await store.close()

    def preload(self) -> tuple[int, int, float]:
        """Publish the state reports while every consumer is away; (published, acked by the broker, seconds)."""
        messages = state_messages(self.args.devices, self.args.messages, first_seq=1)
        pub = RawPublisher(self.broker.host, self.broker.port)
        t0 = time.monotonic()
        try:
            acked = pub.publish_all(messages)
        finally:
            pub.close()
        return len(messages), acked, time.monotonic() - t0

    def drain(self, variant: str, expected: int) -> dict[str, Any]:
        workers = self.spawn(variant, "drain")
        for w in workers:
            w.expect("ready")
        background = wait_idle(self.args.wait_idle)
        assert self.broker._proc is not None
        broker_pid = self.broker._proc.pid
        broker0 = proc_cpu(broker_pid)
        snap0 = snapshot()
        busy0 = cpu_busy()
        t_go = time.monotonic()
        for w in workers:
            w.send("go")
        last_total, last_change = -1, time.monotonic()
        while True:
            time.sleep(0.02)
            total = sum(w.latest["n"] for w in workers)
            if total != last_total:
                last_total, last_change = total, time.monotonic()
            if total >= expected or time.monotonic() - last_change > STALL_SECONDS:
                break
            if any(w.proc.poll() is not None for w in workers):
                break
        busy1 = cpu_busy()
        t_stop = time.monotonic()
        broker_cpu = proc_cpu(broker_pid) - broker0
        used = cpu_by_name(snap0, snapshot(), {os.getpid(), broker_pid, *(w.proc.pid for w in workers)})
        pg_cpu = sum(v for k, v in used.items() if k.startswith("postgres"))
        others = sorted(((k, v) for k, v in used.items() if not k.startswith("postgres")), key=lambda kv: -kv[1])[:3]
        for w in workers:
            with contextlib.suppress(BrokenPipeError):
                w.send("stop")
        for w in workers:
            w.wait(120)
        finals = [w.final for w in workers]
        if any(f is None for f in finals):
            raise RuntimeError(f"{variant}: a worker ended without its final report; see {self.dir}")
        done = [f for f in finals if f is not None]
        t_start = min(f["t_connect"] for f in done)
        t_end = max(f["t_last"] for f in done if f["n"]) if any(f["n"] for f in done) else t_start
        n = sum(f["n"] for f in done)
        cpu = sum(f["cpu"] for f in done)
        return {
            "n": n,
            "seconds": t_end - t_start,
            "rate": n / (t_end - t_start) if t_end > t_start else 0.0,
            "cpu_us": 1e6 * cpu / n if n else 0.0,
            "broker_cpu_us": 1e6 * broker_cpu / n if n else 0.0,
            "pg_cpu_us": 1e6 * pg_cpu / n if n else 0.0,
            "other_cores": max(
                0.0,
                (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * (os.cpu_count() or 1)
                - (cpu + broker_cpu + pg_cpu) / max(1e-9, t_stop - t_go),
            ),
            "machine_busy": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
            "per_worker": [f["n"] for f in done],
            "background": background,
            "others": [(k, round(v / max(1e-9, t_stop - t_go), 2)) for k, v in others],
            "distinct_floor": sum(f.get("distinct", 0) for f in done),
            "duplicates": sum(f.get("ingest", {}).get("duplicates", 0) for f in done),
            "rejected": sum(sum(f.get("ingest", {}).get("rejected_by_reason", {}).values()) for f in done),
            "store_errors": sum(f.get("ingest", {}).get("store_errors", 0) for f in done),
            "write_failures": sum(f.get("failed", 0) for f in done),
            "batches": sum(f.get("store", {}).get("batches_total", 0) for f in done),
            "max_commit_ms": 1000 * max((f.get("store", {}).get("max_commit_seconds", 0.0) for f in done), default=0.0),
        }

    async def stored(self, variant: str) -> dict[str, int]:
        if variant == "sqlite":
            return count_sqlite(str(self.dir / "ingest.db"))
        return await count_pg(pg_dsn(), self.schemas[variant])

    async def cleanup(self) -> None:
        self.broker.stop()
        for schema in self.schemas.values():
            with contextlib.suppress(Exception):
                await pg_drop_schema(pg_dsn(), schema)


async def run_once(args: argparse.Namespace, index: int, workdir: Path) -> dict[str, Any]:
    run = Run(args, index, workdir)
    results: dict[str, Any] = {}
    try:
        await run.prepare()
        published, acked, pub_seconds = run.preload()
        print(
            f"run {index + 1}: {published} reports published, {acked} acked by the broker "
            f"({published / pub_seconds:,.0f} msg/s into the broker queue)",
            flush=True,
        )
        order = list(args.variants)
        shift = index % len(order)
        order = order[shift:] + order[:shift]
        for variant in order:
            result = run.drain(variant, acked)
            if variant == "floor":
                result["stored"] = {"distinct_reports": result["distinct_floor"]}
            else:
                result["stored"] = await run.stored(variant)
            result["lost"] = acked - result["stored"]["distinct_reports"]
            result["acked"] = acked
            results[variant] = result
            extra = ""
            if variant != "floor":
                hist = result["stored"]["history_rows"]
                extra = (
                    f", history rows {hist:,} ({'=' if hist == 2 * result['stored']['distinct_reports'] else '!='} 2x)"
                )
            print(
                f"  {variant:9s} {result['rate']:9,.0f} msg/s  lost {result['lost']}  "
                f"CPU/msg: consumer {result['cpu_us']:.0f} µs, broker {result['broker_cpu_us']:.0f} µs, "
                f"PostgreSQL {result['pg_cpu_us']:.0f} µs; "
                f"machine busy {100 * result['machine_busy']:.0f}% (before: {100 * result['background']:.0f}%, "
                f"not ours: {result['other_cores']:.2f} cores, e.g. {result['others']})"
                f"  per worker {result['per_worker']}{extra}; duplicates {result['duplicates']}, "
                f"rejected {result['rejected']}, store errors {result['store_errors'] + result['write_failures']}"
                + (
                    f"; {result['batches']:,} store batches (mean {result['n'] / max(1, result['batches']):.0f} "
                    f"writes, slowest commit {result['max_commit_ms']:.0f} ms)"
                    if result["batches"]
                    else ""
                ),
                flush=True,
            )
    finally:
        await run.cleanup()
    return results


def summarize(args: argparse.Namespace, runs: list[dict[str, Any]], argv: list[str], env: dict[str, str]) -> str:
    lines = [f"Measured {now_iso()}.", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    lines += [
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'bench/server_ingest.py', *map(shlex.quote, argv)])}`",
        f"({args.messages:,} QoS 1 state reports from {args.devices} devices per run, {len(runs)} runs,"
        f" shared = {args.workers} worker processes)",
        "",
        "| variant | msg/s (median) | ratio to floor (median of per-run ratios) | lost (all runs) |"
        " CPU µs/msg: consumer | broker | PostgreSQL | machine busy (2 cores) | of which not ours (cores) |"
        " runs (msg/s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in args.variants:
        rates = [r[variant]["rate"] for r in runs if variant in r]
        if not rates:
            continue
        ratios = [r[variant]["rate"] / r["floor"]["rate"] for r in runs if "floor" in r and r["floor"]["rate"]]
        lost = sum(r[variant]["lost"] for r in runs)
        cpu = statistics.median(r[variant]["cpu_us"] for r in runs)
        broker_cpu = statistics.median(r[variant]["broker_cpu_us"] for r in runs)
        pg_cpu = statistics.median(r[variant]["pg_cpu_us"] for r in runs)
        busy = statistics.median(r[variant]["machine_busy"] for r in runs)
        other = statistics.median(r[variant]["other_cores"] for r in runs)
        name = f"shared x{args.workers}" if variant == "shared" else variant
        lines.append(
            f"| {name} | {statistics.median(rates):,.0f} | "
            f"{f'{statistics.median(ratios):.2f}' if ratios else '-'} | {lost} | "
            f"{cpu:.0f} | {broker_cpu:.0f} | {pg_cpu:.0f} | {100 * busy:.0f}% | {other:.2f} | "
            f"{', '.join(f'{x:,.0f}' for x in rates)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000, help="state reports per run (default 100,000)")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="ingest processes in the shared variant")
    parser.add_argument(
        "--variants", default=",".join(ALL_VARIANTS), help="comma-separated subset of " + ",".join(ALL_VARIANTS)
    )
    parser.add_argument("--quick", action="store_true", help="5,000 messages, one run (< 1 min)")
    parser.add_argument("--profile", default="", help="folder for cProfile dumps of every ingest drain")
    parser.add_argument(
        "--wait-idle", type=float, default=30.0, help="wait up to S seconds for an idle machine before each drain"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (broker and worker logs)")
    args = parser.parse_args()
    argv = sys.argv[1:]
    if args.quick:
        args.messages, args.repeats = 5_000, 1
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(ALL_VARIANTS)
    if unknown or not args.variants:
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    if {"postgres", "shared"} & set(args.variants) and (problem := asyncio.run(pg_problem())):
        sys.exit(f"PostgreSQL is not reachable ({problem}); set {PG_DSN_ENV} or run --variants floor,sqlite")
    env = machine()
    workdir = Path(tempfile.mkdtemp(prefix="tb_bench_ingest_"))
    print(f"work folder {workdir}", flush=True)
    runs = []
    ok = False
    try:
        for index in range(args.repeats):
            runs.append(asyncio.run(run_once(args, index, workdir)))
        ok = True
    finally:
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not ok:
            print(f"failed: broker and worker logs kept in {workdir}", file=sys.stderr)
    print()
    print(summarize(args, runs, argv, env))


if __name__ == "__main__":
    main()
