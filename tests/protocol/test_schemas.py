"""docs/schemas agree with the parser: every valid fixture validates, context-free invalid ones do not.

The schemas are the documentation's machine-readable half, so they are checked against the
code's own key sets and enums too. Validation uses tests/protocol/jsonschema_lite.py, and also
the ``jsonschema`` package (with the draft 2020-12 metaschema) when it is installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from tests.protocol.jsonschema_lite import Validator
from thermo_bridge_protocol import (
    COMMAND_KEYS,
    MEASUREMENT_TYPES,
    HvacAction,
    HvacMode,
    Setpoint,
    ValueType,
    encode_config,
    encode_state,
)
from thermo_bridge_protocol.codec import _ACK_KEYS, _CONFIG_KEYS, _EVENT_KEYS, _THERMOSTAT_KEYS
from thermo_bridge_protocol.models import THERMOSTAT_ENUM_STATE, THERMOSTAT_NUMBER_STATE
from thermo_bridge_sim.simulator import Simulator

ROOT = Path(__file__).parent.parent.parent
SCHEMAS = ROOT / "docs" / "schemas"
FIXTURES = ROOT / "tests" / "fixtures" / "protocol"
KINDS = ("config", "state", "availability", "set", "ack", "event")
HAS_JSONSCHEMA = importlib.util.find_spec("jsonschema") is not None


def schema(kind: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS / f"{kind}.schema.json").read_text(encoding="utf-8"))
    return data


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
    """Errors from the lite validator, cross-checked with jsonschema when available."""
    errors = Validator(schema(kind)).errors(instance)
    if HAS_JSONSCHEMA:  # pragma: no cover - depends on the environment
        jsonschema = importlib.import_module("jsonschema")
        validator = jsonschema.Draft202012Validator(schema(kind))
        assert validator.is_valid(instance) == (not errors), (instance, errors)
    return errors


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_draft_2020_12_and_uses_known_keywords(kind: str) -> None:
    data = schema(kind)
    assert data["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert data["$id"] == f"urn:thermo-bridge:protocol:1:{kind}"
    assert "docs/protocol.md" in data["description"] or f"<base>/<device_id>/{kind}" in data["description"]
    Validator(data)  # raises on a keyword it does not implement
    if HAS_JSONSCHEMA:  # pragma: no cover
        jsonschema = importlib.import_module("jsonschema")
        jsonschema.Draft202012Validator.check_schema(data)


@pytest.mark.parametrize("kind", KINDS)
def test_every_valid_fixture_satisfies_its_schema(kind: str) -> None:
    for case in fixtures(kind)["valid"]:
        assert validate(kind, instance_of(kind, case)) == [], case["name"]


def test_device_fixtures_and_simulator_output_satisfy_the_schemas() -> None:
    for name, raw in fixtures("devices").items():
        if not name.startswith("_"):
            assert validate("config", raw) == [], name
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
}


@pytest.mark.parametrize("kind", ["config", "ack"])
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


def test_schema_enums_match_the_models() -> None:
    thermostat = schema("config")["$defs"]["thermostat"]["properties"]
    assert thermostat["hvac_modes"]["items"]["enum"] == [str(m) for m in HvacMode]
    assert thermostat["setpoint"]["enum"] == [str(s) for s in Setpoint]
    assert schema("state")["properties"]["hvac_action"]["enum"] == [*(str(a) for a in HvacAction), None]
    assert schema("set")["properties"]["hvac_mode"]["enum"] == [str(m) for m in HvacMode]


def test_lite_validator_catches_what_it_claims() -> None:
    """The validator itself must fail on violations, or the tests above prove nothing."""
    config = schema("config")
    validator = Validator(config)
    good = fixtures("devices")["thermostat"]
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "extra": 1})
    assert not validator.is_valid({**good, "schema": 2})
    assert not validator.is_valid({k: v for k, v in good.items() if k != "thermostat"})
    assert not validator.is_valid({**good, "id": "a/b"})
    assert not validator.is_valid({**good, "events": ["x", "x"]})
    assert not validator.is_valid({**good, "kind": "sensor"})  # a sensor must not have a thermostat block
    assert not validator.is_valid({**good, "expire_after": True})
    with pytest.raises(ValueError, match="unsupported keyword 'format'"):
        Validator({"type": "string", "format": "date-time"})
    with pytest.raises(ValueError, match="only local references"):
        Validator({"$ref": "other.json"}).errors(1)
    oneof = Validator({"oneOf": [{"type": "integer"}, {"type": "number"}], "not": {"const": 3}})
    assert oneof.is_valid(1.5)
    assert not oneof.is_valid(2)  # matches both
    assert not oneof.is_valid(3)
    assert not Validator(False).is_valid(None)  # type: ignore[arg-type]
    assert Validator({"items": {"type": "string"}, "minItems": 1, "maxItems": 2}).errors([1, "a", "b"]) == [
        "$: has more than 2 items",
        "$[0]: is not of type ['string']",
    ]
