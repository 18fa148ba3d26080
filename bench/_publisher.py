"""Load generator for bench/ha_discovery.py, run as its own process.

It is a separate process so that its CPU time (paho, JSON) is not counted as Home
Assistant's. It talks to the benchmark over stdin/stdout, one JSON object per line:

- ``{"op": "discover", "variant": "ours"|"baseline"|"device", "prefix": "bench", "count": N}``
  publishes every device's retained config(s), retained availability and retained first
  full state, waits until the broker has acknowledged them all (QoS 1) and answers
  ``{"t0": <monotonic of the first publish>, "t1": <monotonic when all were acked>, "messages": M}``.
- ``{"op": "updates", "variant": ..., "prefix": ..., "devices": N, "count": U, "rate": R, "qos": Q}``
  publishes U full state reports round-robin over the N devices at R messages/s (not
  retained) and answers ``{"t_pub": [...]}``: the monotonic time of each publish call.
- ``{"op": "quit"}``.

``time.monotonic`` is CLOCK_MONOTONIC, shared by every process on the machine, so the
benchmark can subtract its own timestamps from these.

Both variants receive byte-identical state payloads on equivalent topics; only the way
the devices are announced differs (our protocol's one config per device, Home
Assistant's classic MQTT discovery with one config per entity, or its device-based
discovery with one config per device).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from thermo_bridge_sim import devices

OURS_BASE = "thermo_bridge"
BASELINE_BASE = "hadisc"
DISCOVERY_PREFIX = "homeassistant"


def device_id(prefix: str, index: int) -> str:
    """The id of thermostat ``index`` (from 1)."""
    return f"{prefix}_t_{index:05d}"


def first_state() -> dict[str, Any]:
    """The full state every device reports first."""
    return {
        "hvac_mode": "heat",
        "hvac_action": "heating",
        "target_temperature": 21.0,
        "temperature": 20.0,
        "humidity": 40,
        "battery": 90,
    }


def update_state(round_no: int) -> dict[str, Any]:
    """The ``round_no``-th (from 0) full state report of a device: temperature and humidity change."""
    state = first_state()
    state["temperature"] = round(20.0 + (round_no + 1) * 0.1, 1)
    state["humidity"] = 41 + round_no % 19  # never equal to the previous report
    return state


def encode(values: dict[str, Any]) -> bytes:
    """Compact JSON, as both kinds of devices send it."""
    return json.dumps(values, separators=(",", ":")).encode()


def ours_messages(prefix: str, index: int) -> list[tuple[str, bytes]]:
    """Config, availability and first state of one device in our protocol (all retained)."""
    dev = device_id(prefix, index)
    return [
        (f"{OURS_BASE}/{dev}/config", devices.encode(devices.bench_thermostat(dev, index))),
        (f"{OURS_BASE}/{dev}/availability", b"online"),
        (f"{OURS_BASE}/{dev}/state", encode(first_state())),
    ]


def _device_info(config: devices.WireConfig) -> dict[str, Any]:
    return {
        "identifiers": [config["id"]],
        "name": config["name"],
        "manufacturer": config["manufacturer"],
        "model": config["model"],
        "sw_version": config["sw_version"],
    }


def _components(config: devices.WireConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """(platform, object id, config) of the entities HA's MQTT discovery gets for our ``config``'s device."""
    dev = config["id"]
    thermostat = config["thermostat"]
    state_topic = f"{BASELINE_BASE}/{dev}/state"
    climate = {
        "name": None,
        "unique_id": f"{dev}_climate",
        "default_entity_id": f"climate.{dev}",
        "modes": thermostat["hvac_modes"],
        "mode_state_topic": state_topic,
        "mode_state_template": "{{ value_json.hvac_mode }}",
        "mode_command_topic": f"{BASELINE_BASE}/{dev}/set/mode",
        "action_topic": state_topic,
        "action_template": "{{ value_json.hvac_action }}",
        "temperature_state_topic": state_topic,
        "temperature_state_template": "{{ value_json.target_temperature }}",
        "temperature_command_topic": f"{BASELINE_BASE}/{dev}/set/temperature",
        "current_temperature_topic": state_topic,
        "current_temperature_template": "{{ value_json.temperature }}",
        "current_humidity_topic": state_topic,
        "current_humidity_template": "{{ value_json.humidity }}",
        "min_temp": thermostat["min_temp"],
        "max_temp": thermostat["max_temp"],
        "temp_step": thermostat["temp_step"],
        "precision": 0.1,
        "temperature_unit": "C",
    }
    out: list[tuple[str, str, dict[str, Any]]] = [("climate", "climate", climate)]
    for key, declared in config["measurements"].items():
        sensor = {
            "name": key.capitalize(),
            "unique_id": f"{dev}_{key}",
            "default_entity_id": f"sensor.{dev}_{key}",
            "state_topic": state_topic,
            "value_template": f"{{{{ value_json.{key} }}}}",
            "device_class": key,
            "state_class": "measurement",
            "unit_of_measurement": declared["unit"],
            "suggested_display_precision": declared["precision"],
        }
        out.append(("sensor", key, sensor))
    return out


def baseline_messages(prefix: str, index: int) -> list[tuple[str, bytes]]:
    """The same device through Home Assistant's own MQTT discovery, one config per entity (the classic way)."""
    dev = device_id(prefix, index)
    ours = devices.bench_thermostat(dev, index)
    avail_topic = f"{BASELINE_BASE}/{dev}/availability"
    common = {"device": _device_info(ours), "availability_topic": avail_topic, "qos": 1}
    out = [
        (f"{DISCOVERY_PREFIX}/{platform}/{dev}/{object_id}/config", encode({**common, **config}))
        for platform, object_id, config in _components(ours)
    ]
    out += [(avail_topic, b"online"), (f"{BASELINE_BASE}/{dev}/state", encode(first_state()))]
    return out


