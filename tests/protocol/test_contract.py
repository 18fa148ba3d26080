"""The protocol contract: every fixture in tests/fixtures/protocol through the real parser.

Valid fixtures must parse to the expected model; invalid ones must raise ``ProtocolError``
with the expected reason (and message/path), and nothing else. Generated hostile inputs
(megabytes, thousands of digits, thousands of levels) and a seeded fuzz loop check that no
input makes a parser raise anything but ``ProtocolError``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from thermo_bridge_protocol import (
    MAX_PAYLOAD_BYTES,
    Ack,
    Command,
    CommandReport,
    DeviceConfig,
    DeviceEvent,
    ProtocolError,
    Reason,
    StateUpdate,
    decode_object,
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
from thermo_bridge_protocol.codec import MAX_DEPTH
from thermo_bridge_sim import devices

FIXTURES = Path(__file__).parent.parent / "fixtures" / "protocol"
KINDS = ("config", "state", "availability", "set", "ack", "event", "command")


def load(name: str) -> Any:
    """A fixture file: ``<kind>_cases.json`` for a message kind, else ``<name>.json``.

    (No fixture may be named config.json: the HA Supervisor takes any file of that name in
    the repository for an add-on manifest.)
    """
    file = f"{name}_cases.json" if name in KINDS else f"{name}.json"
    return json.loads((FIXTURES / file).read_text(encoding="utf-8"))


DEVICES: dict[str, DeviceConfig] = {
    name: parse_config(json.dumps(raw).encode(), raw["id"])
    for name, raw in load("devices").items()
    if not name.startswith("_")
}


def payload_of(case: dict[str, Any]) -> bytes:
    """The raw bytes of a fixture: a JSON value, raw text, or hex bytes."""
    if "payload_hex" in case:
        return bytes.fromhex(case["payload_hex"])
    if "payload_text" in case:
        return str(case["payload_text"]).encode("utf-8")
    return json.dumps(case["payload"], ensure_ascii=False, separators=(",", ":")).encode()


def as_expected(kind: str, model: object) -> object:
    """A parsed model in the shape of a fixture's ``expect``."""
    if isinstance(model, DeviceConfig):
        return model.as_dict()
    if isinstance(model, StateUpdate):
        return {"values": model.values, "ts": model.ts, "seq": model.seq}
    if isinstance(model, Command):
        return {"id": model.command_id, "values": model.values}
    if isinstance(model, Ack):
        return {"id": model.command_id, "status": str(model.status), "reason": model.reason, "ts": model.ts}
    if isinstance(model, DeviceEvent):
        return {"event": model.event_type, "data": model.data, "ts": model.ts}
    if isinstance(model, CommandReport):
        return {
            "id": model.command_id,
            "values": model.values,
            "user": model.user,
            "status": str(model.status),
            "reason": model.reason,
            "ts": model.ts,
        }
    assert kind == "availability"
    return model


def parser_for(kind: str, case: dict[str, Any]) -> Callable[[bytes], object]:
    device = DEVICES[case["device"]] if "device" in case else None
    match kind:
        case "config":
            return lambda payload: parse_config(payload, case.get("topic_id"))
        case "state":
            assert device is not None
            return lambda payload: parse_state(payload, device)
        case "availability":
            return parse_availability
        case "set":
            assert device is not None
            return lambda payload: parse_command(payload, device)
        case "ack":
            return parse_ack
        case "event":
            assert device is not None
            return lambda payload: parse_event(payload, device)
        case "command":
            return parse_command_report
    raise AssertionError(kind)


def cases(validity: str) -> Iterator[Any]:
    for kind in KINDS:
        for case in load(kind)[validity]:
            yield pytest.param(kind, case, id=f"{kind}: {case['name']}")


def test_every_kind_has_valid_and_invalid_fixtures() -> None:
    for kind in KINDS:
        data = load(kind)
        assert data["valid"], kind
        assert data["invalid"], kind
        names = [case["name"] for case in data["valid"] + data["invalid"]]
        assert len(names) == len(set(names)), f"duplicate fixture names in {kind}.json"


@pytest.mark.parametrize(("kind", "case"), cases("valid"))
def test_valid_fixture_parses_to_expected_model(kind: str, case: dict[str, Any]) -> None:
    model = parser_for(kind, case)(payload_of(case))
    assert as_expected(kind, model) == case["expect"]


