"""MQTT traffic into the store, through the shared protocol router; commands out.

Every message goes through ``DeviceRouter`` (the same code the Home Assistant integration
uses), so a payload the protocol rejects never changes a device's stored data: it is counted
per reason, logged rate-limited and kept in the bounded dead-letter table. Each store write
returns a future resolved when its batch committed; the message's MQTT acknowledgement waits
for it (``MqttTransport.hold_ack``), so a crash never loses an acknowledged message and a QoS 1
redelivery is absorbed by the store's idempotency key (device id, seq, ts, payload digest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final

from thermo_bridge_protocol import (
    DEFAULT_BASE_TOPIC,
    Ack,
    AckStatus,
    CommandReport,
    DeviceConfig,
    DeviceEvent,
    DeviceRouter,
    MessageKind,
    ProtocolError,
    ProtocolHandler,
    StateUpdate,
    device_topic,
    encode_config,
    wildcard_topic,
)
from thermo_bridge_protocol import CommandStatus as ReportStatus
from thermo_bridge_protocol.router import MessageCallback, Unsubscribe

from .errors import IdempotencyConflictError, StoreUnavailableError
from .mqtt import MqttError, MqttNotConnectedError, MqttTransport
from .store.base import DEAD_LETTER_PAYLOAD_BYTES, CommandRecord, CommandStatus, Store

_LOGGER = logging.getLogger(__name__)

REJECT_LOG_INTERVAL: Final = 60.0
STORE_WAIT_SECONDS: Final = 10.0
"""How long a command waits for the store (retrying a failing database) before the API says 503.

If the write commits later, the command is never published and the timeout sweep marks it
timed out."""
_REJECT_LOG_KEYS: Final = 10_000


def canonical_config(config: DeviceConfig) -> DeviceConfig:
    """``config`` with its measurements in key order: the order carries no meaning."""
    return replace(config, measurements=tuple(sorted(config.measurements, key=lambda m: m.key)))


class RateLimitedLog:
    """Log the first occurrence of each key, then at most once per interval with a count."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = REJECT_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # key -> [last logged at, suppressed since]

    def __call__(self, key: tuple[str, str], msg: str, *args: object) -> bool:
        """Log ``msg % args`` at WARNING unless this key was logged within the interval; True if logged."""
        now = self._clock()
        entry = self._seen.get(key)
        if entry is None:
            if len(self._seen) >= _REJECT_LOG_KEYS:
                self._seen.clear()
            self._seen[key] = [now, 0]
            self._logger.warning("%s (repeats are logged at most once a minute)", msg % args)
            return True
        if now - entry[0] < self._interval:
            entry[1] += 1
            return False
        suppressed = int(entry[1])
        entry[0], entry[1] = now, 0
        self._logger.warning("%s (%d more since the last report)", msg % args, suppressed)
        return True


