"""Typed models of the thermo_bridge device protocol (docs/protocol.md, schema 1).

Frozen dataclasses: two configs compare equal exactly when the device announced the same
thing, which is how both consumers tell "rediscovered, unchanged" from "changed".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = 1
"""The newest config schema this implementation understands."""

DEFAULT_BASE_TOPIC = "thermo_bridge"
MAX_PAYLOAD_BYTES = 64 * 1024
"""Larger payloads are rejected before decoding; a real config is a few hundred bytes."""


class DeviceKind(StrEnum):
    """What a device is."""

    THERMOSTAT = "thermostat"
    SENSOR = "sensor"


class HvacMode(StrEnum):
    """Operating modes; the same vocabulary as Home Assistant's climate entity."""

    OFF = "off"
    HEAT = "heat"
    COOL = "cool"
    HEAT_COOL = "heat_cool"
    AUTO = "auto"
    DRY = "dry"
    FAN_ONLY = "fan_only"


class HvacAction(StrEnum):
    """What the device is doing right now."""

    OFF = "off"
    IDLE = "idle"
    HEATING = "heating"
    COOLING = "cooling"
    DRYING = "drying"
    FAN = "fan"
    PREHEATING = "preheating"
    DEFROSTING = "defrosting"


class Setpoint(StrEnum):
    """Which target temperatures a thermostat takes."""

    SINGLE = "single"
    RANGE = "range"
    BOTH = "both"  # single in heat/cool, low/high range in heat_cool/auto

    @property
    def has_single(self) -> bool:
        """Whether target_temperature is accepted."""
        return self is not Setpoint.RANGE

    @property
    def has_range(self) -> bool:
        """Whether target_temperature_low/high are accepted."""
        return self is not Setpoint.SINGLE


class ValueType(StrEnum):
    """How a measurement's value is written on the wire."""

    NUMBER = "number"
    BOOLEAN = "boolean"


class Availability(StrEnum):
    """Payloads of the retained availability topic (the device's MQTT last will)."""

    ONLINE = "online"
    OFFLINE = "offline"


class AckStatus(StrEnum):
    """A device's answer to a command."""

    OK = "ok"
    ERROR = "error"


class CommandStatus(StrEnum):
    """The final outcome of a command, as the server that sent it reports it."""

    ACKED = "acked"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


class MessageKind(StrEnum):
    """The topic suffixes of one device: ``<base>/<device_id>/<kind>``."""

    CONFIG = "config"
    STATE = "state"
    AVAILABILITY = "availability"
    SET = "set"
    ACK = "ack"
    EVENT = "event"
    COMMAND = "command"
    """Published by the add-on server (not the device): a command it sent reached its outcome."""


@dataclass(frozen=True, slots=True)
class MeasurementType:
    """A measurement the protocol knows: its wire type, accepted units and sane bounds."""

    key: str
    value_type: ValueType
    units: tuple[str, ...] = ()
    minimum: float = -1e9
    maximum: float = 1e9
    diagnostic: bool = False


def _number(key: str, *units: str, lo: float = -1e9, hi: float = 1e9, diag: bool = False) -> MeasurementType:
    return MeasurementType(key, ValueType.NUMBER, units, lo, hi, diag)


def _boolean(key: str, *, diag: bool = False) -> MeasurementType:
    return MeasurementType(key, ValueType.BOOLEAN, diagnostic=diag)


TEMPERATURE_UNITS = ("°C", "°F")

MEASUREMENT_TYPES: dict[str, MeasurementType] = {
    m.key: m
    for m in (
        _number("temperature", "°C", "°F", "K", lo=-273.15, hi=1000),
        _number("humidity", "%", lo=0, hi=100),
        _number("battery", "%", lo=0, hi=100),
        _number("battery_voltage", "V", "mV", lo=0, hi=100_000, diag=True),
        _number("co2", "ppm", lo=0, hi=100_000),
        _number("pressure", "hPa", "kPa", "Pa", "mbar", "inHg", "mmHg", "psi", lo=0, hi=10_000_000),
        _number("illuminance", "lx", lo=0, hi=1_000_000),
        _number("pm25", "µg/m³", lo=0, hi=100_000),
        _number("signal", "dBm", lo=-200, hi=50, diag=True),
        _boolean("window_open"),
        _boolean("low_battery", diag=True),
        _boolean("fault", diag=True),
    )
}


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measurement a device reports, as its config declares it."""

    key: str
    unit: str | None = None
    precision: int | None = None

    @property
    def type(self) -> MeasurementType:
        """The protocol's description of this measurement."""
        return MEASUREMENT_TYPES[self.key]