@pytest.mark.parametrize(("kind", "case"), cases("invalid"))
def test_invalid_fixture_is_rejected_with_its_reason(kind: str, case: dict[str, Any]) -> None:
    expected = case["error"]
    with pytest.raises(ProtocolError) as info:
        parser_for(kind, case)(payload_of(case))
    err = info.value
    assert err.reason == Reason(expected["reason"]), str(err)
    assert expected.get("message", "") in str(err)
    if "path" in expected:
        assert err.path == expected["path"]
    # Error texts are safe to log and to store: printable and encodable.
    assert str(err).isprintable()
    str(err).encode("utf-8")


@pytest.mark.parametrize(("kind", "case"), [p for p in cases("valid") if p.values[0] != "availability"])
def test_valid_fixture_round_trips_through_the_encoder(kind: str, case: dict[str, Any]) -> None:
    """Encoding a parsed model and parsing it again gives the same model (what the simulator relies on)."""
    parse = parser_for(kind, case)
    model = parse(payload_of(case))
    match model:
        case DeviceConfig():
            encoded = encode_config(model)
        case StateUpdate():
            encoded = encode_state(model.values, ts=model.ts, seq=model.seq)
        case Command():
            encoded = encode_command(model)
        case Ack():
            encoded = encode_ack(model)
        case DeviceEvent():
            encoded = encode_event(model)
        case CommandReport():
            encoded = encode_command_report(model)
        case _:
            raise AssertionError(model)
    assert parse(encoded) == model


def test_availability_encoder_matches_parser() -> None:
    assert parse_availability(encode_availability(online=True)) is True
    assert parse_availability(encode_availability(online=False)) is False


def test_encoders_refuse_non_finite_numbers() -> None:
    """A device using our encoder can never emit NaN, which no JSON parser accepts."""
    with pytest.raises(ValueError, match="Out of range float"):
        encode_state({"temperature": float("nan")})
    with pytest.raises(ValueError, match="Out of range float"):
        encode_event(DeviceEvent("fault", {"x": float("inf")}))
    report = parse_command_report(payload_of(load("command")["valid"][0]))
    with pytest.raises(ValueError, match="Out of range float"):
        encode_command_report(dataclasses.replace(report, values={"target_temperature": float("nan")}))


# ---------------------------------------------------------------------- generated hostile inputs

ALL_PARSERS: dict[str, Callable[[bytes], object]] = {
    "config": parse_config,
    "state": lambda p: parse_state(p, DEVICES["thermostat"]),
    "sensor_state": lambda p: parse_state(p, DEVICES["sensor"]),
    "set": lambda p: parse_command(p, DEVICES["thermostat"]),
    "ack": parse_ack,
    "event": lambda p: parse_event(p, DEVICES["thermostat"]),
    "command": parse_command_report,
}


@pytest.mark.parametrize("name", ALL_PARSERS)
def test_multi_megabyte_payload_is_rejected_before_decoding(name: str) -> None:
    payload = b'{"temperature":' + b" " * (3 * 1024 * 1024) + b"21}"
    with pytest.raises(ProtocolError) as info:
        ALL_PARSERS[name](payload)
    assert info.value.reason is Reason.TOO_LARGE
    assert f"limit is {MAX_PAYLOAD_BYTES}" in str(info.value)


def test_multi_megabyte_availability_is_rejected() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_availability(b"online" * 500_000)
    assert info.value.reason is Reason.INVALID_VALUE


def test_payload_at_the_limit_is_accepted_and_one_byte_more_is_not() -> None:
    head, tail = b'{"co2":', b"400}"
    at_limit = head + b" " * (MAX_PAYLOAD_BYTES - len(head) - len(tail)) + tail
    assert len(at_limit) == MAX_PAYLOAD_BYTES
    assert parse_state(at_limit, DEVICES["sensor"]).values == {"co2": 400.0}
    with pytest.raises(ProtocolError) as info:
        parse_state(at_limit[:-1] + b" }", DEVICES["sensor"])
    assert info.value.reason is Reason.TOO_LARGE


def test_integer_with_5000_digits_is_out_of_range() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_state(b'{"co2":' + b"9" * 5000 + b"}", DEVICES["sensor"])
    assert info.value.reason is Reason.OUT_OF_RANGE
    assert "too large" in str(info.value)


