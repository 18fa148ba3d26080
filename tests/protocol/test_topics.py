"""Topic layout and id validation, from tests/fixtures/protocol/topics.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from thermo_bridge_protocol import (
    MessageKind,
    ProtocolError,
    Reason,
    device_topic,
    split_topic,
    validate_base_topic,
    validate_device_id,
    wildcard_topic,
)

TOPICS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "protocol" / "topics.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("device_id", TOPICS["device_ids"]["valid"])
def test_valid_device_ids(device_id: str) -> None:
    assert validate_device_id(device_id) == device_id


@pytest.mark.parametrize("device_id", TOPICS["device_ids"]["invalid"])
def test_invalid_device_ids(device_id: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_device_id(device_id)
    assert info.value.reason is Reason.INVALID_DEVICE_ID
    assert "1-64 characters" in str(info.value)


@pytest.mark.parametrize("value", [None, 5, b"dev", ["dev"]])
def test_device_id_must_be_a_string(value: object) -> None:
    with pytest.raises(ProtocolError, match="must be a string") as info:
        validate_device_id(value)
    assert info.value.reason is Reason.INVALID_DEVICE_ID


def test_long_invalid_id_is_truncated_in_the_message() -> None:
    with pytest.raises(ProtocolError) as info:
        validate_device_id("#" * 10_000)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("case", TOPICS["split"], ids=lambda c: c["topic"])
def test_split_topic(case: dict[str, Any]) -> None:
    if "expect" in case:
        device_id, kind = split_topic(case["base"], case["topic"])
        assert [device_id, str(kind)] == case["expect"]
        assert device_topic(case["base"], device_id, kind) == case["topic"]
    else:
        with pytest.raises(ProtocolError) as info:
            split_topic(case["base"], case["topic"])
        assert info.value.reason == Reason(case["error"])


@pytest.mark.parametrize(("given", "normalised"), TOPICS["base_topics"]["valid"])
def test_valid_base_topics(given: str, normalised: str) -> None:
    assert validate_base_topic(given) == normalised


@pytest.mark.parametrize("base", TOPICS["base_topics"]["invalid"])
def test_invalid_base_topics(base: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_base_topic(base)
    assert info.value.reason is Reason.INVALID_TOPIC


def test_topic_builders_cover_every_kind() -> None:
    for kind in MessageKind:
        assert device_topic("tb", "d1", kind) == f"tb/d1/{kind}"
        assert wildcard_topic("tb", kind) == f"tb/+/{kind}"
        assert split_topic("tb", device_topic("tb", "d1", kind)) == ("d1", kind)
