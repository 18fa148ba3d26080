"""Fuzz targets for the protocol's parsers, shared by tests/protocol/test_fuzz.py and bench/fuzz_protocol.py.

The invariants, for every ``parse_*`` function whatever the bytes:

* it returns a model or raises ``ProtocolError``, never anything else;
* whatever parses, re-encoded with the matching ``encode_*``, parses again to an equal model
  (what the simulator and both consumers rely on).

``check`` runs one input through one target and raises ``InvariantError`` (with the input)
when an invariant breaks; any other exception is a crash. Targets that need a device take
one of ``CONFIGS``: a thermostat with every feature, a single-setpoint one in °F, a
range-only one and a sensor with every measurement.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thermo_bridge_protocol import (
    DeviceConfig,
    ProtocolError,
    encode_ack,
    encode_availability,
    encode_command,
    encode_command_report,
    encode_config,
    encode_event,
    encode_state,
    parse_ack,
    parse_availability,
    parse_command,
    parse_command_report,
    parse_config,
    parse_event,
    parse_state,
)

from . import devices


class InvariantError(AssertionError):
    """A parser broke an invariant (re-encoding changed the model, or it raised something else)."""


def _wire_configs() -> dict[str, dict[str, Any]]:
    return {
        "thermostat": dict(devices.simulated_thermostat("fuzz_thermostat", 1)),
        "fahrenheit": dict(
            devices.thermostat(
                "fuzz_f",
                measurements=devices.measurements("temperature"),
                hvac_modes=("off", "heat", "cool"),
                temperature_unit="°F",
                setpoint="single",
                min_temp=45,
                max_temp=95,
                temp_step=1,
                presets=("eco",),
                swing_modes=("on", "off"),
                events=("fault",),
            )
        ),
        "range_only": dict(
            devices.thermostat("fuzz_range", hvac_modes=("heat_cool",), setpoint="range", min_temp=5, max_temp=30)
        ),
        "sensor": dict(devices.simulated_sensor("fuzz_sensor", 1)),
    }


WIRE_CONFIGS = _wire_configs()
CONFIGS: dict[str, DeviceConfig] = {
    name: parse_config(devices.encode(raw), raw["id"]) for name, raw in WIRE_CONFIGS.items()
}


@dataclass(frozen=True)
class Target:
    """One parser, its encoder, and valid payloads to start from."""

    name: str
    parse: Callable[[bytes], object]
    encode: Callable[[Any], bytes] | None
    seeds: tuple[bytes, ...]


def _state_encoder(update: Any) -> bytes:  # noqa: ANN401 - a StateUpdate
    return encode_state(update.values, ts=update.ts, seq=update.seq)


def _seed(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _state(payload: bytes, config: DeviceConfig) -> object:
    return parse_state(payload, config)


def _set(payload: bytes, config: DeviceConfig) -> object:
    return parse_command(payload, config)


def _event(payload: bytes, config: DeviceConfig) -> object:
    return parse_event(payload, config)


def _targets() -> list[Target]:
    state_seeds = (
        _seed({"temperature": 20.5, "humidity": 40, "hvac_mode": "heat", "hvac_action": "heating", "ts": 1.8e9}),
        _seed({"target_temperature_low": 18, "target_temperature_high": 24, "preset": "eco", "seq": 3}),
        _seed({"co2": 640, "window_open": True, "low_battery": False, "pressure": 1013.2}),
    )
    command_seeds = (
        _seed({"id": "c1", "target_temperature": 21.5}),
        _seed({"id": "c-2", "hvac_mode": "cool", "fan_mode": "low", "target_humidity": 45}),
    )
    targets = [
        Target(
            "config",
            parse_config,
            encode_config,
            tuple(devices.encode(raw) for raw in WIRE_CONFIGS.values()),
        ),
        Target("availability", parse_availability, encode_availability, (b"online", b"offline")),
        Target(
            "ack",
            parse_ack,
            encode_ack,
            (_seed({"id": "c1", "status": "ok"}), _seed({"id": "c2", "status": "error", "reason": "busy", "ts": 2e9})),
        ),
        Target(
            "command_report",
            parse_command_report,
            encode_command_report,
            (
                _seed(
                    {
                        "id": "c1",
                        "values": {"target_temperature": 21},
                        "user": "auth0|a",
                        "status": "acked",
                        "reason": None,
                        "ts": 1.8e9,
                    }
                ),
            ),
        ),
    ]
    for name, config in CONFIGS.items():
        targets += [
            Target(f"state/{name}", functools.partial(_state, config=config), _state_encoder, state_seeds),
            Target(f"set/{name}", functools.partial(_set, config=config), encode_command, command_seeds),
            Target(
                f"event/{name}",
                functools.partial(_event, config=config),
                encode_event,
                (_seed({"event": "fault", "data": {"code": 3}}), _seed({"event": "button_press", "ts": 1.8e9})),
            ),
        ]
    return targets


TARGETS: list[Target] = _targets()
TARGETS_BY_NAME = {target.name: target for target in TARGETS}

DICTIONARY: tuple[str, ...] = (
    *(f'"{key}"' for key in sorted({k for raw in WIRE_CONFIGS.values() for k in raw})),
    *(f'"{key}"' for key in ("thermostat", "measurements", "hvac_modes", "setpoint", "min_temp", "max_temp")),
    *(f'"{key}"' for key in ("temperature", "humidity", "battery", "co2", "window_open", "target_temperature")),
    *(f'"{key}"' for key in ("target_temperature_low", "target_temperature_high", "hvac_mode", "preset", "id")),
    *(f'"{key}"' for key in ("status", "reason", "ts", "seq", "event", "data", "values", "user", "online")),
    '"heat"',
    '"off"',
    '"ok"',
    '"error"',
    '"°C"',
    '"°F"',
    "true",
    "false",
    "null",
    "1e308",
    "-0",
    "1.5",
    "[]",
    "{}",
)
"""Tokens of the wire format, for a coverage-guided fuzzer's mutations."""


def check(target: Target, data: bytes) -> bool:
    """Run ``data`` through ``target``; True when it parsed. Raises InvariantError when an invariant breaks."""
    try:
        model = target.parse(data)
    except ProtocolError:
        return False
    if target.encode is None:
        return True
    try:
        encoded = target.encode(model)
    except ValueError as err:  # e.g. a float the encoder refuses (never produced by a parser)
        raise InvariantError(f"{target.name}: the encoder refused a parsed model {model!r}: {err}") from err
    try:
        again = target.parse(encoded)
    except ProtocolError as err:
        raise InvariantError(f"{target.name}: re-encoded {model!r} as {encoded!r}, which is refused: {err}") from err
    if again != model:
        raise InvariantError(f"{target.name}: {data!r} parsed to {model!r}, its encoding {encoded!r} to {again!r}")
    return True
