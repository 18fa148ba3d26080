"""paho-mqtt 2.x driven by the asyncio event loop, with acknowledgements under our control.

Design (paho's "external event loop" mode, as in its asyncio example):

* paho's socket callbacks register the socket with ``loop.add_reader``/``add_writer``; reads,
  writes and keepalive (``loop_misc`` on a 1 s timer) all run on the event loop thread, so
  message callbacks run on the loop with no thread hop and no lock.
* The only blocking step, opening the TCP (and TLS) connection, runs in the default executor;
  nothing on the loop touches the client meanwhile (publish refuses while not connected).
* MQTT v5, fixed client id, ``clean_start=False`` and a Session Expiry Interval: the broker
  keeps our subscriptions and queues QoS 1 messages while we are away.
* ``manual_ack=True``: a QoS 1 message is acknowledged only when every future the consumer
  attached to it with :meth:`MqttTransport.hold_ack` has resolved (the store committed it).
  A crash before that means the broker redelivers it; the store's idempotency absorbs the
  duplicate. Acks never cross a reconnect (the broker redelivers unacked messages itself).
* Reconnect with capped exponential backoff and jitter; subscriptions are re-sent when the
  broker reports no session; messages arriving before any matching subscription is registered
  (a resumed session delivers queued messages right after CONNACK) are held, not acked, and
  dispatched once a subscription matches.
* paho reads every packet with two or three tiny ``recv`` calls; ``_BufferedClient`` serves
  them from one large read, which is most of paho's per-message cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from thermo_bridge_server.config import MqttSettings

_LOGGER = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes], None]
Unsubscribe = Callable[[], None]

_READ_CHUNK: Final = 65536
_READ_BUDGET: Final = 512  # packets handled per reader wake-up before yielding to other tasks
_UNMATCHED_LIMIT: Final = 100_000
_MATCH_CACHE_LIMIT: Final = 100_000
_NO_PROPERTIES: Final = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
_AUTH_FAILURES: Final = frozenset({0x86, 0x87, 0x8C})  # bad user name or password, not authorized, bad auth method


class MqttError(Exception):
    """The broker refused or dropped something; the message says what."""


class MqttNotConnectedError(MqttError, ConnectionError):
    """There is no connection to the broker right now."""


class MqttAuthError(MqttError):
    """The broker refused our credentials or certificate: retrying will not help."""


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (its outcome is handled elsewhere)."""
    if not fut.cancelled():
        fut.exception()


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+``, ``#``; wildcards never match ``$`` topics at the first level)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= len(topic_levels):
            return False
        if level not in ("+", topic_levels[i]):
            return False
    return len(filter_levels) == len(topic_levels)


def match_filter(subscription: str) -> str:
    """The filter messages of a subscription match: ``$share/<group>/<filter>`` delivers on ``<filter>``."""
    if subscription.startswith("$share/"):
        parts = subscription.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return subscription


