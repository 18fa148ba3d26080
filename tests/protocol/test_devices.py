"""The device-config factories (devtools/thermo_bridge_sim/devices.py) write the protocol's wire form."""

from __future__ import annotations

import subprocess
import sys

import pytest

from thermo_bridge_protocol import MEASUREMENT_TYPES, DeviceKind, HvacMode, Setpoint, encode_config, parse_config
from thermo_bridge_protocol.codec import _CONFIG_KEYS, _THERMOSTAT_KEYS
from thermo_bridge_sim import devices


@pytest.mark.parametrize(
    "config",
    [
        devices.simulated_thermostat("sim_thermostat_3", 3),
        devices.simulated_sensor("sim_sensor_2", 2),
    ],
    ids=lambda config: config["id"],
)
def test_factories_write_what_the_protocols_encoder_writes(config: devices.WireConfig) -> None:
    """Byte for byte where the numbers are written alike (the encoder writes limits as floats, the bench ints)."""
    payload = devices.encode(config)
    assert encode_config(parse_config(payload, config["id"])) == payload


def test_thermostat_fields_go_to_the_thermostat_block() -> None:
    config = devices.thermostat(
        "t1",
        name="Hall",
        measurements=devices.measurements("temperature", "window_open", precision=devices.PRECISION),
        hvac_modes=("off", "heat_cool"),
        setpoint="range",
        humidity=devices.humidity_range(30, 60, 5),
        presets=("eco",),
        events=("fault",),
        sw_version="2.0",
    )
    assert config == {
        "schema": 1,
        "id": "t1",
        "kind": "thermostat",
        "name": "Hall",
        "sw_version": "2.0",
        "measurements": {"temperature": {"unit": "°C", "precision": 1}, "window_open": {}},
        "events": ["fault"],
        "thermostat": {
            "hvac_modes": ["off", "heat_cool"],
            "setpoint": "range",
            "presets": ["eco"],
            "humidity": {"min": 30, "max": 60, "step": 5},
        },
    }
    parsed = parse_config(devices.encode(config))
    assert parsed.kind is DeviceKind.THERMOSTAT
    assert parsed.thermostat is not None
    assert parsed.thermostat.setpoint is Setpoint.RANGE
    assert parsed.thermostat.hvac_modes == (HvacMode.OFF, HvacMode.HEAT_COOL)


def test_only_what_is_given_is_written() -> None:
    assert devices.sensor("s1") == {"schema": 1, "id": "s1", "kind": "sensor", "name": "s1"}
    assert devices.thermostat("t1", schema=2)["schema"] == 2
    assert devices.thermostat("t1")["thermostat"] == {"hvac_modes": ["off", "heat"]}
    with pytest.raises(TypeError, match="not a config key: colour"):
        devices.sensor("s1", colour="red")
    with pytest.raises(TypeError, match="not a config key: min_temp"):
        devices.sensor("s1", min_temp=5)  # a thermostat key on a sensor


def test_the_factories_know_the_keys_the_parser_knows() -> None:
    """devices.py cannot import the protocol, so it lists the keys itself; this keeps both lists the same."""
    assert {"schema", "id", "kind", "name", "measurements", "thermostat", *devices.DEVICE_KEYS} == _CONFIG_KEYS
    assert {"hvac_modes", *devices.THERMOSTAT_KEYS} == _THERMOSTAT_KEYS
    assert set(devices.UNITS) | {"window_open", "low_battery", "fault"} == set(MEASUREMENT_TYPES)
    for key, unit in devices.UNITS.items():
        assert unit in MEASUREMENT_TYPES[key].units, key


def test_a_config_is_a_fresh_copy_of_its_inputs() -> None:
    declared = devices.measurements("temperature")
    config = devices.sensor("s1", measurements=declared)
    config["measurements"]["temperature"]["unit"] = "K"
    assert declared == {"temperature": {"unit": "°C"}}


def test_the_factories_import_nothing_of_the_protocol() -> None:
    """Home Assistant tests use them, and must see the protocol only as custom_components.thermo_bridge.protocol."""
    code = (
        "import sys, thermo_bridge_sim.devices; print(sorted(m for m in sys.modules if m.startswith('thermo_bridge')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert result.stdout.strip() == "['thermo_bridge_sim', 'thermo_bridge_sim.devices']"
    assert "custom_components" not in result.stdout
