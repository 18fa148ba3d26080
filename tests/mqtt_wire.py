"""MQTT 3.1.1 packets encoded by hand, for load generators that must not spend a core in paho.

The fault tests' publisher and the server benchmarks' publisher send pre-encoded QoS 1
PUBLISHes over one socket and count the PUBACKs themselves.
"""

from __future__ import annotations

import struct


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (the remaining length)."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(s: str) -> bytes:
    """A UTF-8 string with its two-byte length."""
    raw = s.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, *, keepalive: int) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session."""
    body = string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive) + string(client_id)
    return b"\x10" + varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, packet_id: int, *, retain: bool = False) -> bytes:
    """A QoS 1 PUBLISH."""
    body = string(topic) + struct.pack("!H", packet_id) + payload
    return bytes([0x32 | (1 if retain else 0)]) + varint(len(body)) + body