class Ingest(ProtocolHandler):
    """Routes device traffic into the store and sends commands; the API's CommandSender."""

    def __init__(
        self,
        store: Store,
        transport: MqttTransport,
        *,
        base_topic: str = DEFAULT_BASE_TOPIC,
        command_timeout: float = 10.0,
        shared_group: str | None = None,
        now: Callable[[], float] = time.time,
        sweep_interval: float | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.command_timeout = command_timeout
        self.router = DeviceRouter(base_topic, self._subscribe, transport.publish, self, shared_group=shared_group)
        self._now = now
        self._sweep_interval = sweep_interval or max(0.05, min(1.0, command_timeout / 4))
        self._log_rejection = RateLimitedLog(_LOGGER)
        self._log_problem = RateLimitedLog(_LOGGER)
        self._seeding = False
        self._accepting = False
        self._sweeper: asyncio.Task[None] | None = None
        self._shared_group = shared_group
        self._extra: list[Unsubscribe] = []
        self._subscribed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # Counters (read by /metrics).
        self.messages_in = 0
        self._rejected: dict[str, int] = {}
        self.rejected_by_reason: Mapping[str, int] = self._rejected  # read-only view for /metrics
        self.duplicates = 0
        self.store_errors = 0
        self.commands_sent = 0
        self.commands_acked = 0
        self.commands_failed = 0
        self.commands_timed_out = 0
        self.acks_unmatched = 0
        self.reports_sent = 0
        self.reports_lost = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Learn the known devices from the store, subscribe, start the command timeout sweep.

        Seeding matters with a persistent session: the broker delivers the states queued while
        we were away right after connecting, possibly before the retained configs.
        """
        base = self.router.base_topic
        self._seeding = True
        try:
            for record in await self.store.list_devices():
                topic = device_topic(base, record.device_id, MessageKind.CONFIG)
                self.router.handle_message(topic, encode_config(record.config))
        finally:
            self._seeding = False
        self._accepting = True
        if not self._subscribed:  # stop() keeps the subscriptions: a restart must not double them
            await self.router.async_start()
            self._subscribed = True
            if self._shared_group:
                # MQTT v5 (4.8.2) sends no retained messages to a shared subscription, so a worker
                # would never learn the availability devices published before it subscribed. Every
                # worker also takes the availability topics normally: rare messages, idempotent writes.
                topic = wildcard_topic(base, MessageKind.AVAILABILITY)
                self._extra.append(await self._subscribe(topic, 1, self.router.handle_message))
        self._start_sweeper()

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop(), name="thermo_bridge sweep")

    async def stop(self, flush_seconds: float = 10.0) -> None:
        """Stop taking messages and let the held ones be acknowledged once the store committed them.

        The broker subscriptions are kept on purpose: with the persistent session the broker
        queues what devices publish until we are back. Messages arriving from now on are not
        acknowledged, so the broker delivers them again next time.
        """
        self._accepting = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.store.write_error is not None:  # the store cannot commit now: do not hold up the shutdown
            flush_seconds = min(flush_seconds, 1.0)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=flush_seconds)
        if not await self.transport.flush_acks(flush_seconds):
            _LOGGER.warning("%d messages were still waiting for the store at shutdown", self.transport.held_acks)

    # ------------------------------------------------------------------ the router's transport

    async def _subscribe(self, topic: str, qos: int, callback: MessageCallback) -> Unsubscribe:
        def counted(msg_topic: str, payload: bytes) -> None:
            self.messages_in += 1
            if not self._accepting:
                self.transport.withhold_ack()
                return
            callback(msg_topic, payload)

        return await self.transport.subscribe(topic, qos, counted)

    def _write(self, op: Callable[..., asyncio.Future[Any]], *args: object) -> asyncio.Future[Any] | None:
        """Queue a store write and make the current message's ack wait for its commit."""
        try:
            fut = op(*args)
        except Exception as err:  # e.g. the store is closing: the broker redelivers it later
            self.store_errors += 1
            self.transport.withhold_ack()
            self._log_problem(("store", type(err).__name__), "store write refused: %s", err)
            return None
        fut.add_done_callback(self._check_write)
        self.transport.hold_ack(fut)
        return fut

    def _check_write(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        if (err := fut.exception()) is None:
            if fut.result() is False:  # only apply_state resolves to a bool: False is a duplicate
                self.duplicates += 1
        else:
            self.store_errors += 1
            self._log_problem(("store", type(err).__name__), "store write failed (message not acknowledged): %s", err)

    # ------------------------------------------------------------------ ProtocolHandler

    def on_config(self, device_id: str, config: DeviceConfig, previous: DeviceConfig | None) -> None:
        """Store a discovered or changed device (not while seeding from the store itself)."""
        if self._seeding:
            return
        if previous is not None and canonical_config(previous) == canonical_config(config):
            # The same config again (the retained one re-read after a restart, or re-announced with
            # its measurements in another order, which carries no meaning): nothing changed.
            return
        if previous is None:
            _LOGGER.info("device %s discovered (%s)", device_id, config.kind)
        self._write(self.store.apply_config, config, self._now())

    def on_removed(self, device_id: str, previous: DeviceConfig) -> None:
        """The device's retained config was cleared: forget it (history stays)."""
        _LOGGER.info("device %s removed", device_id)
        self._write(self.store.remove_device, device_id, self._now())

    def on_state(self, device_id: str, update: StateUpdate) -> None:
        """Merge a state report; a redelivered duplicate changes nothing."""
        self._write(self.store.apply_state, device_id, update, self._now())  # resolves False for a duplicate

    def on_availability(self, device_id: str, online: bool) -> None:
        """Record online/offline."""
        self._write(self.store.apply_availability, device_id, online, self._now())

    def on_event(self, device_id: str, event: DeviceEvent) -> None:
        """Append the event to the event log."""
        self._write(self.store.record_device_event, device_id, event, self._now())

    def on_ack(self, device_id: str, ack: Ack) -> None:
        """Move the command to acked/failed (checked against the device it was sent to)."""
        task = asyncio.get_running_loop().create_task(self._apply_ack(device_id, ack))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._check_write)
        self.transport.hold_ack(task)

    async def _apply_ack(self, device_id: str, ack: Ack) -> None:
        record = await self.store.get_command(ack.command_id)
        if record is None or record.device_id != device_id:
            self.acks_unmatched += 1
            self._log_problem(
                (device_id, "unmatched_ack"), "ack from %s for unknown command %s ignored", device_id, ack.command_id
            )
            return
        status = CommandStatus.ACKED if ack.status is AckStatus.OK else CommandStatus.FAILED
        updated = await self.store.update_command(ack.command_id, status, ack.reason, self._now())
        if updated is None:  # timed out already, or a redelivered ack
            self.acks_unmatched += 1
            return
        if status is CommandStatus.ACKED:
            self.commands_acked += 1
        else:
            self.commands_failed += 1
            _LOGGER.info("device %s refused command %s: %s", device_id, ack.command_id, ack.reason)
        self._report(updated)

    def on_rejected(
        self, device_id: str | None, kind: MessageKind | None, error: ProtocolError, topic: str, payload: bytes
    ) -> None:
        """Count, log (rate-limited) and keep the message as a dead letter; nothing else changes."""
        reason = str(error.reason)
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        self._log_rejection(
            (device_id or topic[:120], reason), "rejected message on %s (%s): %s", topic[:200], reason, error
        )
        self._write(
            self.store.add_dead_letter,
            topic,
            reason,
            str(error),
            bytes(payload[:DEAD_LETTER_PAYLOAD_BYTES]),
            self._now(),
        )

    # ------------------------------------------------------------------ commands

    async def send_command(
        self, device_id: str, values: Mapping[str, Any], sub: str, idempotency_key: str | None = None
    ) -> CommandRecord:
        """Validate against the device's capabilities, store the command as pending, publish it.

        With an ``idempotency_key`` this ``sub`` used before, the earlier command is returned as
        it is now and nothing is published again. Raises KeyError for an unknown device,
        ProtocolError for values the device refuses (nothing stored or sent),
        IdempotencyConflictError when the key was used for another device or other values,
        MqttNotConnectedError (a ConnectionError) when the broker cannot take it (nothing is
        stored, so the same key may be sent again; a command the broker refused is marked failed).
        """
        if device_id not in self.router.devices:
            raise KeyError(device_id)
        command = self.router.build_command(device_id, values)
        if not self.transport.connected:
            raise MqttNotConnectedError("not connected to the MQTT broker")
        now = self._now()
        record = CommandRecord(
            command_id=command.command_id,
            device_id=device_id,
            sub=sub,
            values=dict(command.values),
            status=CommandStatus.PENDING,
            created_at=now,
            updated_at=now,
            idempotency_key=idempotency_key,
        )
        try:  # committed before the device can answer; a store that cannot commit gets no say in the wait
            stored, created = await asyncio.wait_for(
                asyncio.shield(self.store.create_command(record)), STORE_WAIT_SECONDS
            )
        except TimeoutError:
            raise StoreUnavailableError("the store did not commit the command in time; nothing was sent") from None
        if not created:
            if stored.device_id != device_id or stored.values != record.values:
                raise IdempotencyConflictError("this idempotency key was used for another command")
            return stored
        try:
            await self.router.async_send_command(device_id, command)
        except (MqttError, ConnectionError, TimeoutError) as err:
            self.commands_failed += 1
            reason = f"not delivered to the MQTT broker: {err or type(err).__name__}"
            await self.store.update_command(command.command_id, CommandStatus.FAILED, reason, self._now())
            raise MqttNotConnectedError(reason) from err
        self.commands_sent += 1
        return record

    async def sweep_timeouts(self) -> int:
        """Mark pending commands older than the timeout as timed out; return how many this call did."""
        now = self._now()
        pending = await self.store.pending_commands(older_than=now - self.command_timeout)
        if not pending:
            return 0
        reason = f"no acknowledgement from the device within {self.command_timeout:g} s"
        results = await asyncio.gather(
            *(self.store.update_command(r.command_id, CommandStatus.TIMED_OUT, reason, now) for r in pending)
        )
        finished = [result for result in results if result is not None]  # another replica may have been first
        for record in finished:
            self._report(record)
        self.commands_timed_out += len(finished)
        return len(finished)

    def _report(self, record: CommandRecord) -> None:
        """Announce a command's outcome on ``<base>/<id>/command``, so Home Assistant tells who did what.

        Only the process that moved the command to its final status gets here, so each command
        is announced once. Published in the background: the device's ack is not kept waiting.
        """
        report = CommandReport(
            command_id=record.command_id,
            values=dict(record.values),
            user=record.sub,
            status=ReportStatus(record.status),
            reason=record.reason[:200] if record.reason else None,
            ts=record.updated_at,
        )
        task = asyncio.get_running_loop().create_task(self._publish_report(record.device_id, report))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_report(self, device_id: str, report: CommandReport) -> None:
        try:
            await self.router.async_send_command_report(device_id, report)
        except (MqttError, ConnectionError, TimeoutError) as err:
            self.reports_lost += 1
            self._log_problem(
                ("report", type(err).__name__), "outcome of command %s not announced: %s", report.command_id, err
            )
        else:
            self.reports_sent += 1

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.sweep_timeouts()
            except Exception as err:  # the store may be briefly unavailable: try again next round
                self._log_problem(("sweep", type(err).__name__), "command timeout sweep failed: %s", err)

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics and tests."""
        return {
            "messages_in": self.messages_in,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "duplicates": self.duplicates,
            "store_errors": self.store_errors,
            "commands_sent": self.commands_sent,
            "commands_acked": self.commands_acked,
            "commands_failed": self.commands_failed,
            "commands_timed_out": self.commands_timed_out,
            "acks_unmatched": self.acks_unmatched,
            "command_reports_sent": self.reports_sent,
            "command_reports_lost": self.reports_lost,
        }
