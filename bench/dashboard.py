"""Dashboard budgets in headless Chromium against a real server: first render, bundle size, update latency.

    .venv/bin/python bench/dashboard.py [--devices 100] [--runs 5] [--rate 200] [--seconds 10]

Starts a private mosquitto, the server (dev auth, SQLite, a process) and ``--devices``
simulated thermostats, then:

* first render: navigation start → every card rendered (the page's ``tb:all-cards-rendered``
  mark in bench mode, ``?bench``), median of ``--runs`` page loads;
* bundle: every built file gzipped (budget 150 KB);
* update latency at ``--rate`` state messages a second: each state frame's arrival in the page
  → its card rendered (DOM) and → the start of the frame after the one that painted it, p50/p99
  (budget 100 ms), with the page's long tasks (> 50 ms) over the same window.

Budgets (docs/benchmarks.md): first render < 500 ms, bundle < 150 KB, update < 100 ms.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.broker import Mosquitto  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.integration.server_process import ServerProcess  # noqa: E402
from thermo_bridge_sim.simulator import Simulator  # noqa: E402

DASHBOARD = ROOT / "addon" / "thermo_bridge_server" / "http" / "dashboard"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bundle_bytes() -> int:
    return sum(len(gzip.compress(p.read_bytes(), 9)) for p in DASHBOARD.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tb_bench_dash_") as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto")
        broker.start()
        server = ServerProcess(Path(tmp) / "server", broker, env={"THERMO_BRIDGE_WS_MAX_MESSAGE_BYTES": "1048576"})
        server.start()
        sim = Simulator(broker.host, broker.port, thermostats=args.devices, sensors=0, id_prefix="bench", seed=1)
        sim.start()
        token = server.mint("bench|admin", "read:devices", "write:devices", "admin")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                # wait_for_function evaluates a string, which the page's CSP (rightly) forbids.
                browser = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 800})  # type: ignore[assignment]
                renders: list[float] = []
                for _ in range(args.runs):
                    page = browser.new_page()
                    page.goto(f"{server.url}/?bench#token={token}")
                    page.wait_for_function("window.__tbBench && window.__tbBench.allRendered !== null", timeout=60_000)
                    renders.append(page.evaluate("window.__tbBench.allRendered"))
                    page.close()
                page = browser.new_page()
                page.goto(f"{server.url}/?bench#token={token}")
                page.wait_for_function("window.__tbBench && window.__tbBench.allRendered !== null", timeout=60_000)
                page.evaluate("window.__tbBench.longTasks.length = 0; window.__tbBench.latencies.length = 0")
                ids = list(sim.devices)
                interval = 1 / args.rate
                sent = 0
                started = time.monotonic()
                while time.monotonic() - started < args.seconds:
                    sim.publish_state(ids[sent % len(ids)], temperature=round(18 + (sent % 50) / 10, 1))
                    sent += 1
                    time.sleep(max(0.0, started + sent * interval - time.monotonic()))
                time.sleep(1.0)
                latencies = page.evaluate("window.__tbBench.latencies")
                long_tasks = page.evaluate("window.__tbBench.longTasks")
                browser.close()  # the context
        finally:
            sim.stop()
            server.stop()
            broker.stop()
    dom = [item["dom"] for item in latencies]
    paint = [item["paint"] for item in latencies]
    print(
        f"first render, {args.devices} devices: median {statistics.median(renders):.0f} ms over {args.runs} loads "
        f"({', '.join(f'{r:.0f}' for r in renders)})"
    )
    print(f"bundle: {bundle_bytes()} bytes gzipped")
    print(f"updates: {sent} sent at {sent / args.seconds:.0f}/s, {len(latencies)} measured")
    if latencies:
        print(f"  frame → DOM:   p50 {percentile(dom, 0.5):.1f} ms, p99 {percentile(dom, 0.99):.1f} ms")
        print(f"  frame → paint: p50 {percentile(paint, 0.5):.1f} ms, p99 {percentile(paint, 0.99):.1f} ms")
    longest = max(long_tasks, default=0)
    print(f"  the page's long tasks (> 50 ms) meanwhile: {len(long_tasks)}, longest {longest:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
