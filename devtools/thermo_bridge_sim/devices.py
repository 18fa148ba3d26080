"""Device configs in the protocol's wire form: what simulated, benchmark and test devices announce.

Every builder returns the JSON-ready dict a device publishes, retained, on
``<base>/<device_id>/config`` (docs/protocol.md, docs/schemas/device-config.schema.json), and
``encode`` turns one into the payload bytes. Keys come out in the order the protocol's own
encoder writes them, so ``encode`` gives the same bytes as the protocol's ``encode_config``
of the parsed config when the numbers are written alike.

Nothing here imports the protocol package: the wire form is the contract between the two
halves, and Home Assistant tests, which must see the protocol only as
``custom_components.thermo_bridge.protocol``, can build devices with these as well as the
simulator, the benchmarks and the server tests, which parse them with ``parse_config``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

SCHEMA = 1
"""The config schema version these builders write."""

WireConfig = dict[str, Any]
"""A config as JSON-ready data."""

UNITS: Mapping[str, str] = {
    "temperature": "°C",
    "humidity": "%",
    "battery": "%",
    "battery_voltage": "V",
    "co2": "ppm",
    "pressure": "hPa",
    "illuminance": "lx",
    "pm25": "µg/m³",
    "signal": "dBm",
}
"""The usual unit of every numeric measurement; the boolean ones (``window_open``…) have none."""

PRECISION: Mapping[str, int] = {
    "temperature": 1,
    "humidity": 0,
    "battery": 0,
    "battery_voltage": 2,
    "co2": 0,
    "pressure": 1,
    "illuminance": 0,
    "pm25": 0,
    "signal": 0,
}
"""The display precision a real device would usually declare for each numeric measurement."""

# The protocol's optional config keys, in the order its encoder writes them (tests/protocol/test_devices.py
# checks these lists against the parser's, which this module cannot import).
DEVICE_KEYS = ("manufacturer", "model", "sw_version", "suggested_area", "events", "expire_after")
"""Optional top-level keys: ``measurements`` goes between the first four and the last two."""
THERMOSTAT_KEYS = (
    "temperature_unit",
    "setpoint",
    "min_temp",
    "max_temp",
    "temp_step",
    "presets",
    "fan_modes",
    "swing_modes",
    "humidity",
)
"""Optional keys of the ``thermostat`` block, after ``hvac_modes``."""


def measurement(unit: str | None = None, precision: int | None = None) -> dict[str, Any]:
    """One measurement's declaration: its unit and display precision, each left out when None."""
    return {key: value for key, value in (("unit", unit), ("precision", precision)) if value is not None}