class _BufferedClient(paho.Client):
    """paho's client with one ``recv`` of up to 64 KiB serving its many tiny reads.

    ``_sock_recv`` is paho's single read path (``_packet_read``); overriding it is pinned by
    ``paho-mqtt<3`` in pyproject and covered by every transport test.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - paho's signature
        super().__init__(*args, **kwargs)
        self._tb_buf = b""
        self._tb_pos = 0

    def reset_buffer(self) -> None:
        """Forget unread bytes (a new or closed socket)."""
        self._tb_buf = b""
        self._tb_pos = 0

    @property
    def buffered(self) -> int:
        """Bytes read from the socket that paho has not consumed yet."""
        return len(self._tb_buf) - self._tb_pos

    def _handle_publish(self) -> MQTTErrorCode:
        """Handle a PUBLISH like paho, without building a Properties object when there are none.

        paho parses every MQTT v5 PUBLISH's properties into a fresh ``Properties`` (whose
        ``clear`` walks all 40 property names): a third of its per-message cost. Devices send
        none, so a QoS 0/1 PUBLISH with an empty property block takes this short path (same
        MQTTMessage fields, a shared empty Properties); anything else goes to paho.
        """
        packet = self._in_packet["packet"]
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        pos = 2 + ((packet[0] << 8) | packet[1])
        props_at = pos + (2 if qos else 0)
        if qos == 2 or not self._manual_ack or props_at >= len(packet) or packet[props_at] != 0:
            return super()._handle_publish()
        message = paho.MQTTMessage((packet[pos] << 8) | packet[pos + 1] if qos else 0, bytes(packet[2:pos]))
        message.dup = bool(header & 0x08)
        message.qos = qos
        message.retain = bool(header & 0x01)
        message.properties = _NO_PROPERTIES
        message.payload = bytes(packet[props_at + 1 :])
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._tb_pos >= len(self._tb_buf):
            data = super()._sock_recv(_READ_CHUNK)
            if len(data) <= bufsize:
                return data
            self._tb_buf, self._tb_pos = data, 0
        end = self._tb_pos + bufsize
        chunk = self._tb_buf[self._tb_pos : end]
        self._tb_pos = min(end, len(self._tb_buf))
        return chunk


class _Inbound:
    """One received message and what its acknowledgement waits for."""

    __slots__ = ("dispatched", "generation", "mid", "pending", "qos", "withheld")

    def __init__(self, mid: int, qos: int, generation: int) -> None:
        self.mid = mid
        self.qos = qos
        self.generation = generation
        self.pending = 0
        self.dispatched = False
        self.withheld = False


class _Subscription:
    __slots__ = ("active", "callbacks", "filter", "match", "mid", "qos", "waiters")

    def __init__(self, topic_filter: str, qos: int) -> None:
        self.filter = topic_filter
        self.match = match_filter(topic_filter)
        self.qos = qos
        self.callbacks: list[MessageCallback] = []
        self.active = False  # the broker confirmed it on the current session
        self.mid: int | None = None  # SUBSCRIBE in flight
        self.waiters: list[asyncio.Future[None]] = []


@dataclass
class TransportStats:
    """Counters for /metrics and tests."""

    messages_in: int = 0
    acks_sent: int = 0
    acks_withheld: int = 0  # a store write failed or the consumer withheld it: redelivered after reconnect
    acks_dropped: int = 0  # the connection was lost before the store committed: redelivered
    callback_errors: int = 0
    unmatched_held: int = 0
    connects: int = 0
    connection_losses: int = 0
    publishes: int = 0


class MqttTransport:
    """One MQTT connection for the server: subscribe/publish as the protocol router expects."""

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self.stats = TransportStats()
        self.connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._client: _BufferedClient | None = None
        self._sock: Any = None
        self._generation = 0
        self._subs: dict[str, _Subscription] = {}
        self._match_cache: dict[str, tuple[MessageCallback, ...]] = {}
        self._unmatched: list[tuple[str, bytes, _Inbound]] = []
        self._current: _Inbound | None = None
        self._held: set[_Inbound] = set()
        self._held_empty = asyncio.Event()
        self._held_empty.set()
        self._pub_waiters: dict[int, asyncio.Future[None]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[bool] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._misc_handle: asyncio.TimerHandle | None = None
        self._closing = False
        self._tls_ready = False
        self._connecting: asyncio.Future[None] | None = None
        self._last_error: str | None = None
        self.connection_listeners: list[Callable[[bool], None]] = []
        """Called on the loop with True when a connection is up, False when it was lost."""

    # ------------------------------------------------------------------ lifecycle

    async def connect(self, *, wait: bool = True, wait_seconds: float | None = None) -> None:
        """Start connecting (and reconnecting, forever) in the background.

        With ``wait``, return once connected; raise MqttAuthError if the broker refuses our
        credentials or certificate, TimeoutError after ``wait_seconds`` (the attempts go on).
        """
        if self._runner is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
            self._closing = False
            self._ready = self._loop.create_future()
            self._runner = self._loop.create_task(self._run(), name="thermo_bridge mqtt")
        if wait:
            assert self._ready is not None  # noqa: S101
            await asyncio.wait_for(asyncio.shield(self._ready), wait_seconds)

    async def disconnect(self, grace_seconds: float = 5.0) -> None:
        """Send DISCONNECT (the broker keeps our session) and stop reconnecting."""
        self._closing = True
        client = self._client
        if client is not None and self.connected:
            lost = self._lost
            client.disconnect()
            if lost is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(lost), grace_seconds)
                except TimeoutError:
                    self._abort()
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                if (task := asyncio.current_task()) is not None and task.cancelling():
                    raise
            self._runner = None
        if self._connecting is not None and not self._connecting.done():
            await asyncio.wait([self._connecting], timeout=self.settings.connect_timeout + 1)
        self._abort()
        self._cancel_misc()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(MqttNotConnectedError("disconnected before the first connection"))
            self._ready.exception()  # retrieved: nobody may be waiting
        for fut in self._pub_waiters.values():
            if not fut.done():
                fut.set_exception(MqttNotConnectedError("transport disconnected"))
        self.connected = False

    async def flush_acks(self, wait_seconds: float = 10.0) -> bool:
        """Wait until every held message was acknowledged (or given up); False on timeout."""
        try:
            await asyncio.wait_for(self._held_empty.wait(), wait_seconds)
        except TimeoutError:
            return False
        return True

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt failed or the connection was lost."""
        return self._last_error

    @property
    def held_acks(self) -> int:
        """Messages received whose acknowledgement waits on the store."""
        return len(self._held)

    # ------------------------------------------------------------------ the connection manager

    def _stopping(self) -> bool:
        """``_closing``, re-read: a method so mypy does not narrow it from ``_run``'s loop condition."""
        return self._closing

    async def _run(self) -> None:
        settings = self.settings
        attempt = 0
        while not self._closing:
            try:
                await self._open()
            except MqttAuthError as err:
                self._last_error = str(err)
                _LOGGER.error("MQTT broker %s:%s refused us: %s", settings.host, settings.port, err)
                if self._ready is not None and not self._ready.done():
                    self._ready.set_exception(err)
                    self._ready.exception()  # marked retrieved: connect(wait=False) has no waiter
                    return
                attempt = max(attempt, 8)  # credentials may be fixed on the broker: retry slowly
            except (OSError, MqttError, TimeoutError) as err:
                self._last_error = f"{type(err).__name__}: {err}"
                log = _LOGGER.warning if attempt in (0, 5) or attempt % 30 == 0 else _LOGGER.debug
                log("MQTT connection to %s:%s failed: %s", settings.host, settings.port, self._last_error)
            else:
                attempt = 0
                assert self._lost is not None  # noqa: S101
                await self._lost
                if self._stopping():  # disconnect() was called meanwhile
                    return
                _LOGGER.warning("MQTT connection lost (%s); reconnecting", self._last_error)
            delay = min(settings.reconnect_max, settings.reconnect_min * 2**attempt) * random.uniform(0.5, 1.0)
            attempt = min(attempt + 1, 30)
            await asyncio.sleep(delay)

    def _make_client(self) -> _BufferedClient:
        settings = self.settings
        client = _BufferedClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        client.connect_timeout = settings.connect_timeout
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = settings.session_expiry
        properties.ReceiveMaximum = settings.receive_maximum
        client.connect_async(settings.host, settings.port, settings.keepalive, clean_start=False, properties=properties)
        return client

    def _tls_context(self) -> ssl.SSLContext:
        """Blocking (reads files): called in the executor."""
        settings = self.settings
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        if settings.tls_insecure:
            context.check_hostname = False
        return context

    def _blocking_connect(self) -> None:
        """TCP connect, TLS handshake and CONNECT: the one blocking step, run in the executor."""
        client = self._client
        assert client is not None  # noqa: S101
        if self.settings.use_tls and not self._tls_ready:
            client.tls_set_context(self._tls_context())
            self._tls_ready = True
            if self.settings.tls_insecure:
                client.tls_insecure_set(True)
        client.reconnect()

    async def _open(self) -> None:
        loop = self._loop
        assert loop is not None  # noqa: S101
        if self._client is None:
            self._client = self._make_client()
        client = self._client
        self._connack = loop.create_future()
        self._lost = loop.create_future()
        try:
            # Shielded: if disconnect() cancels us meanwhile, it waits for this to finish and
            # closes the socket, instead of leaving a connection open in our session's name.
            self._connecting = loop.run_in_executor(None, self._blocking_connect)
            self._connecting.add_done_callback(_retrieve)  # also when nobody awaits it any more
            await asyncio.shield(self._connecting)
        except ssl.SSLCertVerificationError as err:
            raise MqttAuthError(f"the broker's TLS certificate was not accepted: {err.verify_message}") from err
        except ssl.SSLError as err:
            raise MqttError(f"TLS handshake failed: {err.reason or err}") from err
        sock = client.socket()
        if sock is None:
            raise MqttError("paho did not open a socket")
        self._sock = sock
        loop.add_reader(sock, self._on_readable)
        if client.want_write():
            loop.add_writer(sock, self._on_writable)
        self._schedule_misc()
        try:
            await asyncio.wait_for(asyncio.shield(self._connack), self.settings.connect_timeout)
        except TimeoutError:
            self._abort()
            raise TimeoutError(f"no CONNACK within {self.settings.connect_timeout} s") from None

    def _abort(self) -> None:
        """Drop the connection now; paho notices the EOF and runs its normal clean-up."""
        sock = self._sock
        if sock is None and self._client is not None:
            sock = self._sock = self._client.socket()
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        if self._client is not None and self._client.socket() is not None:
            self._on_readable()

    # ------------------------------------------------------------------ paho's socket callbacks

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:  # noqa: ANN401
        # Runs in the executor (inside reconnect): only socket options, no loop calls.
        if isinstance(client, _BufferedClient):
            client.reset_buffer()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            _LOGGER.debug("could not set TCP_NODELAY")

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:  # noqa: ANN401
        if isinstance(client, _BufferedClient):
            client.reset_buffer()
        if self._on_loop_thread() and self._loop is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        if sock is self._sock:
            self._sock = None

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:  # noqa: ANN401
        if self._on_loop_thread() and self._loop is not None:  # in the executor, _open registers it
            self._loop.add_writer(sock, self._on_writable)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:  # noqa: ANN401
        if self._on_loop_thread() and self._loop is not None:
            self._loop.remove_writer(sock)

    def _on_readable(self) -> None:
        client = self._client
        if client is None:
            return
        for _ in range(_READ_BUDGET):
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                return
            if not client.buffered and not self._tls_pending():
                return
        assert self._loop is not None  # noqa: S101
        self._loop.call_soon(self._on_readable)  # more is buffered: continue after other tasks ran

    def _tls_pending(self) -> bool:
        sock = self._sock
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def _on_writable(self) -> None:
        client = self._client
        if client is None:
            return
        sock = self._sock
        cork = hasattr(socket, "TCP_CORK") and sock is not None
        if cork:  # coalesce the many small packets (acks) loop_write sends one by one
            self._set_cork(sock, 1)
        try:
            client.loop_write()
        finally:
            if cork and self._sock is sock:
                self._set_cork(sock, 0)

    @staticmethod
    def _set_cork(sock: Any, value: int) -> None:  # noqa: ANN401
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, value)

    def _schedule_misc(self) -> None:
        self._cancel_misc()
        assert self._loop is not None  # noqa: S101
        self._misc_handle = self._loop.call_later(1.0, self._misc)

    def _cancel_misc(self) -> None:
        if self._misc_handle is not None:
            self._misc_handle.cancel()
            self._misc_handle = None

    def _misc(self) -> None:
        self._misc_handle = None
        client = self._client
        if client is None or client.socket() is None:
            return
        client.loop_misc()  # keepalive PINGREQ, or drop a connection whose PINGRESP never came
        if client.socket() is not None:
            self._schedule_misc()

    # ------------------------------------------------------------------ paho's protocol callbacks

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,  # noqa: ANN401
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            error: MqttError = (
                MqttAuthError(str(reason)) if reason.value in _AUTH_FAILURES else MqttError(f"CONNACK: {reason}")
            )
            if self._connack is not None and not self._connack.done():
                self._connack.set_exception(error)
            return
        self._generation += 1
        self.connected = True
        self.stats.connects += 1
        _LOGGER.info(
            "MQTT connected to %s:%s as %s (session %s)",
            self.settings.host,
            self.settings.port,
            self.settings.client_id,
            "resumed" if flags.session_present else "new",
        )
        for sub in self._subs.values():
            if not flags.session_present:
                sub.active = False
            sub.mid = None
            if not sub.active:
                self._send_subscribe(sub)
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(flags.session_present)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        self._tell(connected=True)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,  # noqa: ANN401
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self.connected
        self.connected = False
        self._cancel_misc()
        if was_connected and not self._closing:
            self.stats.connection_losses += 1
        if not self._closing:
            self._last_error = f"{'broker sent DISCONNECT: ' if flags.is_disconnect_packet_from_server else ''}{reason}"

        for sub in self._subs.values():
            sub.mid = None
            for waiter in sub.waiters:
                if not waiter.done():
                    waiter.set_exception(MqttNotConnectedError("connection lost before SUBACK"))
            sub.waiters.clear()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttError(f"connection closed before CONNACK: {reason}"))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if was_connected:
            self._tell(connected=False)

    def _tell(self, *, connected: bool) -> None:
        for listener in list(self.connection_listeners):
            try:
                listener(connected)
            except Exception:
                _LOGGER.exception("MQTT connection listener failed")

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,  # noqa: ANN401
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        for sub in self._subs.values():
            if sub.mid != mid:
                continue
            sub.mid = None
            failed = next((r for r in reasons if r.is_failure), None)
            sub.active = failed is None
            if failed is not None:
                _LOGGER.error("broker refused subscription %s: %s", sub.filter, failed)
            for waiter in sub.waiters:
                if not waiter.done():
                    if failed is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(MqttError(f"subscription {sub.filter!r} refused: {failed}"))
            sub.waiters.clear()

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,  # noqa: ANN401
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        fut = self._pub_waiters.get(mid)
        if fut is None or fut.done():
            return
        if reason.is_failure:
            fut.set_exception(MqttError(f"publish refused by the broker: {reason}"))
        else:
            fut.set_result(None)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:  # noqa: ANN401
        self.stats.messages_in += 1
        inbound = _Inbound(message.mid, message.qos, self._generation)
        try:
            topic = message.topic
        except UnicodeDecodeError:  # the broker should have refused it; nothing of ours
            inbound.dispatched = True
            self._finish(inbound)
            return
        callbacks = self._match(topic)
        if not callbacks:
            if len(self._unmatched) < _UNMATCHED_LIMIT:
                self._unmatched.append((topic, message.payload, inbound))
                self.stats.unmatched_held += 1
            return  # beyond the limit: not acked, the broker redelivers after a reconnect
        self._dispatch(inbound, topic, message.payload, callbacks)

    # ------------------------------------------------------------------ dispatch and acks

    def _match(self, topic: str) -> tuple[MessageCallback, ...]:
        found = self._match_cache.get(topic)
        if found is None:
            found = tuple(cb for sub in self._subs.values() if topic_matches(sub.match, topic) for cb in sub.callbacks)
            if len(self._match_cache) >= _MATCH_CACHE_LIMIT:
                self._match_cache.clear()
            self._match_cache[topic] = found
        return found

    def _dispatch(self, inbound: _Inbound, topic: str, payload: bytes, callbacks: tuple[MessageCallback, ...]) -> None:
        self._current = inbound
        try:
            for callback in callbacks:
                callback(topic, payload)
        except Exception:
            self.stats.callback_errors += 1
            inbound.withheld = True
            _LOGGER.exception("message callback failed for %s; the message is not acknowledged", topic)
        finally:
            self._current = None
        inbound.dispatched = True
        if inbound.pending == 0:
            self._finish(inbound)

    def hold_ack(self, fut: asyncio.Future[Any]) -> None:
        """Called from a message callback: acknowledge the message only once ``fut`` resolved.

        If ``fut`` fails or is cancelled the message is not acknowledged; the broker redelivers
        it after the next reconnect. Outside a message callback this does nothing.
        """
        inbound = self._current
        if inbound is None or inbound.qos == 0:
            return
        inbound.pending += 1
        if inbound.pending == 1:
            self._held.add(inbound)
            self._held_empty.clear()
        fut.add_done_callback(functools.partial(self._held_done, inbound))

    def withhold_ack(self) -> None:
        """Called from a message callback: never acknowledge this delivery (it comes back later)."""
        if self._current is not None:
            self._current.withheld = True

    def _held_done(self, inbound: _Inbound, fut: asyncio.Future[Any]) -> None:
        inbound.pending -= 1
        if fut.cancelled() or fut.exception() is not None:
            inbound.withheld = True
        if inbound.pending == 0 and inbound.dispatched:
            self._finish(inbound)

    def _finish(self, inbound: _Inbound) -> None:
        if self._held:
            self._held.discard(inbound)
            if not self._held:
                self._held_empty.set()
        if inbound.qos == 0:
            return
        if inbound.withheld:
            self.stats.acks_withheld += 1
            return
        client = self._client
        if inbound.generation != self._generation or not self.connected or client is None:
            self.stats.acks_dropped += 1
            return
        client.ack(inbound.mid, inbound.qos)
        self.stats.acks_sent += 1

    def _replay_unmatched(self) -> None:
        if not self._unmatched:
            return
        waiting, self._unmatched = self._unmatched, []
        for topic, payload, inbound in waiting:
            callbacks = self._match(topic)
            if callbacks:
                self._dispatch(inbound, topic, payload, callbacks)
            else:
                self._unmatched.append((topic, payload, inbound))

    # ------------------------------------------------------------------ subscribe / publish

    def _send_subscribe(self, sub: _Subscription) -> None:
        client = self._client
        if client is None:
            return
        rc, mid = client.subscribe(sub.filter, options=SubscribeOptions(qos=sub.qos))
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            sub.mid = mid
        else:
            _LOGGER.warning("SUBSCRIBE %s not sent: %s", sub.filter, paho.error_string(rc))

    async def subscribe(self, topic: str, qos: int, callback: MessageCallback) -> Unsubscribe:
        """Register ``callback`` for ``topic`` (a filter, ``$share/...`` allowed); the router's SubscribeFn.

        When connected, returns once the broker confirmed the subscription; otherwise it is
        sent on (re)connect. The returned function removes the callback (and, if it was the
        last one for the filter, unsubscribes at the broker).
        """
        sub = self._subs.get(topic)
        if sub is None:
            sub = self._subs[topic] = _Subscription(topic, qos)
        sub.callbacks.append(callback)
        self._match_cache.clear()
        if self.connected and not sub.active:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            sub.waiters.append(waiter)
            if sub.mid is None:
                self._send_subscribe(sub)
            with contextlib.suppress(MqttNotConnectedError):  # then it is sent again on reconnect
                await asyncio.wait_for(waiter, self.settings.publish_timeout)
        self._replay_unmatched()
        return functools.partial(self._unsubscribe, sub, callback)

    def _unsubscribe(self, sub: _Subscription, callback: MessageCallback) -> None:
        if callback in sub.callbacks:
            sub.callbacks.remove(callback)
        self._match_cache.clear()
        if sub.callbacks or self._subs.get(sub.filter) is not sub:
            return
        del self._subs[sub.filter]
        if self.connected and self._client is not None:
            self._client.unsubscribe(sub.filter)

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Publish; with QoS 1 return once the broker acknowledged it. The router's PublishFn.

        Raises MqttNotConnectedError when there is no connection (nothing is queued for later:
        a command delivered minutes late would surprise its user), MqttError when refused,
        TimeoutError when the broker did not acknowledge in time.
        """
        client = self._client
        if not self.connected or client is None:
            raise MqttNotConnectedError(f"not connected to the MQTT broker ({self._last_error or 'connecting'})")
        info = client.publish(topic, payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        self.stats.publishes += 1
        if qos == 0:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pub_waiters[info.mid] = fut
        try:
            await asyncio.wait_for(fut, self.settings.publish_timeout)
        finally:
            self._pub_waiters.pop(info.mid, None)

    def stats_dict(self) -> dict[str, float]:
        """Figures for /metrics (``connected`` is exported on its own, as ``mqtt_connected``)."""
        out: dict[str, float] = {k: float(v) for k, v in vars(self.stats).items()}
        out["held_acks"] = float(len(self._held))
        out["unmatched_waiting"] = float(len(self._unmatched))
        return out
