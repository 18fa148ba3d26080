"""Benchmark: thermo_bridge against Home Assistant's own MQTT discovery, same devices, same run.

Run: ``.venv/bin/python bench/ha_discovery.py [--devices 1000] [--updates 1000] [--repeats 3]``

Every trial runs in a fresh process (``--worker``) with a fresh private mosquitto, a
real Home Assistant core (bench/_ha.py) connected to it through HA's MQTT integration,
and a load generator in another process (bench/_publisher.py) so that its CPU is not
HA's. Variants alternate (baseline, ours, ours, baseline, ...) and the medians are
reported with the ratio ours/baseline.

Device set: N thermostats, each with temperature, humidity and battery. Ours: one
retained thermo_bridge config per device. Baseline: HA's MQTT discovery with one
retained config per entity (a climate and three sensors, ``default_entity_id`` set,
templates reading the same JSON state topic). Optional third variant ``device``: HA's
device-based discovery (one retained config per device carrying the same four
components). All variants also get a retained availability
``online`` and a retained first full state, byte-identical between variants.

Definitions:
- calibration: before measuring, one extra device is announced and the entities it gets
  are counted (per domain, and how many reach a real state); that sets the expectations.
- discovery time: from the publisher's first config publish (the consumer is already
  running and subscribed: configs arrive live, as when devices are added) to the moment
  the last expected entity has a state that is neither ``unknown`` nor ``unavailable``
  (which implies it is in the entity registry; the registry count is checked after).
- discovery CPU: HA process CPU time (``time.process_time``: every thread of the HA
  process) over the same window.
- update CPU: HA process CPU per 1,000 MQTT state messages. Each message is a full
  6-key state of one device (round-robin) in which temperature and humidity changed, so
  each one changes 3 entities (climate attributes, temperature, humidity sensors).
  Published at ``--rate`` msgs/s, QoS ``--qos``; window = first publish to the last
  temperature-sensor state change.
- latency: publish call (load generator) -> ``state_changed`` of that device's
  temperature sensor in HA, both on CLOCK_MONOTONIC.
- RSS per entity: growth of HA's resident set from before to after the discovery (after
  ``gc.collect`` and a registry flush), divided by the number of new entities.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import importlib.metadata
import json
import math
import os
import platform
import pstats
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _machine import cpu_model, git_head, mosquitto_version, ram  # noqa: E402

VARIANTS = ("baseline", "device", "ours")
DEFAULT_VARIANTS = "baseline,ours"
PLATFORM = {"baseline": "mqtt", "device": "mqtt", "ours": "thermo_bridge"}
LABEL = {"baseline": "HA MQTT discovery", "device": "HA MQTT device discovery", "ours": "thermo_bridge"}
RESULT_MARK = "RESULT "
BAD_STATES = frozenset({"unknown", "unavailable"})


# --------------------------------------------------------------------------- the worker (one trial)


class Publisher:
    """The load generator process, driven over its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, port: int) -> Publisher:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "_publisher.py"),
            "--port",
            str(port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        pub = cls(proc)
        ready = await pub._read()
        if not ready.get("ready"):
            raise RuntimeError(f"publisher did not start: {ready}")
        return pub

    async def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("publisher exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def request(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self.proc.stdin.drain()
        answer = await self._read()
        if "error" in answer:
            raise RuntimeError(f"publisher: {answer['error']}")
        return answer

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.request(op="quit")
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Tracker:
    """One ``state_changed`` listener that records what the phases need, cheaply."""

    def __init__(self) -> None:
        self.last_change = time.monotonic()
        self.first = asyncio.Event()
        # discovery phase
        self.domains: frozenset[str] = frozenset()
        self.exclude: frozenset[str] = frozenset()
        self.expected = 0
        self.good: dict[str, float] = {}
        self.ready = asyncio.Event()
        self.ready_at = (0.0, 0.0)  # (monotonic, process_time)
        # update phase
        self.watch: dict[str, list[float]] = {}
        self.updates_expected = 0
        self.updates_seen = 0
        self.updated = asyncio.Event()
        self.updated_at = (0.0, 0.0)

    def __call__(self, event: Any) -> None:
        now = time.monotonic()
        self.last_change = now
        self.first.set()
        new_state = event.data["new_state"]
        if new_state is None:
            return
        entity_id: str = event.data["entity_id"]
        times = self.watch.get(entity_id)
        if times is not None:
            times.append(now)
            self.updates_seen += 1
            if self.updates_seen >= self.updates_expected:
                self.updated_at = (now, time.process_time())
                self.updated.set()
            return
        if (
            self.expected
            and entity_id not in self.good
            and new_state.state not in BAD_STATES
            and new_state.domain in self.domains
            and entity_id not in self.exclude
        ):
            self.good[entity_id] = now
            if len(self.good) >= self.expected:
                self.ready_at = (now, time.process_time())
                self.ready.set()

    async def quiet(self, seconds: float, limit: float) -> None:
        """Wait until no state changed for ``seconds`` (at most ``limit`` seconds)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            await asyncio.sleep(seconds / 4)
            if time.monotonic() - self.last_change >= seconds:
                return


class GcWatch:
    """Records CPython's garbage collections (start, end, generation) while active."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float, int]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.monotonic()
        else:
            self.pauses.append((self._started, time.monotonic(), info["generation"]))

    def start(self) -> None:
        gc.callbacks.append(self)

    def stop(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


class Profiler:
    """cProfile of the event loop thread over one phase, when ``--profile DIR`` is given.

    Profiling slows HA down: the figures of a profiled run are not comparable.
    """

    def __init__(self, directory: str | None, variant: str, phase: str) -> None:
        self.path = Path(directory) / f"{variant}-{phase}-{os.getpid()}.pstats" if directory else None
        self.profile = cProfile.Profile() if self.path else None
        if self.profile is not None:
            self.profile.enable()

    def stop(self) -> None:
        if self.profile is None or self.path is None:
            return
        self.profile.disable()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.profile.dump_stats(self.path)
        stats = pstats.Stats(self.profile, stream=sys.stderr)
        print(f"profile of {self.path.name} (top 40 by own time):", file=sys.stderr)
        stats.sort_stats("tottime").print_stats(40)
        self.profile = None


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))  # nearest rank
    return ordered[index]


async def run_trial(args: argparse.Namespace) -> dict[str, Any]:
    """One trial of one variant; returns the measurements."""
    import logging  # noqa: PLC0415 - keep the orchestrator free of HA imports

    from homeassistant.const import EVENT_STATE_CHANGED  # noqa: PLC0415
    from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback  # noqa: PLC0415

    from bench import _ha  # noqa: PLC0415
    from tests.broker import Mosquitto  # noqa: PLC0415

    variant: str = args.worker
    t_start = time.monotonic()

    def phase(name: str) -> None:
        print(f"[{time.monotonic() - t_start:6.2f} s] {name}", file=sys.stderr, flush=True)

    platform_name = PLATFORM[variant]
    devices: int = args.devices
    tmp = Path(tempfile.mkdtemp(prefix=f"tb-bench-{variant}-"))
    logs = _ha.LogCounter()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger().addHandler(logs)
    # TCP_NODELAY on the broker's sockets too: otherwise Nagle + delayed ACK put a 40 ms
    # step into the latency tail of both variants and hide what HA itself does.
    broker = Mosquitto(tmp / "broker", websockets=False, extra_config="set_tcp_nodelay true\n")
    pub: Publisher | None = None
    hass: HomeAssistant | None = None
    try:
        broker.start()
        pub = await Publisher.start(broker.port)
        hass = await _ha.start_home_assistant(tmp / "config")
        await _ha.add_mqtt_entry(hass, broker.host, broker.port)
        if variant == "ours":
            await _ha.add_thermo_bridge_entry(hass, "thermo_bridge")
        logs.counts.clear()  # count what the measured phases log, not start-up notices
        logs.samples.clear()
        phase("HA started, MQTT connected")
        tracker = Tracker()

        @callback
        def on_state_changed(event: Event[EventStateChangedData]) -> None:
            # A @callback runs in the event loop; a plain callable would be sent to the executor.
            tracker(event)

        hass.bus.async_listen(EVENT_STATE_CHANGED, on_state_changed)

        # Calibration: what does one device become?
        await pub.request(op="discover", variant=variant, prefix="cal", count=1)
        # Done when every enabled entity it got has a real state and nothing changes for a while
        # (HA's discovery subscribes state topics with a cool-down, so states come late).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tracker.first.wait(), 20)
        deadline = time.monotonic() + 15
        while True:
            await tracker.quiet(0.3, 15)
            await hass.async_block_till_done()
            cal = _ha.platform_entities(hass, platform_name)
            cal_good = [e for e in cal if (st := hass.states.get(e.entity_id)) and st.state not in BAD_STATES]
            if (cal and len(cal_good) == sum(e.disabled_by is None for e in cal)) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        if not cal_good:
            raise RuntimeError(f"{variant}: the calibration device got no {platform_name} entity with a state")
        per_device = Counter(e.domain for e in cal)
        tracker.domains = frozenset(per_device)
        tracker.exclude = frozenset(e.entity_id for e in cal)

        await _ha.flush_storage(hass)
        gc.collect()
        rss0 = _ha.rss_bytes()

        phase("calibrated")
        # Discovery
        tracker.expected = len(cal_good) * devices
        profiler = Profiler(args.profile, variant, "discovery")
        cpu0 = time.process_time()
        sent = await pub.request(op="discover", variant=variant, prefix="bench", count=devices)
        try:
            await asyncio.wait_for(tracker.ready.wait(), args.timeout)
        except TimeoutError:
            raise RuntimeError(
                f"{variant}: only {len(tracker.good)} of {tracker.expected} entities had a state after {args.timeout} s"
            ) from None
        t_ready, cpu_ready = tracker.ready_at
        profiler.stop()
        await hass.async_block_till_done()
        bench_entries = [e for e in _ha.platform_entities(hass, platform_name) if e.entity_id not in tracker.exclude]
        bench_devices = {_ha.device_key(hass, e) for e in bench_entries}
        await _ha.flush_storage(hass)
        gc.collect()
        rss1 = _ha.rss_bytes()

        phase("discovered")
        # Idle CPU (background work of this HA with these entities)
        idle_cpu0 = time.process_time()
        await asyncio.sleep(0.5)
        idle_cpu = (time.process_time() - idle_cpu0) / 0.5

        phase("idle measured")
        # State updates
        temp_sensor: dict[int, str] = {}
        for entry in bench_entries:
            device_class = entry.original_device_class or entry.device_class
            key = _ha.device_key(hass, entry)
            if entry.domain == "sensor" and device_class == "temperature" and key is not None:
                temp_sensor[int(key.rsplit("_", 1)[1])] = entry.entity_id
        if len(temp_sensor) != devices:
            raise RuntimeError(f"{variant}: found {len(temp_sensor)} temperature sensors for {devices} devices")
        tracker.watch = {entity_id: [] for entity_id in temp_sensor.values()}
        tracker.updates_expected = args.updates
        profiler = Profiler(args.profile, variant, "updates")
        cpu_u0 = time.process_time()
        gc_watch = GcWatch()
        gc_watch.start()
        published = await pub.request(
            op="updates",
            variant=variant,
            prefix="bench",
            devices=devices,
            count=args.updates,
            rate=args.rate,
            qos=args.qos,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tracker.updated.wait(), 30 + args.updates / max(args.rate, 1))
        profiler.stop()
        gc_watch.stop()
        cpu_u1 = tracker.updated_at[1] if tracker.updated.is_set() else time.process_time()
        t_pub: list[float] = published["t_pub"]
        latencies: list[float] = []
        slow = slow_in_gc = 0  # latencies > 5 ms, and how many of them had a collection in their window
        for i, t in enumerate(t_pub):
            times = tracker.watch[temp_sensor[i % devices + 1]]
            if i // devices < len(times):
                t_seen = times[i // devices]
                latencies.append(t_seen - t)
                if t_seen - t > 0.005:
                    slow += 1
                    slow_in_gc += any(start < t_seen and end > t for start, end, _ in gc_watch.pauses)
        await hass.async_block_till_done()
        # Every temperature sensor must show the last value its device reported.
        wrong_final = 0
        for index, entity_id in temp_sensor.items():
            rounds = len(range(index - 1, args.updates, devices))
            expected = 20.0 if rounds == 0 else round(20.0 + rounds * 0.1, 1)  # bench/_publisher.py
            state = hass.states.get(entity_id)
            try:
                ok = state is not None and abs(float(state.state) - expected) < 0.051
            except ValueError:
                ok = False
            wrong_final += not ok

        phase("updates done")

        # Restart: stop HA (it writes its registries and config entries), start a new one in
        # the same config dir; every config and first state is still retained on the broker.
        await hass.async_stop()
        hass = None
        logs.paused = True
        hass = await _ha.start_home_assistant(tmp / "config")
        logs.paused = False
        restart_tracker = Tracker()
        restart_tracker.domains = tracker.domains
        restart_tracker.expected = len(cal_good) * (devices + 1)  # the calibration device comes back too

        @callback
        def on_restart_state(event: Event[EventStateChangedData]) -> None:
            restart_tracker(event)

        hass.bus.async_listen(EVENT_STATE_CHANGED, on_restart_state)
        profiler = Profiler(args.profile, variant, "restart")
        t_restart, cpu_r0 = time.monotonic(), time.process_time()
        await _ha.set_up_saved_entries(hass)
        try:
            await asyncio.wait_for(restart_tracker.ready.wait(), args.timeout)
        except TimeoutError:
            raise RuntimeError(
                f"{variant}: after a restart only {len(restart_tracker.good)} of {restart_tracker.expected} "
                f"entities had a state after {args.timeout} s"
            ) from None
        profiler.stop()
        phase("restarted")

        return {
            "restart_s": restart_tracker.ready_at[0] - t_restart,
            "restart_cpu_s": restart_tracker.ready_at[1] - cpu_r0,
            "variant": variant,
            "devices": devices,
            "per_device": dict(per_device),
            "per_device_with_state": len(cal_good),
            "entities": len(bench_entries),
            "devices_registered": len(bench_devices - {None}),
            "config_messages": sent["messages"],
            "publish_s": sent["t1"] - sent["t0"],
            "discovery_s": t_ready - sent["t0"],
            "discovery_cpu_s": cpu_ready - cpu0,
            "rss_kib_per_entity": (rss1 - rss0) / 1024 / max(len(bench_entries), 1),
            "rss_mib": rss1 / 2**20,
            "idle_cpu_per_s": idle_cpu,
            "updates": args.updates,
            "updates_seen": tracker.updates_seen,
            "wrong_final_values": wrong_final,
            "update_cpu_s_per_1000": (cpu_u1 - cpu_u0) / max(tracker.updates_seen, 1) * 1000,
            "latency_p50_ms": _percentile(latencies, 50) * 1000,
            "latency_p99_ms": _percentile(latencies, 99) * 1000,
            "latency_max_ms": max(latencies, default=float("nan")) * 1000,
            "latency_over_5ms": slow,
            "latency_over_5ms_with_gc": slow_in_gc,
            "gc_collections": len(gc_watch.pauses),
            "gc_max_ms": max((end - start for start, end, _ in gc_watch.pauses), default=0.0) * 1000,
            "warnings": dict(logs.counts),
            "warning_samples": dict(logs.samples),
        }
    finally:
        if hass is not None:
            with contextlib.suppress(Exception):
                await hass.async_stop()
        if pub is not None:
            await pub.close()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        phase("stopped")


def worker_main(args: argparse.Namespace) -> None:
    """Entry point of one trial process: prints one RESULT line."""
    from homeassistant.runner import create_event_loop  # noqa: PLC0415

    result = asyncio.run(run_trial(args), loop_factory=create_event_loop)
    print(RESULT_MARK + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- the orchestrator


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    commit, dirty = git_head("custom_components/thermo_bridge")
    return {
        "code": commit + (" (integration has uncommitted changes)" if dirty else ""),
        "cpus (nproc)": str(os.cpu_count()),
        "cpu": cpu_model(),
        "ram": ram(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "home assistant": importlib.metadata.version("homeassistant"),
        "paho-mqtt": importlib.metadata.version("paho-mqtt"),
        "broker": mosquitto_version(),
    }


def _machine_busy_s() -> float:
    """CPU seconds all cores have been busy since boot (/proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_idle_machine(max_wait: float, cores: float = 0.3) -> float:
    """Wait (at most ``max_wait`` s) until the rest of the machine used < ``cores`` over a second.

    Returns how long it waited. Between trials nothing of ours runs, so what is busy is others.
    """
    started = time.monotonic()
    while time.monotonic() - started < max_wait:
        before = _machine_busy_s()
        time.sleep(1.0)
        if _machine_busy_s() - before < cores:
            break
    return time.monotonic() - started


def _children_cpu_s() -> float:
    """CPU seconds of this process's waited-for descendants (the trials, their brokers and publishers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_worker(variant: str, args: argparse.Namespace, log_dir: Path, trial: int) -> dict[str, Any] | None:
    """Run one trial in a fresh process; None (and the log tail) if it failed."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        variant,
        "--devices",
        str(args.devices),
        "--updates",
        str(args.updates),
        "--rate",
        str(args.rate),
        "--qos",
        str(args.qos),
        "--timeout",
        str(args.timeout),
        *(["--profile", str(Path(args.profile).resolve())] if args.profile else []),
    ]
    log = log_dir / f"{trial:02d}-{variant}.log"
    # Two waits of --timeout (discovery, restart), the update phase, and start/stop margins.
    limit = 2 * args.timeout + args.updates / max(args.rate, 1) + 180
    busy0, children0, wall0 = _machine_busy_s(), _children_cpu_s(), time.monotonic()
    with log.open("w") as err:
        # Its own process group, so a hung trial is stopped with its broker and publisher.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            print(f"  {variant} trial {trial} TIMED OUT after {limit:.0f} s; log {log}", file=sys.stderr)
            return None
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            # CPU the rest of the machine used meanwhile (the trial's own processes excluded).
            result["other_cpu_s"] = max(0.0, (_machine_busy_s() - busy0) - (_children_cpu_s() - children0))
            result["trial_wall_s"] = time.monotonic() - wall0
            return result
    tail = log.read_text().splitlines()[-15:]
    print(f"  {variant} trial {trial} FAILED (exit {proc.returncode}); log {log}:", file=sys.stderr)
    for line in tail:
        print(f"    {line}", file=sys.stderr)
    return None


METRICS = (
    ("discovery_s", "time until all entities exist (s)", "{:.2f}"),
    ("discovery_cpu_s", "HA CPU during discovery (s)", "{:.2f}"),
    ("update_cpu_s_per_1000", "HA CPU per 1,000 state messages (s)", "{:.3f}"),
    ("latency_p50_ms", "publish -> state_changed p50 (ms)", "{:.1f}"),
    ("latency_p99_ms", "publish -> state_changed p99 (ms)", "{:.1f}"),
    ("rss_kib_per_entity", "RSS growth per entity (KiB)", "{:.1f}"),
    ("restart_s", "HA restart: entities back with states (s)", "{:.2f}"),
    ("restart_cpu_s", "HA CPU during that restart (s)", "{:.2f}"),
)


def load_average() -> str:
    """1-minute load average: on 2 cores, anything else running shows in the figures."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def summarize(
    results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, command: str, loads: tuple[str, str]
) -> str:
    """The markdown report (also printed)."""
    lines = [f"Command: `{command}`", ""]
    lines += [f"- {key}: {value}" for key, value in machine().items()]
    lines.append(f"- load average (1 min) before / after the run: {loads[0]} / {loads[1]}")
    lines.append("")
    medians: dict[str, dict[str, float]] = {}
    for variant, runs in results.items():
        if runs:
            medians[variant] = {key: statistics.median(r[key] for r in runs) for key, _, _ in METRICS}
    if medians:
        header = "| metric (median of runs) | " + " | ".join(f"{LABEL[v]} (n={len(results[v])})" for v in medians)
        has_ratio = {"baseline", "ours"} <= set(medians)
        lines.append(header + (" | ours / baseline |" if has_ratio else " |"))
        lines.append("|---" * (len(medians) + 1 + has_ratio) + "|")
        for key, label, fmt in METRICS:
            row = f"| {label} | " + " | ".join(fmt.format(medians[v][key]) for v in medians)
            if has_ratio:
                base = medians["baseline"][key]
                row += f" | {medians['ours'][key] / base:.2f}" if base else " | n/a"
            lines.append(row + " |")
        lines.append("")
    for variant, runs in results.items():
        if not runs:
            lines.append(f"- {variant}: every trial failed (see the logs printed above)")
            continue
        first = runs[0]
        domains = ", ".join(f"{n} {d}" for d, n in sorted(first["per_device"].items()))
        lines.append(
            f"- {variant}: per device {domains} ({first['per_device_with_state']} with a state); "
            f"{first['entities']} entities on {first['devices_registered']} devices; "
            f"{first['config_messages']} retained messages announced them; "
            f"updates seen {min(r['updates_seen'] for r in runs)}/{args.updates} (worst run), "
            f"sensors not showing the last reported value {max(r['wrong_final_values'] for r in runs)}; "
            f"HA RSS after discovery {statistics.median(r['rss_mib'] for r in runs):.0f} MiB; "
            f"idle CPU {statistics.median(r['idle_cpu_per_s'] for r in runs) * 1000:.0f} ms/s"
        )
        per_run = "; ".join(
            f"{r['discovery_s']:.2f} s / {r['update_cpu_s_per_1000']:.3f} s / {r['latency_p99_ms']:.0f} ms"
            for r in runs
        )
        lines.append(f"  - each run (discovery / CPU per 1,000 / p99): {per_run}")
        gc_note = "; ".join(
            f"{r['latency_over_5ms']} over 5 ms, {r['latency_over_5ms_with_gc']} of them during a GC "
            f"(longest GC {r['gc_max_ms']:.0f} ms)"
            for r in runs
        )
        lines.append(f"  - update latencies per run: {gc_note}")
        other = "; ".join(f"{r['other_cpu_s']:.0f} s in {r['trial_wall_s']:.0f} s" for r in runs)
        lines.append(f"  - CPU used by other processes on the machine during each run: {other}")
        warnings = Counter[str]()
        for r in runs:
            warnings.update(r["warnings"])
        if warnings:
            lines.append(f"  - log records >= WARNING: {dict(warnings)}")
            for name, sample in first["warning_samples"].items():
                lines.append(f"    - {name}: {sample}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000, help="thermostats (4 entities each)")
    parser.add_argument("--updates", type=int, default=1000, help="state messages in the update phase")
    parser.add_argument("--rate", type=float, default=1000.0, help="state messages per second")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0, help="QoS of the state messages")
    parser.add_argument(
        "--repeats", type=int, help="trials per variant (default 3; 2 for a quick run of <= 100 devices)"
    )
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="comma-separated, from: baseline (HA discovery, one config per entity), device (HA device-based "
        "discovery, one config per device), ours",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for all entities")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before each trial, wait up to S seconds for the rest of the machine to be nearly idle",
    )
    parser.add_argument("--profile", metavar="DIR", help="cProfile each phase into DIR (slows HA down)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return

    if args.repeats is None:
        args.repeats = 3 if args.devices > 100 else 2
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    command = shlex.join([".venv/bin/python", "bench/ha_discovery.py", *sys.argv[1:]])
    log_dir = Path(tempfile.mkdtemp(prefix="tb-bench-logs-"))
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    started = time.monotonic()
    load_before = load_average()
    trial = 0
    for repeat in range(args.repeats):
        order = variants if repeat % 2 == 0 else variants[::-1]
        for variant in order:
            trial += 1
            if args.wait_idle > 0:
                waited = wait_for_idle_machine(args.wait_idle)
                print(f"(waited {waited:.0f} s for a quieter machine)", file=sys.stderr, flush=True)
            print(f"trial {trial}: {variant}, {args.devices} devices ...", file=sys.stderr, flush=True)
            result = run_worker(variant, args, log_dir, trial)
            if result is not None:
                results[variant].append(result)
                print(
                    f"  discovery {result['discovery_s']:.2f} s, CPU/1000 updates "
                    f"{result['update_cpu_s_per_1000']:.3f} s, p50/p99 {result['latency_p50_ms']:.1f}/"
                    f"{result['latency_p99_ms']:.1f} ms, {result['rss_kib_per_entity']:.1f} KiB/entity",
                    file=sys.stderr,
                    flush=True,
                )
    report = summarize(results, args, command, (load_before, load_average()))
    print(report)
    print(f"\n(total {time.monotonic() - started:.0f} s; worker logs in {log_dir})", file=sys.stderr)
    if not all(results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