def measurements(*keys: str, precision: Mapping[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """``keys`` in this order, each with its usual unit, and a display precision where ``precision`` has one.

    ``precision=PRECISION`` gives every measurement its usual precision.
    """
    precision = precision or {}
    return {key: measurement(UNITS.get(key), precision.get(key)) for key in keys}


def _json_ready(value: object) -> object:
    if isinstance(value, tuple):
        return [_json_ready(item) for item in value]
    return copy.deepcopy(value)


def _config(
    device_id: str,
    kind: str,
    *,
    name: str | None,
    device_measurements: Mapping[str, Mapping[str, Any]] | None,
    fields: Mapping[str, object],
    thermostat: Mapping[str, Any] | None = None,
) -> WireConfig:
    unknown = set(fields) - set(DEVICE_KEYS) - {"schema"}
    if unknown:
        raise TypeError(f"not a config key: {', '.join(sorted(unknown))}")
    config: WireConfig = {
        "schema": fields.get("schema", SCHEMA),
        "id": device_id,
        "kind": kind,
        "name": device_id if name is None else name,
    }
    for key in DEVICE_KEYS[:4]:
        if key in fields:
            config[key] = fields[key]
    if device_measurements is not None:
        config["measurements"] = _json_ready(dict(device_measurements))
    for key in DEVICE_KEYS[4:]:
        if key in fields:
            config[key] = _json_ready(fields[key])
    if thermostat is not None:
        config["thermostat"] = thermostat
    return config


def sensor(
    device_id: str,
    *,
    name: str | None = None,
    measurements: Mapping[str, Mapping[str, Any]] | None = None,
    **fields: object,
) -> WireConfig:
    """A sensor's config (``kind: sensor``); the name defaults to the id.

    ``fields`` are the optional config keys: ``manufacturer``, ``model``, ``sw_version``,
    ``suggested_area``, ``events``, ``expire_after`` (and ``schema``, to announce another
    version). A key left out is absent from the config, so a test can build a minimal one.
    """
    return _config(device_id, "sensor", name=name, device_measurements=measurements, fields=fields)


def thermostat(
    device_id: str,
    *,
    name: str | None = None,
    measurements: Mapping[str, Mapping[str, Any]] | None = None,
    hvac_modes: Iterable[str] = ("off", "heat"),
    **fields: object,
) -> WireConfig:
    """A thermostat's config (``kind: thermostat``); the name defaults to the id.

    ``fields`` are the sensor's optional keys plus the thermostat block's: ``temperature_unit``,
    ``setpoint`` (``single``, ``range`` or ``both``), ``min_temp``, ``max_temp``, ``temp_step``,
    ``presets``, ``fan_modes``, ``swing_modes``, ``humidity`` (``humidity_range(...)``).
    """
    block: dict[str, Any] = {"hvac_modes": list(hvac_modes)}
    for key in THERMOSTAT_KEYS:
        if key in fields:
            block[key] = _json_ready(fields[key])
    device_fields = {key: value for key, value in fields.items() if key not in THERMOSTAT_KEYS}
    return _config(
        device_id, "thermostat", name=name, device_measurements=measurements, fields=device_fields, thermostat=block
    )


def humidity_range(minimum: float = 30, maximum: float = 70, step: float = 1) -> dict[str, float]:
    """A thermostat's settable target humidity (percent)."""
    return {"min": minimum, "max": maximum, "step": step}


def encode(config: Mapping[str, Any]) -> bytes:
    """The retained config payload: compact UTF-8 JSON, as the protocol's encoder writes it."""
    return json.dumps(config, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------- the devices the tools announce

SIMULATED_AREAS = ("Living room", "Bedroom", "Kitchen", "Office", "Bathroom", "Hallway")
SIMULATED_THERMOSTAT_EVENTS = ("button_press", "window_open_detected", "fault")
SIMULATED_SENSOR_EVENTS = ("button_press", "tamper")
SIMULATED_PRESETS = ("eco", "comfort", "away", "boost")
SIMULATED_FAN_MODES = ("auto", "low", "medium", "high")


def _simulated(index: int) -> dict[str, object]:
    return {
        "manufacturer": "thermo_bridge",
        "sw_version": "1.0.0",
        "suggested_area": SIMULATED_AREAS[(index - 1) % len(SIMULATED_AREAS)],
    }


def simulated_thermostat(device_id: str, index: int) -> WireConfig:
    """What simulated thermostat ``index`` (from 1) announces: every thermostat feature the simulator models."""
    return thermostat(
        device_id,
        name=f"Simulated thermostat {index}",
        measurements=measurements("temperature", "humidity", "battery", "signal", precision=PRECISION),
        hvac_modes=("off", "heat", "cool", "heat_cool", "auto"),
        model="SimTherm 1",
        events=SIMULATED_THERMOSTAT_EVENTS,
        temperature_unit="°C",
        setpoint="both",
        min_temp=7.0,
        max_temp=35.0,
        temp_step=0.5,
        presets=SIMULATED_PRESETS,
        fan_modes=SIMULATED_FAN_MODES,
        humidity=humidity_range(30.0, 70.0, 1.0),
        **_simulated(index),
    )


def simulated_sensor(device_id: str, index: int) -> WireConfig:
    """What simulated sensor ``index`` (from 1) announces: every reading the simulator models."""
    return sensor(
        device_id,
        name=f"Simulated sensor {index}",
        measurements=measurements(
            *("temperature", "humidity", "battery", "co2", "pressure", "illuminance", "signal"),
            *("window_open", "low_battery"),
            precision=PRECISION,
        ),
        model="SimSense 1",
        events=SIMULATED_SENSOR_EVENTS,
        **_simulated(index),
    )


BENCH_MANUFACTURER = "thermo_bridge bench"
BENCH_MODEL = "BT-1"


def bench_thermostat(
    device_id: str, index: int, keys: Iterable[str] = ("temperature", "humidity", "battery")
) -> WireConfig:
    """The benchmarks' thermostat ``index``: heat or off, one setpoint, and the measurements ``keys``."""
    return thermostat(
        device_id,
        name=f"Bench thermostat {index}",
        measurements=measurements(*keys, precision=PRECISION),
        manufacturer=BENCH_MANUFACTURER,
        model=BENCH_MODEL,
        sw_version="1.0.0",
        temperature_unit="°C",
        setpoint="single",
        min_temp=7,
        max_temp=30,
        temp_step=0.5,
    )