def test_integer_with_400_digits_is_out_of_range_as_a_measurement() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_state(b'{"co2":' + b"9" * 400 + b"}", DEVICES["sensor"])
    assert info.value.reason is Reason.OUT_OF_RANGE


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100, 10_000])
def test_deeply_nested_objects_are_too_deep(depth: int) -> None:
    payload = b'{"a":' * depth + b"1" + b"}" * depth
    assert len(payload) <= MAX_PAYLOAD_BYTES
    for name, parse in ALL_PARSERS.items():
        with pytest.raises(ProtocolError) as info:
            parse(payload)
        assert info.value.reason is Reason.TOO_DEEP, name


def test_deep_array_inside_an_object_is_too_deep() -> None:
    depth = 30_000
    payload = b'{"co2":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(ProtocolError) as info:
        parse_state(payload, DEVICES["sensor"])
    assert info.value.reason is Reason.TOO_DEEP


def test_nesting_at_the_limit_is_not_too_deep() -> None:
    """MAX_DEPTH levels decode (the parser then rejects the shape, not the depth)."""
    payload = b'{"a":' * (MAX_DEPTH - 1) + b"{}" + b"}" * (MAX_DEPTH - 1)
    assert decode_object(payload)
    with pytest.raises(ProtocolError) as info:
        parse_state(payload, DEVICES["sensor"])
    assert info.value.reason is Reason.UNKNOWN_KEY


def test_many_flat_containers_are_not_too_deep() -> None:
    """The depth check counts levels, not containers."""
    payload = b'{"event":"fault","data":{}}'
    wide = b'{"x":[' + b",".join([b"[]"] * 500) + b"]}"
    assert decode_object(wide)["x"] == [[]] * 500
    assert parse_event(payload, DEVICES["thermostat"]).event_type == "fault"


@pytest.mark.parametrize("depth", [500, 20_000])
def test_top_level_deep_array_is_too_deep(depth: int) -> None:
    """The same reason on every Python: 3.13's decoder gives up with RecursionError, 3.14's does not."""
    with pytest.raises(ProtocolError) as info:
        decode_object(b"[" * depth + b"]" * depth)
    assert info.value.reason is Reason.TOO_DEEP


def test_shallow_array_is_not_an_object() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_object(b"[[1], [2], [3], [4], [5], [6], [7], [8], [9]]")
    assert info.value.reason is Reason.NOT_OBJECT


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"])
def test_invalid_utf8_anywhere_is_not_utf8(bad: bytes) -> None:
    for payload in (bad + b"{}", b'{"name":"' + bad + b'"}', b"{}" + bad):
        for name, parse in ALL_PARSERS.items():
            with pytest.raises(ProtocolError) as info:
                parse(payload)
            assert info.value.reason is Reason.NOT_UTF8, name


def test_decode_object_custom_limit() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_object(b'{"a":1}', max_bytes=4)
    assert info.value.reason is Reason.TOO_LARGE


def test_error_path_and_message_are_kept_apart() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_state(b'{"co2":-5}', DEVICES["sensor"])
    err = info.value
    assert err.path == "co2"
    assert err.message.startswith("-5 is outside")
    assert str(err) == f"co2: {err.message}"
    assert isinstance(err, ValueError)


def test_error_text_escapes_control_characters() -> None:
    err = ProtocolError(Reason.UNKNOWN_KEY, "bad\nline", path="k\x1b")
    assert err.message == "bad\\nline"
    assert err.path == "k\\x1b"


# ---------------------------------------------------------------------- fuzz

HOSTILE_VALUES: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**63,
    -(2**70),
    1e308,
    -1e-308,
    "",
    " ",
    "x" * 300,
    "\u0000",
    "\ud800",
    "+",
    "#",
    "a/b",
    "heat",
    "°C",
    [],
    [None],
    {},
    {"a": {"b": {"c": {"d": {"e": {"f": {"g": {}}}}}}}},
]


def _mutate_value(rnd: random.Random, value: object) -> object:
    """Replace one random leaf (or key) of a JSON value by a hostile one."""
    if isinstance(value, dict) and value:
        out = dict(value)
        key = rnd.choice(list(out))
        roll = rnd.random()
        if roll < 0.15:
            del out[key]
        elif roll < 0.3:
            out[rnd.choice(["zzz", "", "id", "schema", "ts", "seq", key.upper()])] = rnd.choice(HOSTILE_VALUES)
        else:
            out[key] = _mutate_value(rnd, out[key])
        return out
    if isinstance(value, list) and value:
        out_list = list(value)
        index = rnd.randrange(len(out_list))
        out_list[index] = _mutate_value(rnd, out_list[index])
        return out_list
    return rnd.choice(HOSTILE_VALUES)


