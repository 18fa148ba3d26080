"""Prometheus text exposition (format 0.0.4) of the server's counters, without a client library.

The figures live where they are produced (the ingest counts messages, the store reports
its queue and commit latency, the HTTP middleware counts responses); ``Metrics`` only
gathers them when ``/metrics`` is scraped, so nothing is added to the MQTT hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "thermo_bridge_"
_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class IngestCounters(Protocol):
    """What the ingest exposes (attributes of ``thermo_bridge_server.ingest.Ingest``)."""

    messages_in: int
    rejected_by_reason: Mapping[str, int]
    duplicates: int
    store_errors: int
    acks_unmatched: int
    commands_sent: int
    commands_acked: int
    commands_failed: int
    commands_timed_out: int
    reports_sent: int
    reports_lost: int


class TransportState(Protocol):
    """What the MQTT transport exposes."""

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        ...


def metric_name(*parts: str) -> str:
    """A valid Prometheus metric name from free-form parts (store stat keys…)."""
    return PREFIX + "_".join(_NAME_RE.sub("_", part).strip("_").lower() for part in parts if part)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


class Exposition:
    """Accumulates metric families and renders them as Prometheus text."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def add(self, name: str, kind: str, help_text: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Add one sample; families keep the first kind/help they were given."""
        family = self._families.setdefault(name, _Family(name, kind, help_text))
        family.samples.append((dict(labels or {}), float(value)))

    def declare(self, name: str, kind: str, help_text: str) -> None:
        """Declare a family that may have no samples yet (so dashboards see it exists)."""
        self._families.setdefault(name, _Family(name, kind, help_text))

    def render(self) -> str:
        """The text body."""
        lines: list[str] = []
        for family in self._families.values():
            lines.append(f"# HELP {family.name} {family.help}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            for labels, value in family.samples:
                label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
                suffix = f"{{{label_text}}}" if label_text else ""
                lines.append(f"{family.name}{suffix} {_format_value(value)}")
        return "\n".join(lines) + "\n"


class Throughput:
    """Messages per minute, from a running total sampled every few seconds (nothing per message)."""

    def __init__(
        self, total: Callable[[], int], window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._total = total
        self._window = window
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self) -> None:
        """Record the total now; keep one sample at least ``window`` old, drop older ones."""
        now = self._clock()
        self._samples.append((now, self._total()))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()

    def per_minute(self) -> float:
        """The rate over the last ``window`` seconds (or since the first sample), per minute."""
        self.sample()
        (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
        if last_at <= first_at:
            return 0.0
        return (last - first) * 60.0 / (last_at - first_at)


class HttpCounters:
    """Counted by the API's error middleware: responses by status, requests in flight."""

    def __init__(self) -> None:
        self.responses: Counter[tuple[str, int]] = Counter()
        self.in_flight = 0
        self.rate_limited = 0

    def observe(self, method: str, status: int) -> None:
        """Count one finished request (unknown methods share one label: clients pick methods)."""
        self.responses[(method if method in _METHODS else "OTHER", status)] += 1


class Metrics:
    """Gathers every figure at scrape time."""

    def __init__(
        self,
        *,
        http: HttpCounters,
        ingest: IngestCounters | None = None,
        transport: TransportState | None = None,
        store_stats: Callable[[], Any] | None = None,
        open_connections: Callable[[], int] | None = None,
        transport_stats: Callable[[], Mapping[str, Any]] | None = None,
        realtime_stats: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.http = http
        self.ingest = ingest
        self.transport = transport
        self.store_stats = store_stats
        self.open_connections = open_connections
        self.transport_stats = transport_stats
        self.realtime_stats = realtime_stats

    async def render(self) -> str:
        """Collect and render (store stats are a coroutine, hence async)."""
        out = Exposition()
        self._http(out)
        self._ingest(out)
        self._transport(out)
        if self.realtime_stats is not None:
            _numeric_gauges(out, ("realtime",), "Real-time API figure", self.realtime_stats().items())
        if self.store_stats is not None:
            stats = await self.store_stats()
            _numeric_gauges(out, ("store",), "Store backend figure", stats.items())
        _process(out)
        return out.render()

    def _http(self, out: Exposition) -> None:
        name = metric_name("http_requests_total")
        out.declare(name, "counter", "HTTP requests answered, by method and status code.")
        for (method, status), count in sorted(self.http.responses.items()):
            out.add(name, "counter", "", count, {"method": method, "status": str(status)})
        out.add(
            metric_name("http_requests_in_flight"), "gauge", "HTTP requests being handled now.", self.http.in_flight
        )
        out.add(
            metric_name("http_rate_limited_total"),
            "counter",
            "Requests refused with 429 by the per-user rate limit.",
            self.http.rate_limited,
        )
        if self.open_connections is not None:
            out.add(
                metric_name("http_open_connections"),
                "gauge",
                "Open client connections (HTTP keep-alive and WebSocket).",
                self.open_connections(),
            )

    def _ingest(self, out: Exposition) -> None:
        ingest = self.ingest
        if ingest is None:
            return
        out.add(
            metric_name("mqtt_messages_in_total"),
            "counter",
            "MQTT messages received from devices.",
            ingest.messages_in,
        )
        rejected = metric_name("mqtt_messages_rejected_total")
        out.declare(rejected, "counter", "MQTT messages rejected by the protocol, by reason.")
        for reason, count in sorted(ingest.rejected_by_reason.items()):
            out.add(rejected, "counter", "", count, {"reason": str(reason)})
        out.add(
            metric_name("mqtt_duplicates_total"),
            "counter",
            "QoS 1 redeliveries recognised and not stored twice.",
            ingest.duplicates,
        )
        out.add(
            metric_name("mqtt_store_errors_total"),
            "counter",
            "MQTT messages whose store write failed or was refused (not acknowledged: the broker redelivers).",
            ingest.store_errors,
        )
        out.add(
            metric_name("mqtt_acks_unmatched_total"),
            "counter",
            "Device acks that matched no pending command (unknown id, another device, or already finished).",
            ingest.acks_unmatched,
        )
        commands = metric_name("commands_total")
        out.declare(commands, "counter", "Commands by outcome (sent, then acked, failed or timed_out).")
        for status, value in (
            ("sent", ingest.commands_sent),
            ("acked", ingest.commands_acked),
            ("failed", ingest.commands_failed),
            ("timed_out", ingest.commands_timed_out),
        ):
            out.add(commands, "counter", "", value, {"status": status})
        reports = metric_name("command_reports_total")
        out.declare(reports, "counter", "Command outcomes announced on <base>/<id>/command, by result of the publish.")
        out.add(reports, "counter", "", ingest.reports_sent, {"result": "sent"})
        out.add(reports, "counter", "", ingest.reports_lost, {"result": "lost"})

    def _transport(self, out: Exposition) -> None:
        if self.transport is not None:
            out.add(
                metric_name("mqtt_connected"),
                "gauge",
                "1 when the broker connection is up.",
                1 if self.transport.connected else 0,
            )
        if self.transport_stats is not None:
            _numeric_gauges(out, ("mqtt",), "MQTT transport figure", self.transport_stats().items())


def _numeric_gauges(out: Exposition, prefix: tuple[str, ...], help_text: str, items: Iterable[tuple[str, Any]]) -> None:
    for key, value in items:
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        name = metric_name(*prefix, str(key))
        kind = "counter" if name.endswith("_total") else "gauge"
        out.add(name, kind, f"{help_text} {key!s}.", value)


def _process(out: Exposition) -> None:
    """What a long run watches for growth: tasks on the event loop, resident memory, open files."""
    out.add(metric_name("asyncio_tasks"), "gauge", "Tasks alive on the server's event loop.", len(asyncio.all_tasks()))
    with contextlib.suppress(OSError, ValueError, IndexError):  # not Linux: no /proc
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        out.add(
            metric_name("process_resident_memory_bytes"),
            "gauge",
            "Resident set size of the server process.",
            pages * os.sysconf("SC_PAGE_SIZE"),
        )
    with contextlib.suppress(OSError):
        out.add(
            metric_name("process_open_fds"),
            "gauge",
            "Open file descriptors of the server process.",
            len(os.listdir("/proc/self/fd")),
        )
