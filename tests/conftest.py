"""Fixtures shared by every test folder (no Home Assistant import here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Mosquitto

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private mosquitto (MQTT + WebSocket listeners on free loopback ports), stopped afterwards."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()
