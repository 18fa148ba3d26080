"""Benchmark: history queries of 10,000 points on SQLite and PostgreSQL, in the store and over HTTP.

Run: ``.venv/bin/python bench/server_history.py [--devices 100] [--points 15000] [--iterations 30]``
(``--quick``: 20 devices x 10,000 points, < 1 min). PostgreSQL from ``THERMO_BRIDGE_PG_DSN``
(default ``postgresql://postgres@127.0.0.1:5432/test``; a fresh schema, dropped afterwards);
``--backends sqlite`` runs without it.

Table: ``--devices`` thermostats x 2 keys (temperature, humidity) x ``--points`` samples one
minute apart, written in time order (all devices at t, then t + 60 s: the order the ingest
writes them), so the queried device's rows are spread over the whole table. The schema is
the store's own (its migrations); devices are stored through the store, the history rows
are bulk-inserted (SQLite ``executemany``, PostgreSQL ``COPY``), then ``ANALYZE`` (SQLite)
or ``VACUUM ANALYZE`` (PostgreSQL, the state autovacuum reaches on an insert-heavy table)
and a ``CHECKPOINT`` (when allowed) so that writing the load out does not overlap the timing.

Queries, each on one device in the middle of the id range:

* ``raw 10k``: ``store.history(dev, start, end)`` over a window holding exactly 10,000
  points (5,000 samples x 2 keys); the API's maximum page.
* ``agg 15 min``: the same window aggregated to 15-minute buckets (mean/min/max/count).
* ``agg 1 h, all``: the device's whole history (``2 x --points`` rows) in 1-hour buckets.
* ``HTTP raw 10k``/``HTTP agg 15 min``: ``GET /api/v1/devices/{id}/history`` for the same
  window through the real app (``create_app``, dev-auth token, aiohttp on loopback),
  timed to the last byte of the body: auth, store query and JSON encoding.

Figures: median and p95 latency over ``--iterations`` calls after 3 warm-up calls, with
everything alive before the timing frozen out of the GC (``gc.freeze``, as app.py does
after start-up).
Target: a 10,000-point query under 50 ms median, so that a chart of one device's raw history
loads without a visible wait (results in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import shlex
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from _server_common import (
    PG_DSN_ENV,
    device_config,
    device_id,
    machine,
    now_iso,
    pg_create_schema,
    pg_drop_schema,
    pg_dsn,
    pg_problem,
    with_search_path,
)

from tests.broker import Mosquitto
from thermo_bridge_server.store import create_store
from thermo_bridge_server.store.base import Store

STEP = 60.0
WINDOW_SAMPLES = 5_000  # x 2 keys = 10,000 points
KEYS = ("humidity", "temperature")


class Layout:
    """Where the data is: time origin, the queried device and window."""

    def __init__(self, devices: int, points: int) -> None:
        if points < WINDOW_SAMPLES + 2:
            raise SystemExit(f"--points must be at least {WINDOW_SAMPLES + 2}")
        self.devices = devices
        self.points = points
        self.t0 = float(int(time.time() - points * STEP) // 3600 * 3600)
        self.device = device_id(devices // 2)
        first = (points - WINDOW_SAMPLES) // 2
        self.start = self.t0 + first * STEP
        self.end = self.start + WINDOW_SAMPLES * STEP  # [start, end): exactly WINDOW_SAMPLES samples
        self.all_start = self.t0
        self.all_end = self.t0 + points * STEP

    def rows(self) -> Iterator[tuple[str, float, str, float]]:
        ids = [device_id(i) for i in range(self.devices)]
        for n in range(self.points):
            ts = self.t0 + n * STEP
            temp = 19.0 + (n % 40) / 10
            hum = float(40 + n % 20)
            for dev in ids:
                yield (dev, ts, "temperature", temp)
                yield (dev, ts, "humidity", hum)


async def seed_devices(store: Store, devices: int) -> None:
    now = time.time()
    await asyncio.gather(*(store.apply_config(device_config(i), now) for i in range(devices)))


async def fill_sqlite(url_path: Path, layout: Layout) -> None:
    store = create_store(f"sqlite:///{url_path}", retention_days=3650, dead_letter_limit=10)
    await store.open()
    try:
        await seed_devices(store, layout.devices)
    finally:
        await store.close()

    def bulk() -> None:
        conn = sqlite3.connect(url_path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            with conn:
                conn.executemany("INSERT INTO history (device_id, ts, key, value) VALUES (?, ?, ?, ?)", layout.rows())
            conn.execute("ANALYZE")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    await asyncio.to_thread(bulk)


async def fill_pg(url: str, dsn: str, schema: str, layout: Layout) -> None:
    import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415

    store = create_store(url, retention_days=3650, dead_letter_limit=10)
    await store.open()
    try:
        await seed_devices(store, layout.devices)
    finally:
        await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.copy_records_to_table(
            "history", records=layout.rows(), columns=["device_id", "ts", "key", "value"], schema_name=schema
        )
        await conn.execute("VACUUM ANALYZE history")
        with contextlib.suppress(Exception):  # superuser only: write the load out now, not during the timing
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def timed(call: Callable[[], Awaitable[int]], iterations: int) -> dict[str, Any]:
    """Median and p95 (ms) of ``call`` after 3 warm-ups; ``call`` returns the number of points.

    Whatever is alive before the timing (earlier phases, the app) is moved out of the GC's
    generations first, as app.py does after start-up (``gc.freeze``): otherwise a full
    collection of this benchmark's own leftovers lands in a timed call.
    """
    gc.collect()
    gc.freeze()
    for _ in range(3):
        count = await call()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        count = await call()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return {"median": statistics.median(samples), "p95": p95, "points": count}


async def bench_store(store: Store, layout: Layout, iterations: int) -> dict[str, dict[str, Any]]:
    dev = layout.device

    async def raw() -> int:
        return len(await store.history(dev, layout.start, layout.end))

    async def agg() -> int:
        return len(await store.history(dev, layout.start, layout.end, resolution=900))

    async def agg_all() -> int:
        return len(await store.history(dev, layout.all_start, layout.all_end, resolution=3600))

    return {
        "raw 10k": await timed(raw, iterations),
        "agg 15 min": await timed(agg, iterations),
        "agg 1 h, all": await timed(agg_all, iterations),
    }


async def bench_http(store_url: str, workdir: Path, layout: Layout, iterations: int) -> dict[str, dict[str, Any]]:
    """The same queries through the real app over loopback HTTP."""
    import aiohttp  # noqa: PLC0415
    from aiohttp import web  # noqa: PLC0415

    from thermo_bridge_server.app import COMPONENTS, create_app  # noqa: PLC0415
    from thermo_bridge_server.config import load_config  # noqa: PLC0415

    broker = Mosquitto(workdir / "broker", websockets=False)
    await asyncio.to_thread(broker.start)
    runner: web.AppRunner | None = None
    try:
        config = load_config(
            [],
            {
                "THERMO_BRIDGE_MQTT_HOST": broker.host,
                "THERMO_BRIDGE_MQTT_PORT": str(broker.port),
                "THERMO_BRIDGE_MQTT_CLIENT_ID": f"tb_bench_history_{broker.port}",
                "THERMO_BRIDGE_STORE_URL": store_url,
                "THERMO_BRIDGE_DEV_AUTH": "true",
                "THERMO_BRIDGE_DEV_KEY_PATH": str(workdir / "dev_key.pem"),
                "THERMO_BRIDGE_INTERNAL_TOKEN_PATH": str(workdir / "internal_token"),
                "THERMO_BRIDGE_ZEROCONF": "false",
                "THERMO_BRIDGE_RETENTION_DAYS": "3650",
                "THERMO_BRIDGE_RATE_LIMIT_PER_MINUTE": "100000",
                "THERMO_BRIDGE_OPTIONS_FILE": "",
            },
        )
        app = await create_app(config)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        issuer = app[COMPONENTS].dev_issuer
        assert issuer is not None
        token = issuer.mint("bench-user", ["read:devices"], homes=["default"])
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}/api/v1/devices/{layout.device}/history"
        async with aiohttp.ClientSession() as session:

            async def get(params: dict[str, str]) -> int:
                async with session.get(base, params=params, headers=headers) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}: {body[:300]!r}")
                    return body.count(b'"ts"')

            window = {"start": repr(layout.start), "end": repr(layout.end)}
            return {
                "HTTP raw 10k": await timed(lambda: get(window), iterations),
                "HTTP agg 15 min": await timed(lambda: get({**window, "resolution": "900"}), iterations),
            }
    finally:
        if runner is not None:
            await runner.cleanup()
        await asyncio.to_thread(broker.stop)


async def run_backend(backend: str, args: argparse.Namespace, layout: Layout, workdir: Path) -> dict[str, Any]:
    schema = ""
    dsn = pg_dsn()
    t0 = time.monotonic()
    if backend == "sqlite":
        path = workdir / "history.db"
        url = f"sqlite:///{path}"
        await fill_sqlite(path, layout)
    else:
        schema = await pg_create_schema(dsn, "tb_bench_history")
        url = with_search_path(dsn, schema)
        await fill_pg(url, dsn, schema, layout)
    fill_seconds = time.monotonic() - t0
    try:
        store = create_store(url, retention_days=3650, dead_letter_limit=10)
        await store.open()
        try:
            results = await bench_store(store, layout, args.iterations)
        finally:
            await store.close()
        if not args.no_http:
            results.update(await bench_http(url, workdir / f"http_{backend}", layout, args.iterations))
    finally:
        if schema:
            with contextlib.suppress(Exception):
                await pg_drop_schema(dsn, schema)
    return {"fill_seconds": fill_seconds, "results": results}


async def amain(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    layout = Layout(args.devices, args.points)
    out = {}
    for backend in args.backends:
        print(f"{backend}: filling {layout.devices * layout.points * 2:,} history rows ...", flush=True)
        out[backend] = await run_backend(backend, args, layout, workdir)
        print(f"  filled in {out[backend]['fill_seconds']:.0f} s", flush=True)
        for name, r in out[backend]["results"].items():
            print(f"  {name:16s} median {r['median']:7.1f} ms   p95 {r['p95']:7.1f} ms   {r['points']:,} points")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--points", type=int, default=15_000, help="samples per device and key, one minute apart")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP API measurements")
    parser.add_argument("--quick", action="store_true", help="20 devices x 10,000 points, 10 iterations (< 1 min)")
    args = parser.parse_args()
    argv = sys.argv[1:]
    if args.quick:
        args.devices, args.points, args.iterations = 20, 10_000, 10
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.backends or set(args.backends) - {"sqlite", "postgres"}:
        parser.error("--backends: sqlite and/or postgres")
    if "postgres" in args.backends and (problem := asyncio.run(pg_problem())):
        sys.exit(f"PostgreSQL is not reachable ({problem}); set {PG_DSN_ENV} or run --backends sqlite")
    env = machine()
    workdir = Path(tempfile.mkdtemp(prefix="tb_bench_history_"))
    try:
        out = asyncio.run(amain(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = args.devices * args.points * 2
    print()
    print(f"Measured {now_iso()}.")
    print()
    print("| | |\n|---|---|")
    for k, v in env.items():
        print(f"| {k} | {v} |")
    print()
    print(f"Command: `{' '.join(['.venv/bin/python', 'bench/server_history.py', *map(shlex.quote, argv)])}`")
    print(
        f"(history table: {rows:,} rows = {args.devices} devices x 2 keys x {args.points:,} samples; "
        f"{args.iterations} timed calls per query after 3 warm-ups)"
    )
    print()
    names = list(next(iter(out.values()))["results"])
    print("| query | points | " + " | ".join(f"{b} median / p95 (ms)" for b in out) + " |")
    print("|---|---|" + "---|" * len(out))
    for name in names:
        cells = [f"{out[b]['results'][name]['median']:.1f} / {out[b]['results'][name]['p95']:.1f}" for b in out]
        print(f"| {name} | {out[next(iter(out))]['results'][name]['points']:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
