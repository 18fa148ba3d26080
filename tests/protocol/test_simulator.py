"""The simulator through a real private mosquitto, read back with paho + the protocol's DeviceRouter."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import Mosquitto, find_mosquitto, free_port
from tests.pki import make_pki
from tests.simulators import StartSim, simulators
from tests.waiting import wait_for, wait_until
from thermo_bridge_protocol import (
    Ack,
    AckStatus,
    Command,
    DeviceConfig,
    DeviceEvent,
    DeviceRouter,
    HvacAction,
    HvacMode,
    MessageKind,
    ProtocolError,
    ProtocolHandler,
    StateUpdate,
    encode_command,
    parse_state,
)
from thermo_bridge_sim.simulator import Simulator, SimulatorError, main

WAIT = 10.0


class Collector(ProtocolHandler):
    """Thread-safe record of what the router dispatched (paho calls it from its own thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.configs: dict[str, DeviceConfig] = {}
        self.removed: list[str] = []
        self.states: list[tuple[str, StateUpdate]] = []
        self.availability: list[tuple[str, bool]] = []
        self.acks: list[tuple[str, Ack]] = []
        self.events: list[tuple[str, DeviceEvent]] = []
        self.rejected: list[tuple[str | None, str, bytes]] = []
        self.timeline: list[StateUpdate | Ack] = []

    def on_config(self, device_id: str, config: DeviceConfig, previous: DeviceConfig | None) -> None:
        with self.lock:
            self.configs[device_id] = config

    def on_removed(self, device_id: str, previous: DeviceConfig) -> None:
        with self.lock:
            self.removed.append(device_id)

    def on_state(self, device_id: str, update: StateUpdate) -> None:
        with self.lock:
            self.states.append((device_id, update))
            self.timeline.append(update)

    def on_availability(self, device_id: str, online: bool) -> None:
        with self.lock:
            self.availability.append((device_id, online))

    def on_ack(self, device_id: str, ack: Ack) -> None:
        with self.lock:
            self.acks.append((device_id, ack))
            self.timeline.append(ack)

    def on_event(self, device_id: str, event: DeviceEvent) -> None:
        with self.lock:
            self.events.append((device_id, event))

    def on_rejected(
        self, device_id: str | None, kind: MessageKind | None, error: ProtocolError, topic: str, payload: bytes
    ) -> None:
        with self.lock:
            self.rejected.append((device_id, str(error), payload))

    def states_of(self, device_id: str) -> list[StateUpdate]:
        with self.lock:
            return [update for dev, update in self.states if dev == device_id]

    def ack_for(self, command_id: str) -> Ack | None:
        with self.lock:
            return next((ack for _, ack in self.acks if ack.command_id == command_id), None)


class PahoTransport:
    """The injected transport of DeviceRouter, over a real paho client (what the server does)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._subacks: dict[int, threading.Event] = {}
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, codes: Any, props: Any) -> None:
        self._subacks.setdefault(mid, threading.Event()).set()

    async def subscribe(self, topic: str, qos: int, callback: Callable[[str, bytes], None]) -> Callable[[], None]:
        self.client.message_callback_add(topic, lambda c, u, msg: callback(msg.topic, msg.payload))
        _, mid = self.client.subscribe(topic, qos)
        assert mid is not None
        event = self._subacks.setdefault(mid, threading.Event())
        await asyncio.to_thread(event.wait, WAIT)

        def unsubscribe() -> None:
            self.client.unsubscribe(topic)

        return unsubscribe

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        info = self.client.publish(topic, payload, qos, retain)
        await asyncio.to_thread(info.wait_for_publish, WAIT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
async def reader(mosquitto: Mosquitto) -> AsyncIterator[tuple[DeviceRouter, Collector, PahoTransport]]:
    """A router subscribed to the private broker before any simulator starts."""
    collector = Collector()
    transport = PahoTransport(mosquitto)
    router = DeviceRouter("thermo_bridge", transport.subscribe, transport.publish, collector)
    await router.async_start()
    yield router, collector, transport
    router.stop()
    transport.close()


@pytest.fixture
async def start_sim(mosquitto: Mosquitto) -> AsyncIterator[StartSim]:
    async with simulators(mosquitto) as start:
        yield start


async def test_simulated_devices_announce_and_report_through_the_broker(
    reader: tuple[DeviceRouter, Collector, PahoTransport], start_sim: StartSim
) -> None:
    router, seen, _ = reader
    sim = await start_sim(thermostats=2, sensors=2, seed=3)
    ids = {"sim_thermostat_1", "sim_thermostat_2", "sim_sensor_1", "sim_sensor_2"}
    assert set(sim.devices) == ids
    await wait_for(lambda: len(seen.states) >= 4 and len(seen.availability) >= 4, what="announcements")

    assert seen.rejected == []
    assert set(seen.configs) == ids
    for device_id, device in sim.devices.items():
        assert seen.configs[device_id] == device.config
        assert router.devices[device_id] == device.config
        assert (device_id, True) in seen.availability
        (first,) = seen.states_of(device_id)
        assert first.seq == 1
        assert first.ts is not None
        assert abs(first.ts - time.time()) < 60
        assert first.values == {k: v for k, v in device.state.items() if k in first.values}
        # The first report is the full state: every measurement the config declares.
        assert {m.key for m in device.config.measurements} <= set(first.values)
    thermostat = sim.devices["sim_thermostat_1"].config.thermostat
    assert thermostat is not None
    assert list(thermostat.hvac_modes) == ["off", "heat", "cool", "heat_cool", "auto"]
    assert thermostat.presets == ("eco", "comfort", "away", "boost")
    assert thermostat.humidity is not None
    assert seen.configs["sim_sensor_1"].measurement("co2") is not None

    sim.publish_state("sim_sensor_1", temperature=30.5, co2=1200)
    await wait_for(lambda: len(seen.states_of("sim_sensor_1")) >= 2, what="forced report")
    forced = seen.states_of("sim_sensor_1")[1]
    assert forced.values == {"temperature": 30.5, "co2": 1200.0}
    assert forced.seq == 2
    assert sim.devices["sim_sensor_1"].state["temperature"] == 30.5

    sim.emit_event("sim_thermostat_2", "button_press", {"button": 1})
    await wait_for(lambda: seen.events, what="event")
    assert seen.events == [("sim_thermostat_2", DeviceEvent("button_press", {"button": 1.0}, seen.events[0][1].ts))]
    with pytest.raises(SimulatorError, match="does not declare event 'fault'"):
        sim.emit_event("sim_sensor_1", "fault")
    with pytest.raises(SimulatorError, match="no simulated device"):
        sim.publish_state("nope")

    sent = sim.sent
    await asyncio.to_thread(sim.stop)
    await wait_for(lambda: sum(1 for _, online in seen.availability if not online) >= 4, what="offline on stop")
    assert {dev for dev, online in seen.availability if not online} == ids
    assert sim.sent == sent
    sim.stop()  # idempotent
    assert seen.rejected == []


async def test_commands_are_applied_then_acked(
    reader: tuple[DeviceRouter, Collector, PahoTransport], start_sim: StartSim
) -> None:
    router, seen, transport = reader
    sim = await start_sim(thermostats=1, sensors=1, seed=4)
    await wait_for(lambda: len(seen.states) >= 2, what="initial states")

    command = router.build_command("sim_thermostat_1", {"hvac_mode": "cool", "target_temperature": 23.5})
    await router.async_send_command("sim_thermostat_1", command)
    await wait_for(lambda: seen.ack_for(command.command_id), what="ack")
    assert seen.ack_for(command.command_id) == Ack(
        command.command_id,
        AckStatus.OK,
        None,
        seen.ack_for(command.command_id).ts,  # type: ignore[union-attr]
    )
    # The device reports the new state before it acks.
    report = seen.states_of("sim_thermostat_1")[-1]
    assert report.values["hvac_mode"] == "cool"
    assert report.values["target_temperature"] == 23.5
    assert report.values["hvac_action"] in {HvacAction.COOLING, HvacAction.IDLE}
    with seen.lock:
        ack_at = next(i for i, m in enumerate(seen.timeline) if isinstance(m, Ack))
        report_at = next(
            i
            for i, m in enumerate(seen.timeline)
            if isinstance(m, StateUpdate) and m.values.get("target_temperature") == 23.5
        )
    assert report_at < ack_at
    assert sim.commands == [("sim_thermostat_1", command)]
    assert sim.devices["sim_thermostat_1"].state["target_temperature"] == 23.5

    preset = router.build_command("sim_thermostat_1", {"preset": "eco", "hvac_mode": "heat"})
    await router.async_send_command("sim_thermostat_1", preset)
    await wait_for(lambda: seen.ack_for(preset.command_id), what="preset ack")
    assert seen.states_of("sim_thermostat_1")[-1].values["target_temperature"] == 18.0

    # Commands a consumer's validation would refuse, sent raw: the device answers with an error ack.
    bad = Command("bad-1", {"target_temperature": 99.0})
    await transport.publish("thermo_bridge/sim_thermostat_1/set", encode_command(bad), 1, False)
    to_sensor = Command("bad-2", {"hvac_mode": "heat"})
    await transport.publish("thermo_bridge/sim_sensor_1/set", encode_command(to_sensor), 1, False)
    await transport.publish("thermo_bridge/sim_thermostat_1/set", b'{"id":"bad-3","target_temperature":NaN}', 1, False)
    await wait_for(lambda: all(seen.ack_for(f"bad-{i}") for i in (1, 2, 3)), what="error acks")
    errors = {i: seen.ack_for(f"bad-{i}") for i in (1, 2, 3)}
    assert all(ack is not None and ack.status is AckStatus.ERROR for ack in errors.values())
    assert errors[1].reason.startswith("out_of_range: target_temperature")  # type: ignore[union-attr]
    assert errors[2].reason.startswith("not_supported:")  # type: ignore[union-attr]
    assert errors[3].reason.startswith("not_finite:")  # type: ignore[union-attr]
    # Without a usable id there is nothing to correlate: no ack, no crash, the device keeps working.
    await transport.publish("thermo_bridge/sim_thermostat_1/set", b"garbage", 1, False)
    again = router.build_command("sim_thermostat_1", {"fan_mode": "high"})
    await router.async_send_command("sim_thermostat_1", again)
    await wait_for(lambda: seen.ack_for(again.command_id), what="ack after garbage")
    assert [cmd for _, cmd in sim.commands] == [command, preset, again]
    assert len(seen.acks) == 6
    assert seen.rejected == []


async def test_last_will_marks_devices_offline_when_the_connection_dies(
    mosquitto: Mosquitto, reader: tuple[DeviceRouter, Collector, PahoTransport], start_sim: StartSim
) -> None:
    _, seen, _ = reader
    sim = await start_sim(thermostats=1, sensors=2, seed=5)
    await wait_for(lambda: len(seen.availability) >= 3, what="online")
    assert all(online for _, online in seen.availability)

    sim.kill()  # sockets closed without DISCONNECT: only the broker's will can say offline
    await wait_for(lambda: len(seen.availability) >= 6, what="last wills")
    assert sorted(dev for dev, online in seen.availability if not online) == sorted(sim.devices)

    # The will is retained: a consumer starting now learns the devices are offline.
    late = Collector()
    transport = PahoTransport(mosquitto)
    try:
        router = DeviceRouter("thermo_bridge", transport.subscribe, transport.publish, late)
        await router.async_start()
        await wait_for(lambda: len(late.availability) >= 3 and len(late.configs) >= 3, what="retained topics")
        assert all(not online for _, online in late.availability)
    finally:
        transport.close()
    sim.stop()  # after kill: nothing to do, no error


async def test_clear_removes_the_retained_announcements(
    mosquitto: Mosquitto, reader: tuple[DeviceRouter, Collector, PahoTransport], start_sim: StartSim
) -> None:
    router, seen, _ = reader
    sim = await start_sim(thermostats=1, sensors=1, seed=6)
    await wait_for(lambda: len(seen.configs) == 2, what="configs")
    await asyncio.to_thread(sim.clear)
    await wait_for(lambda: len(seen.removed) == 2, what="removal")
    assert router.devices == {}
    await asyncio.to_thread(sim.stop)
    await asyncio.to_thread(sim.clear)  # also works when stopped (its own short connection)

    late = Collector()
    transport = PahoTransport(mosquitto)
    try:
        await DeviceRouter("thermo_bridge", transport.subscribe, transport.publish, late).async_start()
        await asyncio.sleep(0.3)
        assert late.configs == {}
        assert late.availability == []
    finally:
        transport.close()
    assert seen.rejected == []


async def test_load_mode_reports_are_valid_ordered_and_all_delivered(
    reader: tuple[DeviceRouter, Collector, PahoTransport], start_sim: StartSim
) -> None:
    _, seen, _ = reader
    sim = await start_sim(thermostats=3, sensors=3, rate=400.0, seed=7)
    await wait_for(lambda: sim.sent >= 200, what="load")
    await asyncio.to_thread(sim.stop)
    await wait_for(lambda: len(seen.states) >= sim.sent, what="every state delivered (QoS 1)")
    assert len(seen.states) == sim.sent
    assert seen.rejected == []
    for device_id in sim.devices:
        seqs = [update.seq for update in seen.states_of(device_id)]
        assert seqs == list(range(1, len(seqs) + 1)), device_id
    assert sim.acked >= sim.sent
    assert sim.achieved_rate() > 0


async def test_custom_base_topic_and_prefix(mosquitto: Mosquitto, start_sim: StartSim) -> None:
    seen = Collector()
    transport = PahoTransport(mosquitto)
    try:
        await DeviceRouter("site/a", transport.subscribe, transport.publish, seen).async_start()
        await start_sim(base_topic="/site/a/", thermostats=0, sensors=1, id_prefix="x", qos=0)
        await wait_for(lambda: seen.states, what="state under the custom base")
        assert list(seen.configs) == ["x_sensor_1"]
    finally:
        transport.close()


async def test_devices_reconnect_and_reannounce_after_a_broker_restart(
    mosquitto: Mosquitto, reader: tuple[DeviceRouter, Collector, PahoTransport], start_sim: StartSim
) -> None:
    router, seen, transport = reader
    sim = await start_sim(thermostats=1, sensors=1, seed=8)
    await wait_for(lambda: len(seen.states) >= 2, what="initial states")
    transport.close()  # the reader's own paho client does not reconnect by itself in this test

    await asyncio.to_thread(mosquitto.restart, 0.5)
    fresh = Collector()
    transport2 = PahoTransport(mosquitto)
    try:
        await DeviceRouter("thermo_bridge", transport2.subscribe, transport2.publish, fresh).async_start()
        # Each device reconnects on its own and announces itself again: config, online, full state.
        await wait_for(lambda: len(fresh.states) >= 2, timeout=20, what="states after the restart")
        await wait_for(
            lambda: sum(1 for _, online in fresh.availability if online) >= 2, what="online after the restart"
        )
        assert set(fresh.configs) == set(sim.devices)
        command = router.build_command("sim_thermostat_1", {"hvac_mode": "off"})
        await transport2.publish("thermo_bridge/sim_thermostat_1/set", encode_command(command), 1, False)
        await wait_for(lambda: fresh.ack_for(command.command_id), what="ack after the restart")
        assert fresh.rejected == []
    finally:
        transport2.close()


async def test_natural_cadence_reports_and_events(
    reader: tuple[DeviceRouter, Collector, PahoTransport],
    start_sim: StartSim,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a rate, devices report every few seconds and emit occasional events (sped up here)."""
    monkeypatch.setattr("thermo_bridge_sim.simulator.TICK", 0.05)
    monkeypatch.setattr("thermo_bridge_sim.simulator.REPORT_INTERVAL", 0.1)
    monkeypatch.setattr("thermo_bridge_sim.simulator.EVENT_PROBABILITY", 2.0)
    _, seen, _ = reader
    sim = await start_sim(thermostats=1, sensors=1, seed=9)
    await wait_for(lambda: all(len(seen.states_of(d)) >= 4 for d in sim.devices), what="periodic reports")
    await wait_for(lambda: {d for d, _ in seen.events} == set(sim.devices), what="spontaneous events")
    assert seen.rejected == []
    for device_id, device in sim.devices.items():
        reports = seen.states_of(device_id)
        assert all(update.seq is not None and update.ts is not None for update in reports)
        seqs = [update.seq or 0 for update in reports]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        # Periodic reports carry every measurement (and the thermostat's hvac_action).
        assert {m.key for m in device.config.measurements} <= set(reports[2].values)
        with seen.lock:
            types = {event.event_type for dev, event in seen.events if dev == device_id}
        assert types <= set(device.config.events)


def test_heating_model_reacts_to_mode_and_setpoint() -> None:
    """The first-order model, stepped without a broker: heat rises to the setpoint, cool falls, off drifts."""
    sim = Simulator(thermostats=1, seed=1)
    device = sim.devices["sim_thermostat_1"]
    device.model["temperature"] = 17.0
    device.state.update(hvac_mode="heat", target_temperature=22.0)
    sim._step(device, 1.0)
    sim._refresh_readings(device)
    assert device.state["hvac_action"] == HvacAction.HEATING
    for _ in range(900):
        sim._step(device, 1.0)
    assert 21.5 <= device.model["temperature"] <= 22.5
    sim._refresh_readings(device)
    assert device.state["hvac_action"] in {HvacAction.HEATING, HvacAction.IDLE}

    device.state.update(hvac_mode="cool", target_temperature=19.0)
    sim._step(device, 1.0)
    sim._refresh_readings(device)
    assert device.state["hvac_action"] == HvacAction.COOLING
    for _ in range(300):
        sim._step(device, 1.0)
    sim._refresh_readings(device)
    assert device.model["temperature"] < 19.0  # cooled to the setpoint (and the 8 °C outdoors helps)
    assert device.state["hvac_action"] == HvacAction.IDLE

    device.state.update(hvac_mode="heat_cool", target_temperature_low=20.0, target_temperature_high=24.0)
    for _ in range(900):
        sim._step(device, 1.0)
    assert 19.5 <= device.model["temperature"] <= 20.5

    device.state.update(hvac_mode="off")
    before = device.model["temperature"]
    for _ in range(600):
        sim._step(device, 1.0)
    sim._refresh_readings(device)
    assert device.state["hvac_action"] == HvacAction.OFF
    assert device.model["temperature"] < before  # loses heat towards the 8 °C outdoors
    battery = device.model["battery"]
    assert 0 < battery < 100


def test_sensor_model_stays_within_the_protocols_bounds() -> None:
    sim = Simulator(thermostats=1, sensors=1, seed=2)
    for device in sim.devices.values():
        for _ in range(3000):
            sim._step(device, 1.0)
        sim._refresh_readings(device)
        values = {k: v for k, v in device.state.items() if k != "hvac_mode" or v in HvacMode}
        parse_state(json.dumps(values).encode(), device.config)


def test_actions_need_a_running_simulator() -> None:
    sim = Simulator(thermostats=1)
    with pytest.raises(SimulatorError, match="not running"):
        sim.publish_state("sim_thermostat_1", temperature=20.0)
    with pytest.raises(SimulatorError, match="not running"):
        sim.emit_event("sim_thermostat_1", "fault")
    sim.stop()  # stopping a simulator that never started is a no-op


def test_constructor_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="at least one device"):
        Simulator(thermostats=0, sensors=0)
    with pytest.raises(ValueError, match="rate"):
        Simulator(rate=-1)
    with pytest.raises(ValueError, match="qos"):
        Simulator(qos=2)
    with pytest.raises(ProtocolError):
        Simulator(base_topic="a/#")


