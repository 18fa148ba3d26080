"""docs/schemas agree with the parser: every valid fixture validates, context-free invalid ones do not.

The schemas are the documentation's machine-readable half, so they are checked against the
code's own key sets and enums too. Validation is the ``jsonschema`` package's Draft 2020-12
validator; every keyword a schema uses must be one that validator asserts (or a pure
annotation), so no part of a schema can pass by being silently ignored.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs installed

from thermo_bridge_protocol import (
    COMMAND_KEYS,
    MEASUREMENT_TYPES,
    CommandStatus,
    HvacAction,
    HvacMode,
    Setpoint,
    ValueType,
    encode_config,
    encode_state,
)
from thermo_bridge_protocol.codec import _ACK_KEYS, _CONFIG_KEYS, _EVENT_KEYS, _REPORT_KEYS, _THERMOSTAT_KEYS
from thermo_bridge_protocol.models import THERMOSTAT_ENUM_STATE, THERMOSTAT_NUMBER_STATE
from thermo_bridge_sim import devices
from thermo_bridge_sim.simulator import Simulator

ROOT = Path(__file__).parent.parent.parent
SCHEMAS = ROOT / "docs" / "schemas"
FIXTURES = ROOT / "tests" / "fixtures" / "protocol"
KINDS = ("config", "state", "availability", "set", "ack", "event", "command")

ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples"})
ASSERTED = (frozenset(Draft202012Validator.VALIDATORS) | {"then", "else"}) - {"format"}
"""Keywords the validator checks: ``then``/``else`` go with ``if``; ``format`` only annotates (no format checker)."""
SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
SCHEMAS_IN = ("additionalProperties", "propertyNames", "items", "contains", "not", "if", "then", "else")
# The Supervisor reads every file named config.* in the repository as an add-on manifest.
SCHEMA_FILES = {"config": "device-config.schema.json"}


def schema(kind: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (SCHEMAS / SCHEMA_FILES.get(kind, f"{kind}.schema.json")).read_text(encoding="utf-8")
    )
    return data


@functools.cache
def validator(kind: str) -> Any:
    return Draft202012Validator(schema(kind))


def unasserted_keywords(node: object, path: str = "#") -> list[str]:
    """Every keyword in the schema ``node`` that the validator would not check, as 'path: keyword'."""
    if isinstance(node, bool):
        return []
    assert isinstance(node, dict), f"{path}: a schema must be an object or a boolean"
    found = []
    for key, value in node.items():
        if key not in ASSERTED and key not in ANNOTATIONS:
            found.append(f"{path}: {key}")
        elif key in SCHEMA_MAPS:
            for name, sub in value.items():
                found += unasserted_keywords(sub, f"{path}/{key}/{name}")
        elif key in SCHEMA_LISTS:
            for index, sub in enumerate(value):
                found += unasserted_keywords(sub, f"{path}/{key}/{index}")
        elif key in SCHEMAS_IN:
            found += unasserted_keywords(value, f"{path}/{key}")
    return found


def fixtures(kind: str) -> dict[str, Any]:
    file = f"{kind}_cases.json" if kind in KINDS else f"{kind}.json"  # never config.json (Supervisor)
    data: dict[str, Any] = json.loads((FIXTURES / file).read_text(encoding="utf-8"))
    return data


def instance_of(kind: str, case: dict[str, Any]) -> object:
    """The JSON value a fixture carries (availability: the payload's text), or a sentinel when it is not JSON."""
    if kind == "availability":
        if "payload_hex" in case:
            return bytes.fromhex(case["payload_hex"]).decode("utf-8", "replace")
        return case["payload_text"] if "payload_text" in case else json.dumps(case["payload"])
    if "payload" in case:
        return case["payload"]
    return NOT_JSON


NOT_JSON = object()


def validate(kind: str, instance: object) -> list[str]:
    """Every violation of the ``kind`` schema, as 'location: problem'; empty when ``instance`` is valid."""
    return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(kind).iter_errors(instance)]


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_draft_2020_12_and_uses_known_keywords(kind: str) -> None:
    data = schema(kind)
    assert data["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert data["$id"] == f"urn:thermo-bridge:protocol:1:{kind}"
    assert "docs/protocol.md" in data["description"] or f"<base>/<device_id>/{kind}" in data["description"]
    assert unasserted_keywords(data) == []
    Draft202012Validator.check_schema(data)


@pytest.mark.parametrize("kind", KINDS)
def test_every_valid_fixture_satisfies_its_schema(kind: str) -> None:
    for case in fixtures(kind)["valid"]:
        assert validate(kind, instance_of(kind, case)) == [], case["name"]


def test_device_fixtures_factories_and_simulator_output_satisfy_the_schemas() -> None:
    for name, raw in fixtures("devices").items():
        if not name.startswith("_"):
            assert validate("config", raw) == [], name
    for config in (
        devices.simulated_thermostat("sim_thermostat_1", 1),
        devices.simulated_sensor("sim_sensor_1", 1),
        devices.bench_thermostat("bench_t_00001", 1),
        devices.thermostat("minimal"),
        devices.sensor("minimal", measurements=devices.measurements("temperature")),
    ):
        assert validate("config", config) == [], config["id"]
    sim = Simulator(thermostats=1, sensors=1, seed=1)
    for device in sim.devices.values():
        assert validate("config", json.loads(encode_config(device.config))) == []
        report = json.loads(encode_state(device.state, ts=1767225600.0, seq=1))
        assert validate("state", report) == []


# Invalid fixtures the schemas cannot reject: they need the topic, the device's own config or
# relations between fields, which the parser checks on top of the schema.
CONTEXTUAL = {
    "config": {
        "id differs from topic",
        "min_temp above max_temp",
        "humidity range inverted",
    },
    "ack": set(),
    "command": set(),
}


@pytest.mark.parametrize("kind", ["config", "ack", "command"])
def test_context_free_invalid_fixtures_fail_their_schema(kind: str) -> None:
    passed = []
    for case in fixtures(kind)["invalid"]:
        instance = instance_of(kind, case)
        if instance is NOT_JSON:
            continue
        if not validate(kind, instance):
            passed.append(case["name"])
    assert sorted(passed) == sorted(CONTEXTUAL[kind])


def test_availability_schema_rejects_every_invalid_fixture() -> None:
    for case in fixtures("availability")["invalid"]:
        assert validate("availability", instance_of("availability", case)), case["name"]


@pytest.mark.parametrize("kind", ["state", "set", "event"])
def test_invalid_fixtures_the_schema_accepts_are_contextual(kind: str) -> None:
    """What the schema accepts but the parser rejects must be a capability question, not a shape one."""
    contextual_reasons = {"not_supported", "invalid_value", "missing_key", "unknown_key", "out_of_range"}
    for case in fixtures(kind)["invalid"]:
        instance = instance_of(kind, case)
        if instance is not NOT_JSON and not validate(kind, instance):
            assert case["error"]["reason"] in contextual_reasons, case["name"]


def test_schemas_list_exactly_the_keys_the_parser_knows() -> None:
    config = schema("config")
    assert set(config["properties"]) == _CONFIG_KEYS
    assert set(config["$defs"]["thermostat"]["properties"]) == _THERMOSTAT_KEYS
    assert set(config["properties"]["measurements"]["properties"]) == set(MEASUREMENT_TYPES)
    for key, mtype in MEASUREMENT_TYPES.items():
        spec = config["properties"]["measurements"]["properties"][key]
        if mtype.value_type is ValueType.NUMBER:
            assert spec["properties"]["unit"]["enum"] == list(mtype.units), key
    state_keys = {"ts", "seq", *MEASUREMENT_TYPES, *THERMOSTAT_NUMBER_STATE, *THERMOSTAT_ENUM_STATE}
    assert set(schema("state")["properties"]) == state_keys
    for key, mtype in MEASUREMENT_TYPES.items():
        prop = schema("state")["properties"][key]
        if mtype.value_type is ValueType.NUMBER:
            assert (prop["minimum"], prop["maximum"]) == (mtype.minimum, mtype.maximum), key
        else:
            assert prop["type"] == ["boolean", "null"]
    assert set(schema("set")["properties"]) == {"id", *COMMAND_KEYS}
    assert set(schema("ack")["properties"]) == _ACK_KEYS
    assert set(schema("event")["properties"]) == _EVENT_KEYS
    assert set(schema("command")["properties"]) == _REPORT_KEYS
    assert set(schema("command")["properties"]["values"]["properties"]) == set(COMMAND_KEYS)


def test_schema_enums_match_the_models() -> None:
    thermostat = schema("config")["$defs"]["thermostat"]["properties"]
    assert thermostat["hvac_modes"]["items"]["enum"] == [str(m) for m in HvacMode]
    assert thermostat["setpoint"]["enum"] == [str(s) for s in Setpoint]
    assert schema("state")["properties"]["hvac_action"]["enum"] == [*(str(a) for a in HvacAction), None]
    assert schema("set")["properties"]["hvac_mode"]["enum"] == [str(m) for m in HvacMode]
    assert schema("command")["properties"]["values"]["properties"]["hvac_mode"]["enum"] == [str(m) for m in HvacMode]
    assert schema("command")["properties"]["status"]["enum"] == [str(s) for s in CommandStatus]


def test_validation_catches_what_it_claims() -> None:
    """The schema fails violations and the keyword check finds unchecked keywords, or the tests above prove nothing."""
    good = fixtures("devices")["thermostat"]
    assert validate("config", good) == []
    assert validate("config", {**good, "extra": 1})
    assert validate("config", {**good, "schema": 2})
    assert validate("config", {k: v for k, v in good.items() if k != "thermostat"})
    assert validate("config", {**good, "id": "a/b"})
    assert validate("config", {**good, "events": ["x", "x"]})
    assert validate("config", {**good, "kind": "sensor"})  # a sensor must not have a thermostat block
    assert validate("config", {**good, "expire_after": True})
    assert validate("config", {**good, "name": 3}) == ["/name: 3 is not of type 'string'"]
    assert unasserted_keywords({"type": "string", "format": "date-time"}) == ["#: format"]
    assert unasserted_keywords({"properties": {"a": {"requird": ["b"]}}, "then": {"x-note": 1}}) == [
        "#/properties/a: requird",
        "#/then: x-note",
    ]