def _mutate_bytes(rnd: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.random()
        pos = rnd.randrange(len(data) + 1)
        if op < 0.4 and data:
            data[min(pos, len(data) - 1)] = rnd.randrange(256)
        elif op < 0.7:
            data[pos:pos] = bytes([rnd.randrange(256)])
        elif data:
            del data[min(pos, len(data) - 1)]
    return bytes(data)


def _valid_payloads() -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for kind in KINDS:
        out[kind] = [case["payload"] for case in load(kind)["valid"] if "payload" in case]
    out["config"] += [raw for name, raw in load("devices").items() if not name.startswith("_")]
    return out


def _check_only_protocol_errors(parse: Callable[[bytes], object], payload: bytes) -> None:
    """Anything but ProtocolError propagates and fails the test with the payload in the traceback."""
    error: ProtocolError | None = None
    try:
        parse(payload)
    except ProtocolError as err:
        error = err
    if error is not None:
        assert isinstance(error.reason, Reason)
        str(error).encode("utf-8")  # always encodable


def _state(payload: bytes, config: DeviceConfig) -> object:
    return parse_state(payload, config)


def _command(payload: bytes, config: DeviceConfig) -> object:
    return parse_command(payload, config)


def _event(payload: bytes, config: DeviceConfig) -> object:
    return parse_event(payload, config)


def test_fuzz_structural_mutations_only_raise_protocol_error() -> None:
    rnd = random.Random(20261122)
    valid = _valid_payloads()
    parsers: dict[str, list[Callable[[bytes], object]]] = {
        "config": [parse_config],
        "state": [functools.partial(_state, config=d) for d in DEVICES.values()],
        "set": [functools.partial(_command, config=d) for d in DEVICES.values()],
        "ack": [parse_ack],
        "event": [functools.partial(_event, config=d) for d in DEVICES.values()],
        "command": [parse_command_report],
    }
    accepted = rejected = 0
    for _ in range(3000):
        kind = rnd.choice(list(parsers))
        value = rnd.choice(valid[kind])
        for _ in range(rnd.randint(1, 3)):
            value = _mutate_value(rnd, value)
        payload = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
        for parse in parsers[kind]:
            try:
                parse(payload)
                accepted += 1
            except ProtocolError:
                rejected += 1
    # The mutations must exercise both outcomes, or the loop tests nothing.
    assert accepted > 100
    assert rejected > 1000


def test_fuzz_byte_mutations_and_random_bytes_only_raise_protocol_error() -> None:
    rnd = random.Random(7)
    seeds = [
        json.dumps(value, ensure_ascii=False).encode() for values in _valid_payloads().values() for value in values
    ]
    parsers = [*ALL_PARSERS.values(), parse_availability]
    for _ in range(2500):
        random_bytes = rnd.random() < 0.2
        payload = rnd.randbytes(rnd.randint(0, 200)) if random_bytes else _mutate_bytes(rnd, rnd.choice(seeds))
        for parse in parsers:
            _check_only_protocol_errors(parse, payload)


def test_too_many_names_are_out_of_range() -> None:
    events = [f"e{i}" for i in range(65)]
    config = devices.sensor("a", name="A", measurements=devices.measurements("co2"), events=events)
    with pytest.raises(ProtocolError) as info:
        parse_config(json.dumps(config).encode())
    assert info.value.reason is Reason.OUT_OF_RANGE
    assert info.value.path == "events"
    config["events"] = events[:64]
    assert len(parse_config(json.dumps(config).encode()).events) == 64


def test_recursion_error_from_the_json_decoder_is_too_deep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.13 (the oldest HA we support) raises RecursionError on deep input; 3.14 does not."""

    def deep(*args: object, **kwargs: object) -> object:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("thermo_bridge_protocol.codec._DECODER.decode", deep)
    with pytest.raises(ProtocolError) as info:
        decode_object(b"{}")
    assert info.value.reason is Reason.TOO_DEEP
