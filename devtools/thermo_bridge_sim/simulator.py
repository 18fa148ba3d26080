"""``thermo-bridge-sim``: simulated thermostats and sensors speaking the device protocol.

Used by the demo and the tests. The devices announce the configs of ``devices``
(``simulated_thermostat``, ``simulated_sensor``). Every simulated device has its
own MQTT connection, like a real one, so each has its own last will (retained ``offline`` on
its availability topic). All connections are driven by one background thread with one
``selectors`` loop over paho's external-loop API (``loop_read``/``loop_write``/``loop_misc``):
no thread per device, and publishes made in one pass are written out together.

Values follow a simple first-order model: a thermostat's room loses heat towards the
outdoor temperature and its heating/cooling moves it towards the setpoint (with hysteresis,
which also gives ``hvac_action``); humidity drifts, batteries drain slowly. Devices answer
``set`` like a real device: parse with the protocol, apply, report the new state, then ack
``ok``; an invalid command gets an ``error`` ack whose reason starts with the protocol's
reason code.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import random
import secrets
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from thermo_bridge_protocol import (
    DEFAULT_BASE_TOPIC,
    MAX_PAYLOAD_BYTES,
    Ack,
    AckStatus,
    Command,
    DeviceConfig,
    DeviceEvent,
    HvacAction,
    HvacMode,
    MessageKind,
    ProtocolError,
    decode_object,
    device_topic,
    encode_ack,
    encode_availability,
    encode_config,
    encode_event,
    parse_command,
    parse_config,
    validate_base_topic,
)
from thermo_bridge_protocol.codec import COMMAND_ID_RE

from . import devices

_LOGGER = logging.getLogger(__name__)

PRESET_TEMPERATURES = {"eco": 18.0, "comfort": 21.0, "away": 15.0, "boost": 24.0}
"""The setpoint each preset of ``devices.SIMULATED_PRESETS`` moves a simulated thermostat to."""

REPORT_INTERVAL = 5.0
"""Natural cadence: seconds between two reports of one device (jittered ±20 %)."""
TICK = 1.0
"""Seconds between two steps of the physical model (and keepalive housekeeping)."""
EVENT_PROBABILITY = 1 / 900
"""Chance per device per tick of a spontaneous event (about one every 15 minutes)."""
MAX_PENDING_PER_DEVICE = 2000
"""Load mode: a device with this many unacknowledged publishes skips its turn (no unbounded queue)."""
MAX_RECONNECT_DELAY = 2.0
"""Reconnect backoff cap (from 0.25 s, doubling): short, since tests and benchmarks restart brokers."""
HYSTERESIS = 0.3
OUTDOOR_TEMPERATURE = 8.0
LOSS_TIME_CONSTANT = 3600.0  # seconds for the room to lose 63 % of its excess over outdoors
HEATING_RATE = 0.02  # °C per second while heating
COOLING_RATE = 0.02


class SimulatorError(Exception):
    """The simulator could not do what it was asked (broker unreachable, credentials refused…)."""


@dataclass(slots=True)
class SimDevice:
    """One simulated device: its announced config and the values it last reported."""

    device_id: str
    config: DeviceConfig
    state: dict[str, Any] = field(default_factory=dict)
    # Model internals (unrounded), not part of the wire state.
    model: dict[str, float] = field(default_factory=dict)
    seq: int = 0
    next_report: float = 0.0
    heating: bool = False
    cooling: bool = False
    client: mqtt.Client | None = field(default=None, repr=False)
    state_topic: str = ""
    connected: bool = False
    pending: int = 0
    reconnect_at: float | None = None
    reconnect_delay: float = 0.25

    @property
    def is_thermostat(self) -> bool:
        """Whether this device takes commands."""
        return self.config.thermostat is not None


def device_config(wire: devices.WireConfig) -> DeviceConfig:
    """A config of ``devices`` as the protocol's model (the simulator answers commands with it)."""
    return parse_config(devices.encode(wire))


def _round(value: float, precision: int | None) -> float:
    return round(value, precision or 0)