# ---------------------------------------------------------------------- errors and the CLI


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connections are refused and nobody else can take it meanwhile."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


def test_closed_port_is_a_clear_simulator_error(closed_port: int) -> None:
    port = closed_port
    with pytest.raises(SimulatorError, match=rf"cannot connect to the MQTT broker at 127\.0\.0\.1:{port}"):
        Simulator("127.0.0.1", port).start(timeout=3)


def test_unknown_host_is_a_clear_simulator_error() -> None:
    with pytest.raises(SimulatorError, match=r"cannot connect to the MQTT broker at no-such-host\.invalid:1883"):
        Simulator("no-such-host.invalid", 1883).start(timeout=3)


def test_cli_exits_non_zero_on_a_closed_port(closed_port: int) -> None:
    port = closed_port
    result = subprocess.run(
        [sys.executable, "-m", "thermo_bridge_sim", "--port", str(port), "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert f"thermo-bridge-sim: error: cannot connect to the MQTT broker at 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "secured", websockets=False, users={"device": "s3cret"})
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.parametrize("credentials", [[], ["--username", "device", "--password", "wrong"]])
def test_cli_exits_non_zero_when_the_broker_refuses_credentials(
    secured_broker: Mosquitto, credentials: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--port", str(secured_broker.port), "--duration", "1", *credentials])
    assert code == 1
    err = capsys.readouterr().err
    assert f"the MQTT broker at 127.0.0.1:{secured_broker.port} refused the connection" in err
    assert "Not authorized" in err or "Bad user name or password" in err


def test_cli_runs_with_the_right_credentials(
    secured_broker: Mosquitto, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THERMO_BRIDGE_SIM_PASSWORD", "s3cret")  # the password from the environment
    code = main(
        [
            *("--port", str(secured_broker.port), "--username", "device"),
            *("--duration", "0.5", "--thermostats", "1", "--sensors", "1", "--seed", "1", "--clear"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "2 devices" in out
    assert "state messages in" in out


def test_simulator_over_tls(tmp_path: Path) -> None:
    """--tls-ca: the devices connect over TLS (and the selector loop drains TLS-buffered bytes)."""
    pki = make_pki(tmp_path / "tls")
    ca, cert, key = pki.ca, pki.server_cert, pki.server_key
    tls_port = free_port()
    extra = f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    broker = Mosquitto(tmp_path / "tls-broker", websockets=False, extra_config=extra)
    broker.start()
    try:
        got: list[tuple[str, bytes]] = []
        reader = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        reader.on_message = lambda c, u, msg: got.append((msg.topic, msg.payload))
        reader.connect(broker.host, broker.port)  # the plain listener sees the same topics
        reader.subscribe("thermo_bridge/#", 1)
        reader.loop_start()
        time.sleep(0.2)
        sim = Simulator(broker.host, tls_port, thermostats=1, tls_ca=str(ca), seed=10)
        sim.start()
        try:
            sim.publish_state("sim_thermostat_1", temperature=25.0)
            wait_until(
                lambda: ("thermo_bridge/sim_thermostat_1/availability", b"online") in got, what="online over TLS"
            )
            wait_until(lambda: sum(1 for t, _ in got if t.endswith("/state")) >= 2, what="states over TLS")
        finally:
            sim.stop()
        reader.loop_stop()
        reader.disconnect()
        with pytest.raises(SimulatorError, match="closed the connection before accepting it"):  # plain on TLS
            Simulator(broker.host, tls_port, thermostats=1).start(timeout=3)
    finally:
        broker.stop()


def test_missing_mosquitto_binary_fails_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("tests.broker.CANDIDATES", ("mosquitto", str(tmp_path / "nowhere" / "mosquitto")))
    with pytest.raises(RuntimeError, match="mosquitto binary not found: run scripts/setup") as info:
        find_mosquitto()
    assert str(tmp_path) in str(info.value)  # says where it looked
    with pytest.raises(RuntimeError, match="mosquitto binary not found"):
        Mosquitto(tmp_path / "broker")