@dataclass(frozen=True, slots=True)
class HumidityRange:
    """Target humidity a thermostat accepts (percent)."""

    minimum: float = 30
    maximum: float = 70
    step: float = 1


@dataclass(frozen=True, slots=True)
class ThermostatCapabilities:
    """What a thermostat can be told to do."""

    hvac_modes: tuple[HvacMode, ...]
    temperature_unit: str = "°C"
    setpoint: Setpoint = Setpoint.SINGLE
    min_temp: float = 7
    max_temp: float = 35
    temp_step: float = 0.5
    presets: tuple[str, ...] = ()
    fan_modes: tuple[str, ...] = ()
    swing_modes: tuple[str, ...] = ()
    humidity: HumidityRange | None = None


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """A device's retained announcement: identity and capabilities."""

    device_id: str
    kind: DeviceKind
    name: str
    measurements: tuple[Measurement, ...] = ()
    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    suggested_area: str | None = None
    events: tuple[str, ...] = ()
    expire_after: int | None = None
    thermostat: ThermostatCapabilities | None = None
    schema: int = SCHEMA_VERSION

    def measurement(self, key: str) -> Measurement | None:
        """The declared measurement ``key``, if the device has it."""
        for item in self.measurements:
            if item.key == key:
                return item
        return None

    def as_dict(self) -> dict[str, Any]:
        """The canonical wire form (what ``parse_config`` accepts)."""
        out: dict[str, Any] = {"schema": self.schema, "id": self.device_id, "kind": str(self.kind), "name": self.name}
        for key in ("manufacturer", "model", "sw_version", "suggested_area"):
            if (value := getattr(self, key)) is not None:
                out[key] = value
        out["measurements"] = {
            m.key: {k: v for k, v in (("unit", m.unit), ("precision", m.precision)) if v is not None}
            for m in self.measurements
        }
        if self.events:
            out["events"] = list(self.events)
        if self.expire_after is not None:
            out["expire_after"] = self.expire_after
        if (t := self.thermostat) is not None:
            thermo: dict[str, Any] = {
                "hvac_modes": [str(m) for m in t.hvac_modes],
                "temperature_unit": t.temperature_unit,
                "setpoint": str(t.setpoint),
                "min_temp": t.min_temp,
                "max_temp": t.max_temp,
                "temp_step": t.temp_step,
            }
            for key in ("presets", "fan_modes", "swing_modes"):
                if values := getattr(t, key):
                    thermo[key] = list(values)
            if t.humidity is not None:
                thermo["humidity"] = {"min": t.humidity.minimum, "max": t.humidity.maximum, "step": t.humidity.step}
            out["thermostat"] = thermo
        return out


StateValue = float | bool | str | None


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """A partial state report: only the keys present changed. ``None`` means unknown."""

    values: dict[str, StateValue]
    ts: float | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """A command to a device; ``command_id`` correlates the device's ack."""

    command_id: str
    values: dict[str, float | str]

    def as_dict(self) -> dict[str, Any]:
        """Wire form."""
        return {"id": self.command_id, **self.values}


@dataclass(frozen=True, slots=True)
class Ack:
    """A device's answer to a command."""

    command_id: str
    status: AckStatus
    reason: str | None = None
    ts: float | None = None


@dataclass(frozen=True, slots=True)
class CommandReport:
    """A command's outcome, announced by the server that sent it: what, who asked, and the result."""

    command_id: str
    values: dict[str, float | str]
    user: str
    """Who sent it: the Auth0 ``sub`` of the API caller."""
    status: CommandStatus
    reason: str | None
    ts: float
    """When the outcome was reached (server time)."""


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A momentary thing that happened on a device (button press, fault…)."""

    event_type: str
    data: dict[str, StateValue] = field(default_factory=dict)
    ts: float | None = None


# State keys a thermostat reports besides its measurements, and their wire types.
THERMOSTAT_NUMBER_STATE = ("target_temperature", "target_temperature_low", "target_temperature_high", "target_humidity")
THERMOSTAT_ENUM_STATE = ("hvac_mode", "hvac_action", "preset", "fan_mode", "swing_mode")
COMMAND_KEYS = (*THERMOSTAT_NUMBER_STATE, "hvac_mode", "preset", "fan_mode", "swing_mode")