class Simulator:
    """N thermostats and M sensors on one broker, driven by one background thread.

    ``rate`` > 0 replaces the natural cadence by a load: that many state messages per second
    in total, spread round-robin over the devices.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        base_topic: str = DEFAULT_BASE_TOPIC,
        thermostats: int = 1,
        sensors: int = 0,
        rate: float = 0.0,
        id_prefix: str = "sim",
        username: str | None = None,
        password: str | None = None,
        tls_ca: str | None = None,
        seed: int | None = None,
        qos: int = 1,
        refuse_above: float | None = None,
    ) -> None:
        if thermostats < 0 or sensors < 0 or thermostats + sensors == 0:
            raise ValueError("the simulator needs at least one device")
        if rate < 0 or not math.isfinite(rate):
            raise ValueError("rate must be a finite number >= 0")
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        self.host = host
        self.port = port
        self.base_topic = validate_base_topic(base_topic)
        self.rate = float(rate)
        self.qos = qos
        self.refuse_above = refuse_above
        """Thermostats refuse setpoints above this (an installer's limit): an ``error`` ack with the reason."""
        self._username = username
        self._password = password
        self._tls_ca = tls_ca
        self._random = random.Random(seed)
        self.devices: dict[str, SimDevice] = {}
        self.commands: list[tuple[str, Command]] = []
        self.sent = 0
        """State messages published so far."""
        self.acked = 0
        """Messages of any kind the broker acknowledged (QoS 1)."""
        self.skipped = 0
        """Load-mode reports skipped because a device had too many unacknowledged publishes."""
        self.started_at: float | None = None
        for i in range(1, thermostats + 1):
            device_id = f"{id_prefix}_thermostat_{i}"
            self.devices[device_id] = SimDevice(device_id, device_config(devices.simulated_thermostat(device_id, i)))
        for i in range(1, sensors + 1):
            device_id = f"{id_prefix}_sensor_{i}"
            self.devices[device_id] = SimDevice(device_id, device_config(devices.simulated_sensor(device_id, i)))
        for device in self.devices.values():
            self._init_model(device)
        self._by_client: dict[mqtt.Client, SimDevice] = {}
        self._order = list(self.devices.values())
        self._lock = threading.RLock()
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._halt = False
        self._want_write: set[mqtt.Client] = set()
        self._write_registered: set[mqtt.Client] = set()
        self._connect_error: str | None = None
        self._starting = False
        self._initial: list[mqtt.MQTTMessageInfo] = []
        self._load_sent = 0
        self._load_t0 = 0.0
        self._rr = 0
        self._next_tick = 0.0
        self._templates: dict[str, Callable[[SimDevice, float], bytes]] = {}

    # ------------------------------------------------------------------ model

    def _init_model(self, device: SimDevice) -> None:
        rnd = self._random
        model = device.model
        model["temperature"] = rnd.uniform(17.0, 22.0)
        model["humidity"] = rnd.uniform(35.0, 55.0)
        model["battery"] = rnd.uniform(60.0, 100.0)
        model["signal"] = rnd.uniform(-80.0, -40.0)
        if device.is_thermostat:
            device.state.update(
                hvac_mode=str(HvacMode.HEAT),
                preset="comfort",
                fan_mode="auto",
                target_temperature=PRESET_TEMPERATURES["comfort"],
                target_temperature_low=19.0,
                target_temperature_high=24.0,
                target_humidity=45.0,
            )
        else:
            model["co2"] = rnd.uniform(420.0, 900.0)
            model["pressure"] = rnd.uniform(1000.0, 1025.0)
            model["window_open"] = 0.0
        self._refresh_readings(device)

    def _refresh_readings(self, device: SimDevice) -> None:
        """Copy the model's values, rounded to each measurement's precision, into ``state``."""
        model, state = device.model, device.state
        for measurement in device.config.measurements:
            key = measurement.key
            if key == "low_battery":
                state[key] = model["battery"] < 15.0
            elif key == "window_open":
                state[key] = model["window_open"] >= 0.5
            elif key == "illuminance":
                state[key] = _round(self._illuminance(), measurement.precision)
            else:
                state[key] = _round(model[key], measurement.precision)
        if device.is_thermostat:
            state["hvac_action"] = str(self._hvac_action(device))

    def _illuminance(self) -> float:
        hour = (time.time() / 3600.0) % 24.0
        daylight = max(0.0, math.sin((hour - 6.0) / 12.0 * math.pi))
        return daylight * 800.0 + self._random.uniform(0.0, 15.0)

    def _hvac_action(self, device: SimDevice) -> HvacAction:
        if device.state.get("hvac_mode") == HvacMode.OFF:
            return HvacAction.OFF
        if device.heating:
            return HvacAction.HEATING
        if device.cooling:
            return HvacAction.COOLING
        return HvacAction.IDLE

    def _control(self, device: SimDevice) -> None:
        """Thermostat logic with hysteresis: decide whether to heat or cool."""
        state, temp = device.state, device.model["temperature"]
        mode = state.get("hvac_mode")
        heat_target: float | None = None
        cool_target: float | None = None
        if mode == HvacMode.HEAT:
            heat_target = state["target_temperature"]
        elif mode == HvacMode.COOL:
            cool_target = state["target_temperature"]
        elif mode in (HvacMode.HEAT_COOL, HvacMode.AUTO):
            heat_target, cool_target = state["target_temperature_low"], state["target_temperature_high"]
        if heat_target is None:
            device.heating = False
        elif temp < heat_target - HYSTERESIS:
            device.heating = True
        elif temp >= heat_target + HYSTERESIS / 3:
            device.heating = False
        if cool_target is None:
            device.cooling = False
        elif temp > cool_target + HYSTERESIS:
            device.cooling = True
        elif temp <= cool_target - HYSTERESIS / 3:
            device.cooling = False

    def _step(self, device: SimDevice, dt: float) -> None:
        """Advance one device's model by ``dt`` seconds."""
        rnd, model = self._random, device.model
        temp = model["temperature"]
        if device.is_thermostat:
            self._control(device)
            temp += (OUTDOOR_TEMPERATURE - temp) / LOSS_TIME_CONSTANT * dt
            temp += (HEATING_RATE * device.heating - COOLING_RATE * device.cooling) * dt
            target_h = float(device.state.get("target_humidity") or 45.0)
            drift = -0.002 * device.cooling + (target_h - model["humidity"]) * 0.0005
        else:
            temp += (21.0 - temp) / 7200.0 * dt + rnd.gauss(0.0, 0.01) * math.sqrt(dt)
            drift = (45.0 - model["humidity"]) * 0.0005
            co2 = model["co2"] + ((650.0 - model["co2"]) / 1800.0 + rnd.gauss(0.0, 1.5)) * dt
            model["co2"] = min(5000.0, max(400.0, co2))
            model["pressure"] += (1013.0 - model["pressure"]) / 36000.0 * dt + rnd.gauss(0.0, 0.005) * dt
            if rnd.random() < dt / 1800.0:  # someone opens or closes the window now and then
                model["window_open"] = 1.0 - model["window_open"]
        model["temperature"] = min(60.0, max(-30.0, temp))
        humidity = model["humidity"] + drift * dt + rnd.gauss(0.0, 0.02) * math.sqrt(dt)
        model["humidity"] = min(99.0, max(5.0, humidity))
        model["battery"] = max(0.0, model["battery"] - 0.0005 * dt)
        model["signal"] = min(-30.0, max(-95.0, model["signal"] + rnd.gauss(0.0, 0.3)))

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> None:
        """Connect every device, announce it (retained config, ``online``, full state), run in the background.

        Returns once the broker acknowledged the announcements. Raises SimulatorError when the
        broker cannot be reached or refuses the connection.
        """
        if self._running:
            return
        self._halt = False
        self._connect_error = None
        self._starting = True
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        deadline = time.monotonic() + timeout
        try:
            for device in self.devices.values():
                self._connect(device, max(0.5, min(5.0, deadline - time.monotonic())))
        except SimulatorError:
            self._starting = False
            self._teardown()
            raise
        self._running = True
        self.started_at = time.monotonic()
        self._next_tick = self.started_at + TICK
        self._load_t0 = self.started_at
        self._load_sent = 0
        self._thread = threading.Thread(target=self._run, name="thermo-bridge-sim", daemon=True)
        self._thread.start()
        while True:
            with self._lock:
                error = self._pending_error()
                connected = all(device.connected for device in self.devices.values())
                published = connected and all(info.is_published() for info in self._initial)
            if error is not None:
                self._starting = False
                self._abort()
                raise SimulatorError(error)
            if published:
                break
            if time.monotonic() > deadline:
                self._starting = False
                self._abort()
                raise SimulatorError(
                    f"MQTT broker at {self.host}:{self.port} did not accept the simulator's "
                    f"connections within {timeout:g} s"
                )
            time.sleep(0.005)
        with self._lock:
            self._starting = False
            self._initial.clear()
            self._load_t0 = time.monotonic()  # the load starts once every device is announced
            self._load_sent = 0

    def _pending_error(self) -> str | None:
        return self._connect_error

    def _halted(self) -> bool:
        return self._halt

    def _new_client(self, device: SimDevice) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"thermo-bridge-sim-{device.device_id}-{secrets.token_hex(3)}",
            protocol=mqtt.MQTTv5,
        )
        client.enable_logger(_LOGGER)
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        if self._tls_ca is not None:
            client.tls_set(ca_certs=self._tls_ca)
        availability = device_topic(self.base_topic, device.device_id, MessageKind.AVAILABILITY)
        client.will_set(availability, encode_availability(online=False), qos=1, retain=True)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._by_client[client] = device
        return client

    def _connect(self, device: SimDevice, connect_timeout: float) -> None:
        """Open the device's TCP connection and queue its CONNECT (the loop finishes the handshake)."""
        client = device.client
        if client is None:
            client = device.client = self._new_client(device)
            client.connect_timeout = connect_timeout  # paho refuses to change it later
        try:
            with self._lock:
                client.connect(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as err:
            raise SimulatorError(f"cannot connect to the MQTT broker at {self.host}:{self.port}: {err}") from None
        sock = client.socket()
        if isinstance(sock, socket.socket):
            # paho never sets it: without it small publishes wait on Nagle + delayed ACK.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def stop(self) -> None:
        """Publish retained ``offline`` for every device, disconnect cleanly; idempotent."""
        if not self._running:
            return
        with self._lock:
            self._running = False
            infos = []
            for device in self.devices.values():
                if device.client is not None and device.connected:
                    infos.append(self._publish_availability(device, online=False))
            self._flush()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and not all(info.is_published() for info in infos):
            time.sleep(0.005)
        with self._lock:
            for device in self.devices.values():
                device.reconnect_at = None
                if device.client is not None:
                    device.client.disconnect()
            self._flush()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(
            device.client is not None and device.client.socket() is not None for device in self.devices.values()
        ):
            self._wake()
            time.sleep(0.005)
        self._teardown()

    def kill(self) -> None:
        """Drop every connection without DISCONNECT, like a power cut: the broker publishes the last wills."""
        with self._lock:
            self._running = False
            for device in self.devices.values():
                device.reconnect_at = None
                sock = device.client.socket() if device.client is not None else None
                if isinstance(sock, socket.socket):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
        self._teardown()

    def _abort(self) -> None:
        self._running = False
        with self._lock:
            for device in self.devices.values():
                device.reconnect_at = None
        self._teardown()

    def _teardown(self) -> None:
        """Stop the loop thread and close every socket."""
        self._halt = True
        self._wake()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._lock:
            for device in self.devices.values():
                client = device.client
                device.connected = False
                if client is not None and client.socket() is not None:
                    # Closing paho's socket without DISCONNECT: the broker sees a lost connection.
                    client._sock_close()  # paho has no public "close without DISCONNECT"
            if self._selector is not None:
                self._selector.close()
                self._selector = None
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()
            self._wake_r = self._wake_w = None
            self._want_write.clear()
            self._write_registered.clear()

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ public actions

    def publish_state(self, device_id: str, **values: object) -> None:
        """Report now: ``values`` (merged into the device's state and model), or its full state when empty.

        Values are sent as given (not validated), so a test can also make a device report
        something a consumer must reject.
        """
        device = self._device(device_id)
        with self._lock:
            for key, value in values.items():
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
                if (numeric and key in device.model) or (key == "window_open" and isinstance(value, bool)):
                    device.model[key] = float(value)  # type: ignore[arg-type]
            device.state.update(values)
            self._report(device, values or None)
            self._flush()

    def emit_event(self, device_id: str, event_type: str, data: dict[str, Any] | None = None) -> None:
        """Publish a momentary event (the type must be one the device declares)."""
        device = self._device(device_id)
        if event_type not in device.config.events:
            raise SimulatorError(f"device {device_id!r} does not declare event {event_type!r}")
        with self._lock:
            self._publish_event(device, event_type, data or {})
            self._flush()

    def clear(self) -> None:
        """Clear the retained config and availability of every simulated device (empty retained payloads)."""
        topics = [
            device_topic(self.base_topic, device_id, kind)
            for device_id in self.devices
            for kind in (MessageKind.CONFIG, MessageKind.AVAILABILITY)
        ]
        if self._running:
            with self._lock:
                infos = []
                for topic in topics:
                    device_id = topic.split("/")[-2]
                    client = self.devices[device_id].client
                    assert client is not None  # noqa: S101 - running implies connected clients
                    infos.append(client.publish(topic, b"", qos=1, retain=True))
                self._flush()
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and not all(info.is_published() for info in infos):
                time.sleep(0.005)
            return
        self._oneshot_publish(topics)

    def _oneshot_publish(self, topics: list[str]) -> None:
        """Publish empty retained payloads through a short-lived connection (when not running)."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        if self._tls_ca is not None:
            client.tls_set(ca_certs=self._tls_ca)
        try:
            client.connect(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as err:
            raise SimulatorError(f"cannot connect to the MQTT broker at {self.host}:{self.port}: {err}") from None
        client.loop_start()
        try:
            infos = [client.publish(topic, b"", qos=1, retain=True) for topic in topics]
            for info in infos:
                info.wait_for_publish(timeout=5)
        finally:
            client.disconnect()
            client.loop_stop()

    def achieved_rate(self) -> float:
        """State messages per second since start."""
        if self.started_at is None:
            return 0.0
        elapsed = time.monotonic() - self.started_at
        return self.sent / elapsed if elapsed > 0 else 0.0

    def _device(self, device_id: str) -> SimDevice:
        """The running device ``device_id``, or SimulatorError (unknown id, simulator not running)."""
        device = self.devices.get(device_id)
        if device is None:
            raise SimulatorError(f"no simulated device {device_id!r}")
        if not self._running:
            raise SimulatorError("the simulator is not running: call start() first")
        return device

    # ------------------------------------------------------------------ publishing (under the lock)

    def _publish_availability(self, device: SimDevice, *, online: bool) -> mqtt.MQTTMessageInfo:
        assert device.client is not None  # noqa: S101
        topic = device_topic(self.base_topic, device.device_id, MessageKind.AVAILABILITY)
        return device.client.publish(topic, encode_availability(online=online), qos=1, retain=True)

    def _report(self, device: SimDevice, keys: Mapping[str, Any] | None) -> mqtt.MQTTMessageInfo | None:
        """Publish a state report of ``keys`` (all current values when None)."""
        client = device.client
        if client is None:
            return None
        device.seq += 1
        values = dict(device.state) if keys is None else {key: device.state[key] for key in keys}
        values["ts"] = round(time.time(), 3)
        values["seq"] = device.seq
        payload = json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode()
        topic = device_topic(self.base_topic, device.device_id, MessageKind.STATE)
        info = client.publish(topic, payload, qos=self.qos)
        self.sent += 1
        device.pending += self.qos
        return info

    def _publish_event(self, device: SimDevice, event_type: str, data: dict[str, Any]) -> None:
        if device.client is None:
            return
        payload = encode_event(DeviceEvent(event_type, data, round(time.time(), 3)))
        topic = device_topic(self.base_topic, device.device_id, MessageKind.EVENT)
        device.client.publish(topic, payload, qos=self.qos)
        device.pending += self.qos

    def _random_event(self, device: SimDevice) -> None:
        rnd = self._random
        event_type = rnd.choice(device.config.events)
        data: dict[str, Any] = {}
        if event_type == "button_press":
            data = {"button": rnd.randint(1, 2), "press": rnd.choice(("single", "double", "long"))}
        elif event_type == "fault":
            data = {"code": rnd.choice(("E01", "E12", "E31")), "message": "Simulated fault"}
        elif event_type == "window_open_detected":
            data = {"temperature_drop": round(rnd.uniform(0.5, 2.0), 1)}
        self._publish_event(device, event_type, data)

    def _load_template(self, device: SimDevice) -> Callable[[SimDevice, float], bytes]:
        """A pre-built formatter for load-mode reports: no json.dumps or dict per message."""
        if device.is_thermostat:
            fmt = b'{"temperature":%.1f,"humidity":%.0f,"hvac_action":"%s","ts":%.3f,"seq":%d}'

            def thermostat(dev: SimDevice, now: float) -> bytes:
                s = dev.state
                return fmt % (s["temperature"], s["humidity"], s["hvac_action"].encode(), now, dev.seq)

            return thermostat
        fmt = b'{"temperature":%.1f,"humidity":%.0f,"co2":%.0f,"ts":%.3f,"seq":%d}'

        def sensor(dev: SimDevice, now: float) -> bytes:
            s = dev.state
            return fmt % (s["temperature"], s["humidity"], s["co2"], now, dev.seq)

        return sensor

    def _load_batch(self, now_mono: float) -> None:
        """Publish the load-mode reports due by now, round-robin over the connected devices."""
        due = int((now_mono - self._load_t0) * self.rate) - self._load_sent
        if due <= 0:
            return
        if due > self.rate:  # more than a second behind (a stall): drop the backlog, keep the pace
            self._load_sent += due - int(self.rate * 0.1 + 1)
            due = int(self.rate * 0.1 + 1)
        order, count = self._order, len(self._order)
        now = time.time()
        qos = self.qos
        for _ in range(due):
            device = order[self._rr]
            self._rr = (self._rr + 1) % count
            self._load_sent += 1
            client = device.client
            if client is None or not device.connected or device.pending >= MAX_PENDING_PER_DEVICE:
                self.skipped += 1
                continue
            template = self._templates.get(device.device_id)
            if template is None:
                template = self._templates[device.device_id] = self._load_template(device)
            device.seq += 1
            client.publish(device.state_topic, template(device, now), qos)
            device.pending += qos
            self.sent += 1

    def _flush(self) -> None:
        """Write out what the last pass queued; keep write interest only for sockets that are full."""
        selector = self._selector
        for client in list(self._want_write):
            client.loop_write()
            sock = client.socket()
            if sock is None or selector is None:
                continue
            if client.want_write():
                if client not in self._write_registered:
                    self._write_registered.add(client)
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
            elif client in self._write_registered:
                self._write_registered.discard(client)
                with contextlib.suppress(KeyError, ValueError, OSError):
                    selector.modify(sock, selectors.EVENT_READ, client)

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    # ------------------------------------------------------------------ paho callbacks (loop thread, under the lock)

    def _on_socket_open(self, client: mqtt.Client, userdata: object, sock: mqtt.SocketLike) -> None:
        if self._selector is not None:
            self._selector.register(sock, selectors.EVENT_READ, client)

    def _on_socket_close(self, client: mqtt.Client, userdata: object, sock: mqtt.SocketLike) -> None:
        self._want_write.discard(client)
        self._write_registered.discard(client)
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sock)

    def _on_register_write(self, client: mqtt.Client, userdata: object, sock: mqtt.SocketLike) -> None:
        self._want_write.add(client)

    def _on_unregister_write(self, client: mqtt.Client, userdata: object, sock: mqtt.SocketLike) -> None:
        self._want_write.discard(client)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        device = self._by_client[client]
        if reason_code.is_failure:
            message = f"the MQTT broker at {self.host}:{self.port} refused the connection: {reason_code}"
            if self._starting:
                self._connect_error = message
            else:  # on_disconnect schedules the next attempt
                _LOGGER.warning("%s: %s", device.device_id, message)
            return
        receive_maximum = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        # As many QoS 1 publishes in flight as the broker allows: paho's default is 20 and it
        # ignores the broker's Receive Maximum (mosquitto refuses publishes beyond it), and its
        # setter refuses to run on a connected client, which is the first moment we know the value.
        client._max_inflight_messages = int(receive_maximum) if receive_maximum else 65535
        device.connected = True
        device.pending = 0
        device.reconnect_delay = 0.25
        device.state_topic = device_topic(self.base_topic, device.device_id, MessageKind.STATE)
        client.subscribe(device_topic(self.base_topic, device.device_id, MessageKind.SET), qos=1)
        config = device.config
        topic = device_topic(self.base_topic, device.device_id, MessageKind.CONFIG)
        infos = [
            client.publish(topic, encode_config(config), qos=1, retain=True),
            self._publish_availability(device, online=True),
        ]
        if (info := self._report(device, None)) is not None:
            infos.append(info)
        if self._starting:
            self._initial.extend(infos)
        device.next_report = time.monotonic() + REPORT_INTERVAL * self._random.uniform(0.2, 1.0)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        device = self._by_client[client]
        was_connected, device.connected = device.connected, False
        device.pending = 0
        if self._starting and not was_connected and self._connect_error is None:
            # Closed before any CONNACK: retrying cannot help (a TLS port, or not an MQTT broker).
            self._connect_error = (
                f"the MQTT broker at {self.host}:{self.port} closed the connection before accepting it "
                f"({reason_code}); is it a TLS port (use tls_ca / --tls-ca) or not an MQTT listener?"
            )
            return
        if self._running and self._connect_error is None:
            _LOGGER.warning("%s lost its connection (%s); reconnecting", device.device_id, reason_code)
            device.reconnect_at = time.monotonic() + device.reconnect_delay
            device.reconnect_delay = min(MAX_RECONNECT_DELAY, device.reconnect_delay * 2)

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        self.acked += 1
        device = self._by_client[client]
        if device.pending > 0:
            device.pending -= 1

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        device = self._by_client[client]
        self._handle_command(device, message.payload)

    def _handle_command(self, device: SimDevice, payload: bytes) -> None:
        """Apply a ``set``: state report then ``ok`` ack; or an ``error`` ack with the reason."""
        assert device.client is not None  # noqa: S101
        ack_topic = device_topic(self.base_topic, device.device_id, MessageKind.ACK)
        try:
            command = parse_command(payload, device.config)
        except ProtocolError as err:
            command_id = self._command_id(payload)
            if command_id is None:
                _LOGGER.warning("%s: ignoring a command without a usable id: %s", device.device_id, err)
                return
            reason = f"{err.reason}: {err}"[:200]
            ack = Ack(command_id, AckStatus.ERROR, reason, round(time.time(), 3))
            device.client.publish(ack_topic, encode_ack(ack), qos=1)
            return
        limit = self.refuse_above
        setpoints = [v for k, v in command.values.items() if k.startswith("target_temperature")]
        if limit is not None and any(isinstance(v, float | int) and v > limit for v in setpoints):
            reason = f"setpoint_limited: the installer limited setpoints to {limit:g} °C"
            ack = Ack(command.command_id, AckStatus.ERROR, reason, round(time.time(), 3))
            device.client.publish(ack_topic, encode_ack(ack), qos=1)
            return
        self.commands.append((device.device_id, command))
        changed = self._apply(device, command.values)
        self._control(device)
        self._refresh_readings(device)
        self._report(device, dict.fromkeys((*changed, "hvac_action")))
        device.client.publish(ack_topic, encode_ack(Ack(command.command_id, AckStatus.OK, ts=round(time.time(), 3))), 1)

    @staticmethod
    def _command_id(payload: bytes) -> str | None:
        """The id of a refused command, so the error can be acked; lenient (NaN, duplicates) on purpose."""
        try:
            data = decode_object(payload)
        except ProtocolError:
            if len(payload) > MAX_PAYLOAD_BYTES:
                return None
            try:
                data = json.loads(payload)
            except (ValueError, RecursionError):
                return None
        command_id = data.get("id") if isinstance(data, dict) else None
        return command_id if isinstance(command_id, str) and COMMAND_ID_RE.fullmatch(command_id) else None

    @staticmethod
    def _apply(device: SimDevice, values: Mapping[str, float | str]) -> list[str]:
        """Apply validated command values; a preset also moves the setpoint, like real thermostats."""
        state = device.state
        changed = list(values)
        preset = values.get("preset")
        if isinstance(preset, str) and "target_temperature" not in values and preset in PRESET_TEMPERATURES:
            state["target_temperature"] = PRESET_TEMPERATURES[preset]
            changed.append("target_temperature")
        state.update(values)
        return changed

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None  # noqa: S101
        while not self._halt:
            now = time.monotonic()
            timeout = max(0.0, self._next_tick - now)
            if self.rate > 0 and self._running:
                timeout = min(timeout, 0.005)
            try:
                events = selector.select(min(timeout, 0.25))
            except (OSError, ValueError):
                if self._halted():
                    return
                raise
            with self._lock:
                if self._halted():
                    return
                for key, mask in events:
                    client = key.data
                    if client is None:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)  # type: ignore[union-attr]
                        continue
                    try:
                        self._service(client, mask)
                    except Exception:
                        # One device's failure must not stop the others; paho closes its socket.
                        _LOGGER.exception("simulated device %s failed", self._by_client[client].device_id)
                try:
                    now = time.monotonic()
                    if self._running and not self._starting:
                        if now >= self._next_tick:
                            self._tick(now)
                        if self.rate > 0:
                            self._load_batch(now)
                    self._flush()
                except Exception:
                    _LOGGER.exception("simulator loop failed; continuing")

    @staticmethod
    def _service(client: mqtt.Client, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            client.loop_read()
            sock = client.socket()
            while sock is not None and getattr(sock, "pending", lambda: 0)():  # TLS keeps decrypted bytes
                client.loop_read()
                sock = client.socket()
        if mask & selectors.EVENT_WRITE and client.socket() is not None:
            client.loop_write()

    def _tick(self, now: float) -> None:
        """Once a second: advance the models, natural reports and events, keepalives, reconnects."""
        dt = TICK + max(0.0, now - self._next_tick)
        self._next_tick = now + TICK
        natural = self.rate <= 0
        for device in self._order:
            try:
                self._tick_device(device, now, dt, natural=natural)
            except Exception:
                # One device's failure must not stop the others (nor its own next tick).
                _LOGGER.exception("simulated device %s failed", device.device_id)

    def _tick_device(self, device: SimDevice, now: float, dt: float, *, natural: bool) -> None:
        client = device.client
        if client is None:
            return
        if device.reconnect_at is not None and now >= device.reconnect_at:
            self._try_reconnect(device)
            return
        if not device.connected or client.loop_misc() is not MQTTErrorCode.MQTT_ERR_SUCCESS:
            return
        self._step(device, dt)
        self._refresh_readings(device)
        if natural and now >= device.next_report:
            device.next_report = now + REPORT_INTERVAL * self._random.uniform(0.8, 1.2)
            self._report(device, dict.fromkeys(self._natural_keys(device)))
        if natural and self._random.random() < EVENT_PROBABILITY * dt:
            self._random_event(device)

    @staticmethod
    def _natural_keys(device: SimDevice) -> list[str]:
        keys = [m.key for m in device.config.measurements]
        if device.is_thermostat:
            keys.append("hvac_action")
        return keys

    def _try_reconnect(self, device: SimDevice) -> None:
        device.reconnect_at = None
        try:
            self._connect(device, 2.0)
        except SimulatorError as err:
            _LOGGER.debug("%s: %s", device.device_id, err)
            device.reconnect_at = time.monotonic() + device.reconnect_delay
            device.reconnect_delay = min(MAX_RECONNECT_DELAY, device.reconnect_delay * 2)


# ---------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thermo-bridge-sim",
        description="Simulated thermostats and sensors speaking the thermo_bridge MQTT protocol.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="MQTT broker host (default %(default)s)")
    parser.add_argument("--port", type=int, default=1883, help="MQTT broker port (default %(default)s)")
    parser.add_argument("--base-topic", default=DEFAULT_BASE_TOPIC, help="base topic (default %(default)s)")
    parser.add_argument("--thermostats", type=int, default=1, metavar="N", help="thermostats (default %(default)s)")
    parser.add_argument("--sensors", type=int, default=0, metavar="M", help="sensors (default %(default)s)")
    parser.add_argument(
        "--rate", type=float, default=0.0, metavar="R", help="total state messages/s for load (0: natural cadence)"
    )
    parser.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: run)")
    parser.add_argument("--username", default=None, help="MQTT user name")
    parser.add_argument(
        "--password",
        default=os.environ.get("THERMO_BRIDGE_SIM_PASSWORD"),
        help="MQTT password (default: $THERMO_BRIDGE_SIM_PASSWORD, which keeps it out of the process list)",
    )
    parser.add_argument("--tls-ca", default=None, help="CA file: connect with TLS")
    parser.add_argument("--id-prefix", default="sim", help="device ids are <prefix>_thermostat_<i> and so on")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1, help="QoS of state and event messages")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for reproducible runs")
    parser.add_argument("--clear", action="store_true", help="clear the devices' retained topics on exit")
    parser.add_argument(
        "--refuse-above", type=float, default=None, metavar="T", help="thermostats refuse setpoints above T (°C)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until the duration elapses or SIGINT/SIGTERM; exit 1 with a message on error."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sim = Simulator(
            args.host,
            args.port,
            base_topic=args.base_topic,
            thermostats=args.thermostats,
            sensors=args.sensors,
            rate=args.rate,
            id_prefix=args.id_prefix,
            username=args.username,
            password=args.password,
            tls_ca=args.tls_ca,
            seed=args.seed,
            qos=args.qos,
            refuse_above=args.refuse_above,
        )
        sim.start()
    except (SimulatorError, ValueError, ProtocolError) as err:
        print(f"thermo-bridge-sim: error: {err}", file=sys.stderr)
        return 1
    # Everything allocated so far lives for the whole run: keep it out of the collector, whose
    # full collections would otherwise stall the publisher (and skew latency benchmarks).
    gc.freeze()
    stop = threading.Event()

    def _signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    print(
        f"thermo-bridge-sim: {len(sim.devices)} devices on {args.host}:{args.port} under "
        f"{sim.base_topic}/ ({'natural cadence' if args.rate <= 0 else f'{args.rate:g} msg/s'})",
        flush=True,
    )
    started = time.monotonic()
    last_sent, last_t = 0, started
    while not stop.wait(min(10.0, args.duration - (time.monotonic() - started)) if args.duration > 0 else 10.0):
        now = time.monotonic()
        if args.duration > 0 and now - started >= args.duration:
            break
        print(
            f"thermo-bridge-sim: {sim.sent} states sent, {(sim.sent - last_sent) / (now - last_t):.0f} msg/s, "
            f"{sim.skipped} skipped (broker not keeping up)",
            flush=True,
        )
        last_sent, last_t = sim.sent, now
    elapsed = time.monotonic() - started
    sim.stop()
    if args.clear:
        with contextlib.suppress(SimulatorError):
            sim.clear()
    print(
        f"thermo-bridge-sim: {sim.sent} state messages in {elapsed:.1f} s "
        f"({sim.sent / elapsed if elapsed else 0:.0f} msg/s"
        + (f", target {args.rate:g}" if args.rate > 0 else "")
        + f"), {sim.acked} acknowledged by the broker",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
