"""The device side's transport: paho-mqtt driven by the event loop, acknowledgements held for the store."""

from .transport import (
    MessageCallback,
    MqttAuthError,
    MqttError,
    MqttNotConnectedError,
    MqttTransport,
    TransportStats,
    Unsubscribe,
    match_filter,
    topic_matches,
)

__all__ = [
    "MessageCallback",
    "MqttAuthError",
    "MqttError",
    "MqttNotConnectedError",
    "MqttTransport",
    "TransportStats",
    "Unsubscribe",
    "match_filter",
    "topic_matches",
]
