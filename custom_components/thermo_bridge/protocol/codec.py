"""Parsing and encoding of every message kind.

Parsers take the raw MQTT payload (bytes) and return a model or raise ``ProtocolError``;
they never raise anything else, whatever the input (tests/protocol/test_contract.py runs
hostile fixtures through them). State, command and event payloads are checked against
the device's own config, so a value a device cannot have never reaches a consumer.
The state parser is on the hot path of both consumers: it is written out by hand.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from .errors import ProtocolError, Reason
from .models import (
    COMMAND_KEYS,
    MAX_PAYLOAD_BYTES,
    MEASUREMENT_TYPES,
    SCHEMA_VERSION,
    TEMPERATURE_UNITS,
    THERMOSTAT_ENUM_STATE,
    THERMOSTAT_NUMBER_STATE,
    Ack,
    AckStatus,
    Availability,
    Command,
    CommandReport,
    CommandStatus,
    DeviceConfig,
    DeviceEvent,
    DeviceKind,
    HumidityRange,
    HvacAction,
    HvacMode,
    Measurement,
    Setpoint,
    StateUpdate,
    StateValue,
    ThermostatCapabilities,
    ValueType,
)
from .topics import validate_device_id

NAME_RE = re.compile(r"[a-z0-9_]{1,32}")
"""Preset, fan, swing and event names: short lowercase identifiers (translatable keys)."""
COMMAND_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MIN_TS = 946_684_800.0  # 2000-01-01
MAX_TS = 4_102_444_800.0  # 2100-01-01
MAX_SEQ = 2**63 - 1
MAX_TEXT = 128
MAX_USER = 256
"""Longest ``user`` of a command report (an Auth0 ``sub``, e.g. ``google-oauth2|1093…``)."""
MAX_DEPTH = 8
"""Deepest nesting of objects/arrays accepted; the deepest valid message (a config) uses 3."""


# --------------------------------------------------------------------------- decoding


def _reject_constant(name: str) -> NoReturn:
    raise ProtocolError(Reason.NOT_FINITE, f"{name} is not a number JSON allows")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ProtocolError(Reason.DUPLICATE_KEY, f"key {key[:40]!r} appears twice")
            seen.add(key)
    return out


# Built once: json.loads with hooks would build a new decoder for every message.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)


def decode_object(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """Decode a JSON object payload; reject anything too large, not UTF-8, not JSON or not an object."""
    if len(payload) > max_bytes:
        raise ProtocolError(Reason.TOO_LARGE, f"payload is {len(payload)} bytes, the limit is {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError(Reason.NOT_UTF8, f"payload is not valid UTF-8 (byte {err.start})") from None
    try:
        data = _DECODER.decode(text)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError(Reason.TOO_DEEP, "payload is nested too deeply") from None
    except json.JSONDecodeError as err:
        raise ProtocolError(Reason.NOT_JSON, f"payload is not JSON: {err.msg} at char {err.pos}") from None
    except ValueError as err:  # e.g. an integer literal with more digits than Python converts
        raise ProtocolError(Reason.OUT_OF_RANGE, f"payload has a number that is too large: {err}") from None
    # Only payloads with more containers than MAX_DEPTH can be too deep: one cheap count keeps
    # the walk off the hot path (a state report has a single object). Checked before the type
    # so a deep array is too_deep on every Python (3.13's decoder raises RecursionError on it).
    if payload.count(b"{") + payload.count(b"[") > MAX_DEPTH and _too_deep(data):
        raise ProtocolError(Reason.TOO_DEEP, f"payload is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict):
        raise ProtocolError(Reason.NOT_OBJECT, f"payload must be a JSON object, not {_type_name(data)}")
    return data


def _too_deep(data: object) -> bool:
    """Whether containers nest deeper than MAX_DEPTH (iterative: the input may be thousands deep)."""
    if not isinstance(data, (dict, list)):
        return False
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))  # type: ignore[attr-defined]
    return False


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --------------------------------------------------------------------------- field readers


def _fail(reason: Reason, path: str, message: str) -> NoReturn:
    raise ProtocolError(reason, message, path=path)


def _check_keys(data: Mapping[str, Any], allowed: frozenset[str] | Mapping[str, Any], path: str = "") -> None:
    for key in data:
        if key not in allowed:
            _fail(Reason.UNKNOWN_KEY, f"{path}{key[:40]}", "unknown key")


def _number(value: object, path: str, lo: float = -1e15, hi: float = 1e15) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(Reason.WRONG_TYPE, path, f"must be a number, not {_type_name(value)}")
    try:
        result = float(value)
    except OverflowError:
        _fail(Reason.OUT_OF_RANGE, path, "number is too large")
    if not math.isfinite(result):
        _fail(Reason.NOT_FINITE, path, "must be a finite number")
    if not lo <= result <= hi:
        _fail(Reason.OUT_OF_RANGE, path, f"{result:g} is outside {lo:g}..{hi:g}")
    return result


def _int(value: object, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(Reason.WRONG_TYPE, path, f"must be an integer, not {_type_name(value)}")
    if not lo <= value <= hi:
        _fail(Reason.OUT_OF_RANGE, path, f"must be between {lo} and {hi}")
    return value


def _text(value: object, path: str, max_len: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        _fail(Reason.WRONG_TYPE, path, f"must be a string, not {_type_name(value)}")
    if not value.strip() or len(value) > max_len or not value.isprintable():
        _fail(Reason.INVALID_VALUE, path, f"must be 1-{max_len} printable characters")
    return value


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else _text(value, key)


def _name(value: object, path: str) -> str:
    if not isinstance(value, str):
        _fail(Reason.WRONG_TYPE, path, f"must be a string, not {_type_name(value)}")
    if not NAME_RE.fullmatch(value):
        _fail(Reason.INVALID_VALUE, path, f"{value[:40]!r} must be 1-32 characters of a-z, 0-9 or '_'")
    return value


def _names(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        _fail(Reason.WRONG_TYPE, path, f"must be an array, not {_type_name(value)}")
    if len(value) > 64:
        _fail(Reason.OUT_OF_RANGE, path, "must have at most 64 entries")
    names = tuple(_name(item, f"{path}[{i}]") for i, item in enumerate(value))
    if len(set(names)) != len(names):
        _fail(Reason.INVALID_VALUE, path, "has duplicate entries")
    return names


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(Reason.WRONG_TYPE, path, f"must be an object, not {_type_name(value)}")
    return value


def _optional_ts(data: Mapping[str, Any]) -> float | None:
    value = data.get("ts")
    return None if value is None else _number(value, "ts", MIN_TS, MAX_TS)


# --------------------------------------------------------------------------- config

_CONFIG_KEYS = frozenset(
    {
        "schema",
        "id",
        "kind",
        "name",
        "manufacturer",
        "model",
        "sw_version",
        "suggested_area",
        "measurements",
        "events",
        "expire_after",
        "thermostat",
    }
)
_THERMOSTAT_KEYS = frozenset(
    {
        "hvac_modes",
        "temperature_unit",
        "setpoint",
        "min_temp",
        "max_temp",
        "temp_step",
        "presets",
        "fan_modes",
        "swing_modes",
        "humidity",
    }
)
_MEASUREMENT_KEYS = frozenset({"unit", "precision"})
_HUMIDITY_KEYS = frozenset({"min", "max", "step"})


def parse_config(payload: bytes, device_id: str | None = None) -> DeviceConfig:
    """Parse a retained config payload; ``device_id`` (from the topic) must match its ``id``."""
    data = decode_object(payload)
    schema = data.get("schema")
    if schema is None:
        _fail(Reason.MISSING_KEY, "schema", "is required")
    schema = _int(schema, "schema", 1, 2**31)
    if schema > SCHEMA_VERSION:
        _fail(Reason.UNSUPPORTED_SCHEMA, "schema", f"version {schema} is newer than the supported {SCHEMA_VERSION}")
    _check_keys(data, _CONFIG_KEYS)
    for key in ("id", "kind", "name"):
        if key not in data:
            _fail(Reason.MISSING_KEY, key, "is required")
    try:
        config_id = validate_device_id(data["id"])
    except ProtocolError as err:
        _fail(err.reason, "id", err.message)
    if device_id is not None and config_id != device_id:
        _fail(Reason.ID_MISMATCH, "id", f"{config_id!r} does not match the topic's device id {device_id!r}")
    try:
        kind = DeviceKind(data["kind"])
    except (ValueError, TypeError):
        _fail(Reason.INVALID_VALUE, "kind", f"must be one of {', '.join(DeviceKind)}")

    measurements = _parse_measurements(data.get("measurements", {}))
    thermostat = None
    if kind is DeviceKind.THERMOSTAT:
        if "thermostat" not in data:
            _fail(Reason.MISSING_KEY, "thermostat", "is required for a thermostat")
        thermostat = _parse_thermostat(data["thermostat"])
    elif "thermostat" in data:
        _fail(Reason.INVALID_VALUE, "thermostat", "is only allowed for kind 'thermostat'")
    elif not measurements:
        _fail(Reason.MISSING_KEY, "measurements", "a sensor must declare at least one measurement")

    expire_after = data.get("expire_after")
    return DeviceConfig(
        device_id=config_id,
        kind=kind,
        name=_text(data["name"], "name"),
        measurements=measurements,
        manufacturer=_optional_text(data, "manufacturer"),
        model=_optional_text(data, "model"),
        sw_version=_optional_text(data, "sw_version"),
        suggested_area=_optional_text(data, "suggested_area"),
        events=_names(data.get("events", []), "events"),
        expire_after=None if expire_after is None else _int(expire_after, "expire_after", 1, 7 * 86400),
        thermostat=thermostat,
        schema=schema,
    )


def _parse_measurements(value: object) -> tuple[Measurement, ...]:
    items = _object(value, "measurements")
    out = []
    for key, spec_value in items.items():
        path = f"measurements.{key[:40]}"
        mtype = MEASUREMENT_TYPES.get(key)
        if mtype is None:
            _fail(Reason.UNKNOWN_KEY, path, f"unknown measurement; known: {', '.join(MEASUREMENT_TYPES)}")
        spec = _object(spec_value, path)
        _check_keys(spec, _MEASUREMENT_KEYS, path + ".")
        unit = spec.get("unit")
        precision = spec.get("precision")
        if mtype.value_type is ValueType.NUMBER:
            if unit is None:
                _fail(Reason.MISSING_KEY, path + ".unit", f"is required, one of {', '.join(mtype.units)}")
            if unit not in mtype.units:
                _fail(Reason.INVALID_VALUE, path + ".unit", f"must be one of {', '.join(mtype.units)}")
            if precision is not None:
                precision = _int(precision, path + ".precision", 0, 4)
        elif unit is not None or precision is not None:
            _fail(Reason.INVALID_VALUE, path, "a boolean measurement has no unit or precision")
        out.append(Measurement(key, unit, precision))
    return tuple(out)


def _parse_thermostat(value: object) -> ThermostatCapabilities:
    data = _object(value, "thermostat")
    _check_keys(data, _THERMOSTAT_KEYS, "thermostat.")
    modes_value = data.get("hvac_modes")
    if modes_value is None:
        _fail(Reason.MISSING_KEY, "thermostat.hvac_modes", "is required")
    if not isinstance(modes_value, list):
        _fail(Reason.WRONG_TYPE, "thermostat.hvac_modes", f"must be an array, not {_type_name(modes_value)}")
    if not modes_value:
        _fail(Reason.INVALID_VALUE, "thermostat.hvac_modes", "must not be empty")
    try:
        hvac_modes = tuple(HvacMode(mode) for mode in modes_value)
    except (ValueError, TypeError):
        _fail(Reason.INVALID_VALUE, "thermostat.hvac_modes", f"entries must be among {', '.join(HvacMode)}")
    if len(set(hvac_modes)) != len(hvac_modes):
        _fail(Reason.INVALID_VALUE, "thermostat.hvac_modes", "has duplicate entries")
    unit = data.get("temperature_unit", "°C")
    if unit not in TEMPERATURE_UNITS:
        _fail(Reason.INVALID_VALUE, "thermostat.temperature_unit", "must be '°C' or '°F'")
    try:
        setpoint = Setpoint(data.get("setpoint", "single"))
    except (ValueError, TypeError):
        _fail(Reason.INVALID_VALUE, "thermostat.setpoint", f"must be one of {', '.join(Setpoint)}")
    celsius = unit == "°C"
    lo, hi = (-50.0, 100.0) if celsius else (-58.0, 212.0)
    min_temp = _number(data.get("min_temp", 7 if celsius else 45), "thermostat.min_temp", lo, hi)
    max_temp = _number(data.get("max_temp", 35 if celsius else 95), "thermostat.max_temp", lo, hi)
    if min_temp >= max_temp:
        _fail(Reason.INVALID_VALUE, "thermostat.max_temp", "must be greater than min_temp")
    temp_step = _number(data.get("temp_step", 0.5 if celsius else 1), "thermostat.temp_step", 0.01, 10)
    humidity = None
    if (hvalue := data.get("humidity")) is not None:
        hdata = _object(hvalue, "thermostat.humidity")
        _check_keys(hdata, _HUMIDITY_KEYS, "thermostat.humidity.")
        humidity = HumidityRange(
            _number(hdata.get("min", 30), "thermostat.humidity.min", 0, 100),
            _number(hdata.get("max", 70), "thermostat.humidity.max", 0, 100),
            _number(hdata.get("step", 1), "thermostat.humidity.step", 0.1, 50),
        )
        if humidity.minimum >= humidity.maximum:
            _fail(Reason.INVALID_VALUE, "thermostat.humidity.max", "must be greater than min")
    return ThermostatCapabilities(
        hvac_modes=hvac_modes,
        temperature_unit=unit,
        setpoint=setpoint,
        min_temp=min_temp,
        max_temp=max_temp,
        temp_step=temp_step,
        presets=_names(data.get("presets", []), "thermostat.presets"),
        fan_modes=_names(data.get("fan_modes", []), "thermostat.fan_modes"),
        swing_modes=_names(data.get("swing_modes", []), "thermostat.swing_modes"),
        humidity=humidity,
    )


def encode_config(config: DeviceConfig) -> bytes:
    """The retained config payload a device publishes."""
    return json.dumps(config.as_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------- state


def _enum_choices(config: DeviceConfig, key: str) -> tuple[str, ...]:
    thermo = config.thermostat
    assert thermo is not None  # noqa: S101 - callers check the kind
    if key == "hvac_mode":
        return tuple(thermo.hvac_modes)
    if key == "hvac_action":
        return tuple(HvacAction)
    if key == "preset":
        return thermo.presets
    if key == "fan_mode":
        return thermo.fan_modes
    return thermo.swing_modes


def _thermostat_number_bounds(config: DeviceConfig, key: str) -> tuple[float, float] | None:
    """Bounds of a thermostat number key, or None when the device does not have that key."""
    thermo = config.thermostat
    assert thermo is not None  # noqa: S101
    if key == "target_humidity":
        return None if thermo.humidity is None else (thermo.humidity.minimum, thermo.humidity.maximum)
    if key == "target_temperature" and not thermo.setpoint.has_single:
        return None
    if key != "target_temperature" and not thermo.setpoint.has_range:
        return None
    return thermo.min_temp, thermo.max_temp


def parse_state(payload: bytes, config: DeviceConfig) -> StateUpdate:
    """Parse a partial state report, checking every key against the device's config.

    Reported setpoints are checked against plausibility, not the settable range: a device may
    legitimately report a setpoint it was given by its own buttons beyond what we may set.
    """
    data = decode_object(payload)
    values: dict[str, StateValue] = {}
    ts: float | None = None
    seq: int | None = None
    is_thermostat = config.thermostat is not None
    for key, value in data.items():
        if key == "ts":
            ts = None if value is None else _number(value, "ts", MIN_TS, MAX_TS)
            continue
        if key == "seq":
            seq = None if value is None else _int(value, "seq", 0, MAX_SEQ)
            continue
        measurement = config.measurement(key)
        if measurement is not None:
            if value is None:
                values[key] = None
            elif measurement.type.value_type is ValueType.BOOLEAN:
                if not isinstance(value, bool):
                    _fail(Reason.WRONG_TYPE, key, f"must be a boolean, not {_type_name(value)}")
                values[key] = value
            else:
                values[key] = _number(value, key, measurement.type.minimum, measurement.type.maximum)
            continue
        if is_thermostat and key in THERMOSTAT_NUMBER_STATE:
            if _thermostat_number_bounds(config, key) is None:
                _fail(Reason.NOT_SUPPORTED, key, "the device's config does not declare this setpoint")
            plausible = (0.0, 100.0) if key == "target_humidity" else (-1000.0, 1000.0)
            values[key] = None if value is None else _number(value, key, *plausible)
            continue
        if is_thermostat and key in THERMOSTAT_ENUM_STATE:
            if value is not None:
                choices = _enum_choices(config, key)
                if not isinstance(value, str):
                    _fail(Reason.WRONG_TYPE, key, f"must be a string, not {_type_name(value)}")
                if value not in choices:
                    _fail(Reason.INVALID_VALUE, key, f"{value[:40]!r} is not one of the device's {key} values")
            values[key] = value
            continue
        _fail(Reason.UNKNOWN_KEY, key[:40], "is not a capability of this device")
    if not values and ts is None and seq is None:
        _fail(Reason.MISSING_KEY, "", "state update is empty")
    return StateUpdate(values, ts, seq)


def encode_state(values: Mapping[str, StateValue], *, ts: float | None = None, seq: int | None = None) -> bytes:
    """A state payload, as a device publishes it."""
    data: dict[str, Any] = dict(values)
    if ts is not None:
        data["ts"] = ts
    if seq is not None:
        data["seq"] = seq
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------- availability


def parse_availability(payload: bytes) -> bool:
    """``online`` -> True, ``offline`` -> False; anything else is rejected."""
    if payload == b"online":
        return True
    if payload == b"offline":
        return False
    shown = payload[:40].decode("utf-8", "replace")
    raise ProtocolError(Reason.INVALID_VALUE, f"availability must be 'online' or 'offline', not {shown!r}")


def encode_availability(online: bool) -> bytes:
    """The availability payload."""
    return (Availability.ONLINE if online else Availability.OFFLINE).value.encode()


# --------------------------------------------------------------------------- commands


def validate_command(values: Mapping[str, Any], config: DeviceConfig) -> dict[str, float | str]:
    """Check command values against the device's capabilities; return them normalised.

    This is what both consumers call before publishing, so an out-of-range setpoint is
    refused with a precise message and nothing is sent.
    """
    thermo = config.thermostat
    if thermo is None:
        _fail(Reason.NOT_SUPPORTED, "", f"device {config.device_id!r} is a {config.kind} and takes no commands")
    if not values:
        _fail(Reason.MISSING_KEY, "", "a command needs at least one value")
    out: dict[str, float | str] = {}
    for key, value in values.items():
        if key in THERMOSTAT_NUMBER_STATE:
            bounds = _thermostat_number_bounds(config, key)
            if bounds is None:
                _fail(Reason.NOT_SUPPORTED, key, "the device does not support this setpoint")
            out[key] = _number(value, key, *bounds)
        elif key in ("hvac_mode", "preset", "fan_mode", "swing_mode"):
            choices = _enum_choices(config, key)
            if not choices:
                _fail(Reason.NOT_SUPPORTED, key, f"the device has no {key} values")
            if not isinstance(value, str) or value not in choices:
                _fail(Reason.INVALID_VALUE, key, f"must be one of {', '.join(choices)}")
            out[key] = value
        else:
            _fail(Reason.UNKNOWN_KEY, str(key)[:40], f"is not a command; commands are {', '.join(COMMAND_KEYS)}")
    low, high = out.get("target_temperature_low"), out.get("target_temperature_high")
    if isinstance(low, float) and isinstance(high, float) and low > high:
        _fail(Reason.INVALID_VALUE, "target_temperature_low", "must not be above target_temperature_high")
    return out


def parse_command(payload: bytes, config: DeviceConfig) -> Command:
    """Parse a ``set`` payload (what a device does with it)."""
    data = decode_object(payload)
    command_id = data.pop("id", None)
    if command_id is None:
        _fail(Reason.MISSING_KEY, "id", "is required")
    if not isinstance(command_id, str):
        _fail(Reason.WRONG_TYPE, "id", f"must be a string, not {_type_name(command_id)}")
    if not COMMAND_ID_RE.fullmatch(command_id):
        _fail(Reason.INVALID_VALUE, "id", "must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
    return Command(command_id, validate_command(data, config))


def encode_command(command: Command) -> bytes:
    """The ``set`` payload."""
    return json.dumps(command.as_dict(), separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------- acks

_ACK_KEYS = frozenset({"id", "status", "reason", "ts"})


def parse_ack(payload: bytes) -> Ack:
    """Parse a device's answer to a command."""
    data = decode_object(payload)
    _check_keys(data, _ACK_KEYS)
    command_id = data.get("id")
    if command_id is None:
        _fail(Reason.MISSING_KEY, "id", "is required (the id of the command this answers)")
    if not isinstance(command_id, str):
        _fail(Reason.WRONG_TYPE, "id", f"must be a string, not {_type_name(command_id)}")
    if not COMMAND_ID_RE.fullmatch(command_id):
        _fail(Reason.INVALID_VALUE, "id", "must be the command's id (1-64 characters of A-Z, a-z, 0-9, '_', '-')")
    status_value = data.get("status")
    if status_value is None:
        _fail(Reason.MISSING_KEY, "status", "is required")
    if not isinstance(status_value, str):
        _fail(Reason.WRONG_TYPE, "status", f"must be a string, not {_type_name(status_value)}")
    try:
        status = AckStatus(status_value)
    except ValueError:
        _fail(Reason.INVALID_VALUE, "status", "must be 'ok' or 'error'")
    reason = data.get("reason")
    if reason is not None:
        reason = _text(reason, "reason", 200)
    elif status is AckStatus.ERROR:
        _fail(Reason.MISSING_KEY, "reason", "is required when status is 'error'")
    return Ack(command_id, status, reason, _optional_ts(data))