def device_messages(prefix: str, index: int) -> list[tuple[str, bytes]]:
    """The same device through HA's device-based MQTT discovery: one config for all its entities."""
    dev = device_id(prefix, index)
    ours = devices.bench_thermostat(dev, index)
    avail_topic = f"{BASELINE_BASE}/{dev}/availability"
    config = {
        "device": _device_info(ours),
        "origin": {"name": devices.BENCH_MANUFACTURER, "sw_version": "1.0.0"},
        "availability_topic": avail_topic,
        "qos": 1,
        "components": {object_id: {"platform": platform, **cfg} for platform, object_id, cfg in _components(ours)},
    }
    return [
        (f"{DISCOVERY_PREFIX}/device/{dev}/config", encode(config)),
        (avail_topic, b"online"),
        (f"{BASELINE_BASE}/{dev}/state", encode(first_state())),
    ]


MESSAGES = {"ours": ours_messages, "baseline": baseline_messages, "device": device_messages}


def state_topic(variant: str, prefix: str, index: int) -> str:
    """Where a device of ``variant`` reports its state."""
    base = OURS_BASE if variant == "ours" else BASELINE_BASE
    return f"{base}/{device_id(prefix, index)}/state"


class Publisher:
    """One paho client with TCP_NODELAY (paho never sets it; Nagle would add ~40 ms)."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.time_ns()}")
        self.client.max_inflight_messages_set(0)  # 0: unlimited, the broker acks as fast as it can
        self.client.max_queued_messages_set(0)
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.connect(host, port, keepalive=60)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError(f"publisher could not connect to {host}:{port}")
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        self._connected.set()

    def discover(self, variant: str, prefix: str, count: int) -> dict[str, Any]:
        build = MESSAGES[variant]
        messages = [msg for i in range(1, count + 1) for msg in build(prefix, i)]
        infos = []
        t0 = time.monotonic()
        for topic, payload in messages:
            infos.append(self.client.publish(topic, payload, qos=1, retain=True))
        for info in infos:
            info.wait_for_publish(30)
        return {"t0": t0, "t1": time.monotonic(), "messages": len(messages)}

    def updates(self, variant: str, prefix: str, devices: int, count: int, rate: float, qos: int) -> dict[str, Any]:
        plan = [
            (state_topic(variant, prefix, i % devices + 1), encode(update_state(i // devices))) for i in range(count)
        ]
        t_pub: list[float] = []
        interval = 1.0 / rate if rate > 0 else 0.0
        start = time.monotonic()
        last_info = None
        for i, (topic, payload) in enumerate(plan):
            due = start + i * interval
            while (now := time.monotonic()) < due:
                time.sleep(min(due - now, 0.0005))
            t_pub.append(time.monotonic())
            last_info = self.client.publish(topic, payload, qos=qos, retain=False)
        if last_info is not None and qos > 0:
            last_info.wait_for_publish(30)
        return {"t_pub": t_pub}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    pub = Publisher(args.host, args.port)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        if op == "quit":
            break
        if op == "discover":
            answer = pub.discover(**request)
        elif op == "updates":
            answer = pub.updates(**request)
        else:
            answer = {"error": f"unknown op {op!r}"}
        print(json.dumps(answer), flush=True)
    pub.close()


if __name__ == "__main__":
    main()
