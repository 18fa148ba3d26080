"""The MQTT transport against a real private mosquitto: sessions, acks, reconnects, TLS, credentials."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import Mosquitto, free_port
from tests.pki import make_pki
from tests.waiting import wait_for
from thermo_bridge_server.config import MqttSettings
from thermo_bridge_server.mqtt.transport import (
    _NO_PROPERTIES,
    MqttAuthError,
    MqttNotConnectedError,
    MqttTransport,
    _BufferedClient,
    match_filter,
    topic_matches,
)

Received = list[tuple[str, bytes]]


def settings(broker: Mosquitto, client_id: str, **kw: Any) -> MqttSettings:
    kw.setdefault("reconnect_min", 0.05)
    kw.setdefault("reconnect_max", 0.5)
    return MqttSettings(host=broker.host, port=broker.port, client_id=client_id, **kw)


@pytest.fixture
async def transports() -> AsyncIterator[Callable[[MqttSettings], MqttTransport]]:
    """A factory of transports, all disconnected at the end."""
    made: list[MqttTransport] = []

    def make(s: MqttSettings) -> MqttTransport:
        transport = MqttTransport(s)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.disconnect()


def collector(into: Received) -> Callable[[str, bytes], None]:
    return lambda topic, payload: into.append((topic, payload))


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/+/c", "a/b/c/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/b", "a/b", True),
        ("a/b", "a/b/", False),
        ("+", "", True),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


def test_shared_subscription_matches_the_real_topic() -> None:
    assert match_filter("$share/workers/thermo_bridge/+/state") == "thermo_bridge/+/state"
    assert match_filter("thermo_bridge/+/state") == "thermo_bridge/+/state"


async def test_publish_subscribe_and_unsubscribe(mosquitto: Mosquitto, transports: Any) -> None:
    sub = transports(settings(mosquitto, "sub"))
    pub = transports(settings(mosquitto, "pub"))
    await sub.connect(wait_seconds=5)
    await pub.connect(wait_seconds=5)
    got: Received = []
    sentinel: Received = []
    unsubscribe = await sub.subscribe("t/+/x", 1, collector(got))
    await sub.subscribe("t/sentinel", 1, collector(sentinel))
    await pub.publish("t/a/x", b"one", 1, False)
    await pub.publish("t/b/x", b"two", 0, False)
    await pub.publish("t/b/y", b"not mine", 1, False)
    await wait_for(lambda: len(got) == 2, what="two messages")
    assert got == [("t/a/x", b"one"), ("t/b/x", b"two")]

    unsubscribe()
    await pub.publish("t/a/x", b"after unsubscribe", 1, False)
    await pub.publish("t/sentinel", b"s", 1, False)
    await wait_for(lambda: len(sentinel) == 1, what="the sentinel")
    assert len(got) == 2
    assert sub.stats.acks_sent == 2  # the two QoS 1 deliveries (QoS 0 needs none)


async def test_socket_has_tcp_nodelay(mosquitto: Mosquitto, transports: Any) -> None:
    transport = transports(settings(mosquitto, "nodelay"))
    await transport.connect(wait_seconds=5)
    sock = transport._sock
    assert sock is not None
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_publish_without_connection_raises(mosquitto: Mosquitto) -> None:
    transport = MqttTransport(settings(mosquitto, "never"))
    with pytest.raises(MqttNotConnectedError):
        await transport.publish("t/x", b"x", 1, False)


async def test_shared_subscription_splits_the_load(mosquitto: Mosquitto, transports: Any) -> None:
    workers = [transports(settings(mosquitto, f"worker{i}")) for i in range(2)]
    got: list[Received] = [[], []]
    for worker, into in zip(workers, got, strict=True):
        await worker.connect(wait_seconds=5)
        await worker.subscribe("$share/ingest/s/+/state", 1, collector(into))
    pub = transports(settings(mosquitto, "pub"))
    await pub.connect(wait_seconds=5)
    for i in range(100):
        await pub.publish(f"s/d{i % 7}/state", str(i).encode(), 1, False)
    await wait_for(lambda: len(got[0]) + len(got[1]) == 100, what="100 messages across the group")
    assert got[0]
    assert got[1]  # both workers took a share
    assert sorted(int(p) for _, p in got[0] + got[1]) == list(range(100))  # each exactly once
    assert all(topic.startswith("s/") for topic, _ in got[0] + got[1])  # on the real topic


async def test_ack_waits_for_the_held_future(mosquitto: Mosquitto, transports: Any) -> None:
    """Unresolved or failed → not acked → redelivered to the next connection of the same session."""
    loop = asyncio.get_running_loop()
    futures: dict[bytes, asyncio.Future[None]] = {}
    first = transports(settings(mosquitto, "acker"))

    def hold(topic: str, payload: bytes) -> None:
        fut = futures[payload] = loop.create_future()
        first.hold_ack(fut)

    await first.connect(wait_seconds=5)
    await first.subscribe("h/#", 1, hold)
    pub = transports(settings(mosquitto, "pub"))
    await pub.connect(wait_seconds=5)
    for payload in (b"committed", b"failed", b"pending"):
        await pub.publish("h/x", payload, 1, False)
    await wait_for(lambda: len(futures) == 3, what="three deliveries")
    assert first.stats.acks_sent == 0
    assert first.held_acks == 3
    futures[b"committed"].set_result(None)
    futures[b"failed"].set_exception(RuntimeError("store down"))
    await wait_for(lambda: first.stats.acks_sent == 1, what="one ack")
    assert first.stats.acks_withheld == 1
    assert first.held_acks == 1
    assert not await first.flush_acks(wait_seconds=0.05)
    await first.disconnect()

    again: Received = []
    second = transports(settings(mosquitto, "acker"))
    await second.connect(wait_seconds=5)
    await second.subscribe("h/#", 1, collector(again))
    await wait_for(lambda: len(again) == 2, what="the two unacknowledged messages")
    assert sorted(p for _, p in again) == [b"failed", b"pending"]
    await asyncio.sleep(0.2)
    assert len(again) == 2  # the committed one is not redelivered


async def test_persistent_session_delivers_what_was_published_while_away(mosquitto: Mosquitto, transports: Any) -> None:
    first = transports(settings(mosquitto, "persistent"))
    await first.connect(wait_seconds=5)
    await first.subscribe("p/+/state", 1, collector([]))
    await first.disconnect()
    assert first.stats.connection_losses == 0  # a deliberate disconnect is not a loss

    pub = transports(settings(mosquitto, "pub"))
    await pub.connect(wait_seconds=5)
    for i in range(50):
        await pub.publish(f"p/d{i % 3}/state", str(i).encode(), 1, False)

    got: Received = []
    second = transports(settings(mosquitto, "persistent"))
    await second.connect(wait_seconds=5)  # queued messages may arrive before anyone subscribed...
    await asyncio.sleep(0.2)
    await second.subscribe("p/+/state", 1, collector(got))  # ...they are held, then dispatched
    await wait_for(lambda: len(got) == 50, what="the 50 queued messages")
    assert [int(p) for _, p in got] == list(range(50))
    await wait_for(lambda: second.stats.acks_sent == 50, what="50 acks")


async def test_reconnects_and_resubscribes_after_broker_restart(mosquitto: Mosquitto, transports: Any) -> None:
    # session_expiry=0: the broker forgets us, so after the restart we must subscribe again.
    transport = transports(settings(mosquitto, "restarter", session_expiry=0))
    got: Received = []
    await transport.connect(wait_seconds=5)
    await transport.subscribe("r/#", 1, collector(got))
    await asyncio.to_thread(mosquitto.restart, 0.3)
    await wait_for(lambda: transport.stats.connects == 2 and transport.connected, what="the reconnection")
    assert transport.stats.connection_losses == 1
    pub = transports(settings(mosquitto, "pub"))
    await pub.connect(wait_seconds=5)
    await wait_for(lambda: all(s.active for s in transport._subs.values()), what="the resubscription")
    await pub.publish("r/x", b"after restart", 1, False)
    await wait_for(lambda: got == [("r/x", b"after restart")], what="a message after the restart")
    await transport.publish("r/own", b"publish works again", 1, False)


async def test_connect_waits_until_the_broker_is_up(tmp_path: Path, transports: Any) -> None:
    broker = Mosquitto(tmp_path / "late")
    transport = transports(settings(broker, "early"))
    await transport.connect(wait=False)
    await asyncio.sleep(0.3)
    assert not transport.connected
    assert transport.last_error is not None
    with pytest.raises(MqttNotConnectedError):
        await transport.publish("x", b"x", 1, False)
    await asyncio.to_thread(broker.start)
    try:
        await transport.connect(wait_seconds=10)
        assert transport.connected
    finally:
        await transport.disconnect()
        broker.stop()


# --------------------------------------------------------------------------- TLS and credentials


@pytest.fixture
def tls_broker(tmp_path: Path) -> Any:
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    extra = (
        f"listener {port} 127.0.0.1\n"
        f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        "require_certificate true\n"
    )
    broker = Mosquitto(tmp_path / "tls", websockets=False, extra_config=extra)
    broker.start()
    yield broker, port, pki
    broker.stop()


async def test_mutual_tls(tls_broker: Any, transports: Any) -> None:
    broker, port, pki = tls_broker
    tls = MqttSettings(
        host="127.0.0.1",
        port=port,
        client_id="tls",
        ca_file=str(pki.ca),
        cert_file=str(pki.client_cert),
        key_file=str(pki.client_key),
    )
    transport = transports(tls)
    got: Received = []
    await transport.connect(wait_seconds=5)
    await transport.subscribe("tls/#", 1, collector(got))
    plain = transports(settings(broker, "plain"))
    await plain.connect(wait_seconds=5)
    for i in range(20):
        await plain.publish("tls/x", str(i).encode(), 1, False)
    await wait_for(lambda: len(got) == 20, what="messages over TLS")
    await transport.publish("tls/back", b"x", 1, False)


async def test_tls_with_an_unknown_ca_is_refused(tls_broker: Any, tmp_path: Path, transports: Any) -> None:
    _, port, pki = tls_broker
    other = make_pki(tmp_path / "other", name="Other CA")
    transport = transports(
        MqttSettings(
            host="127.0.0.1",
            port=port,
            client_id="wrong-ca",
            ca_file=str(other.ca),
            cert_file=str(pki.client_cert),
            key_file=str(pki.client_key),
        )
    )
    with pytest.raises(MqttAuthError, match="certificate"):
        await transport.connect(wait_seconds=5)


@pytest.fixture
def auth_broker(tmp_path: Path) -> Any:
    broker = Mosquitto(tmp_path / "authbroker", websockets=False, users={"thermo": "s3cret"})
    broker.start()
    yield broker
    broker.stop()


async def test_username_and_password(auth_broker: Mosquitto, transports: Any) -> None:
    good = transports(settings(auth_broker, "user", username="thermo", password="s3cret"))
    got: Received = []
    await good.connect(wait_seconds=5)
    await good.subscribe("u/#", 1, collector(got))
    await good.publish("u/x", b"hello", 1, False)
    await wait_for(lambda: got == [("u/x", b"hello")], what="own message")

    bad = transports(settings(auth_broker, "intruder", username="thermo", password="wrong"))
    with pytest.raises(MqttAuthError):
        await bad.connect(wait_seconds=5)
    anonymous = transports(settings(auth_broker, "anonymous"))
    with pytest.raises(MqttAuthError):
        await anonymous.connect(wait_seconds=5)


async def test_connecting_never_blocks_the_event_loop(tmp_path: Path, transports: Any) -> None:
    """A TLS peer that never answers the handshake: the loop keeps running meanwhile."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    loop = asyncio.get_running_loop()
    server.setblocking(False)
    loop.add_reader(server, lambda: accepted.append(server.accept()[0]))
    pki = make_pki(tmp_path / "pki")
    transport = transports(
        MqttSettings(host="127.0.0.1", port=port, client_id="hang", ca_file=str(pki.ca), keepalive=5)
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        with pytest.raises(TimeoutError):
            await transport.connect(wait_seconds=0.5)
        assert accepted  # the handshake was under way
        assert ticks >= 10  # a blocked loop would have ticked 0 times in that half second
    finally:
        task.cancel()
        loop.remove_reader(server)
        for sock in accepted:
            sock.close()  # the handshake in the executor fails now
        server.close()


def _publish_packet(topic: bytes, payload: bytes, qos: int, mid: int, properties: bytes) -> bytearray:
    """The variable header and payload of a PUBLISH (what paho holds in ``_in_packet['packet']``)."""
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    assert len(properties) < 128
    return bytearray(body + bytes([len(properties)]) + properties + payload)


@pytest.mark.parametrize(
    ("flags", "properties"),
    [
        (0x00, b""),  # QoS 0
        (0x02, b""),  # QoS 1
        (0x0B, b""),  # QoS 1, DUP, RETAIN
        (0x02, b"\x03\x00\x04json"),  # QoS 1 with a content type: paho parses it
        (0x04, b""),  # QoS 2: paho's own flow
    ],
)
def test_lean_publish_path_matches_paho(flags: int, properties: bytes) -> None:
    def handle(handler: Callable[[paho.Client], object]) -> paho.MQTTMessage:
        client = _BufferedClient(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True
        )
        got: list[paho.MQTTMessage] = []
        client.on_message = lambda c, u, m: got.append(m)
        qos = (flags & 0x06) >> 1
        packet = _publish_packet(b"thermo_bridge/d1/state", b'{"temperature":21}', qos, 4242, properties)
        client._in_packet = {
            "command": 0x30 | flags,
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": len(packet),
            "packet": packet,
            "to_process": 0,
            "pos": 0,
        }
        handler(client)
        assert qos == 2 or len(got) == 1  # QoS 2 is delivered on PUBREL
        return got[0] if got else client._in_messages[4242]

    ours = handle(lambda c: c._handle_publish())
    theirs = handle(paho.Client._handle_publish)
    for attr in ("topic", "payload", "qos", "mid", "retain", "dup"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert ours.properties is not None
    assert theirs.properties is not None
    assert ours.properties.json() == theirs.properties.json()  # type: ignore[no-untyped-call]
    lean = not properties and flags & 0x06 != 0x04
    assert (ours.properties is _NO_PROPERTIES) is lean  # the short path was (not) taken