def encode_ack(ack: Ack) -> bytes:
    """The ``ack`` payload."""
    data: dict[str, Any] = {"id": ack.command_id, "status": str(ack.status)}
    if ack.reason is not None:
        data["reason"] = ack.reason
    if ack.ts is not None:
        data["ts"] = ack.ts
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------- command reports

_REPORT_KEYS = frozenset({"id", "values", "user", "status", "reason", "ts"})


def _report_values(value: object) -> dict[str, float | str]:
    """A report's command values: checked for shape only, as the device's config may have changed since."""
    data = _object(value, "values")
    if not data:
        _fail(Reason.MISSING_KEY, "values", "must name at least one command value")
    out: dict[str, float | str] = {}
    for key, item in data.items():
        path = f"values.{key[:40]}"
        if key in THERMOSTAT_NUMBER_STATE:
            out[key] = _number(item, path, *((0.0, 100.0) if key == "target_humidity" else (-1000.0, 1000.0)))
        elif key == "hvac_mode":
            if not isinstance(item, str):
                _fail(Reason.WRONG_TYPE, path, f"must be a string, not {_type_name(item)}")
            if item not in HvacMode:
                _fail(Reason.INVALID_VALUE, path, f"must be one of {', '.join(HvacMode)}")
            out[key] = item
        elif key in COMMAND_KEYS:
            out[key] = _name(item, path)
        else:
            _fail(Reason.UNKNOWN_KEY, path, f"is not a command; commands are {', '.join(COMMAND_KEYS)}")
    return out


def parse_command_report(payload: bytes) -> CommandReport:
    """Parse a ``command`` report: a command the server sent reached ``acked``, ``failed`` or ``timed_out``."""
    data = decode_object(payload)
    _check_keys(data, _REPORT_KEYS)
    for key in ("id", "values", "user", "status", "ts"):
        if data.get(key) is None:
            _fail(Reason.MISSING_KEY, key, "is required")
    command_id = data["id"]
    if not isinstance(command_id, str):
        _fail(Reason.WRONG_TYPE, "id", f"must be a string, not {_type_name(command_id)}")
    if not COMMAND_ID_RE.fullmatch(command_id):
        _fail(Reason.INVALID_VALUE, "id", "must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
    status_value = data["status"]
    if not isinstance(status_value, str):
        _fail(Reason.WRONG_TYPE, "status", f"must be a string, not {_type_name(status_value)}")
    try:
        status = CommandStatus(status_value)
    except ValueError:
        _fail(Reason.INVALID_VALUE, "status", f"must be one of {', '.join(CommandStatus)}")
    reason = data.get("reason")
    if reason is not None:
        reason = _text(reason, "reason", 200)
    elif status is CommandStatus.FAILED:
        _fail(Reason.MISSING_KEY, "reason", "is required when status is 'failed'")
    return CommandReport(
        command_id=command_id,
        values=_report_values(data["values"]),
        user=_text(data["user"], "user", MAX_USER),
        status=status,
        reason=reason,
        ts=_number(data["ts"], "ts", MIN_TS, MAX_TS),
    )


def encode_command_report(report: CommandReport) -> bytes:
    """The ``command`` payload the server publishes."""
    data = {
        "id": report.command_id,
        "values": report.values,
        "user": report.user,
        "status": str(report.status),
        "reason": report.reason,
        "ts": report.ts,
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------- events

_EVENT_KEYS = frozenset({"event", "data", "ts"})


def parse_event(payload: bytes, config: DeviceConfig) -> DeviceEvent:
    """Parse a momentary device event; its type must be one the config declares."""
    data = decode_object(payload)
    _check_keys(data, _EVENT_KEYS)
    if data.get("event") is None:
        _fail(Reason.MISSING_KEY, "event", "is required")
    event_type = _name(data["event"], "event")
    if event_type not in config.events:
        _fail(Reason.NOT_SUPPORTED, "event", f"{event_type!r} is not among the device's events")
    extra = _object(data.get("data", {}), "data")
    if len(extra) > 32:
        _fail(Reason.OUT_OF_RANGE, "data", "must have at most 32 keys")
    clean: dict[str, StateValue] = {}
    for key, value in extra.items():
        path = f"data.{key[:40]}"
        _name(key, path)
        if value is None or isinstance(value, bool):
            clean[key] = value
        elif isinstance(value, (int, float)):
            clean[key] = _number(value, path)
        elif isinstance(value, str):
            clean[key] = _text(value, path, 256)
        else:
            _fail(Reason.WRONG_TYPE, path, "event data values must be strings, numbers, booleans or null")
    return DeviceEvent(event_type, clean, _optional_ts(data))


def encode_event(event: DeviceEvent) -> bytes:
    """The ``event`` payload."""
    data: dict[str, Any] = {"event": event.event_type, "data": event.data}
    if event.ts is not None:
        data["ts"] = event.ts
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
