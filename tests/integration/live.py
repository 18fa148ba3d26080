"""What the tests on a real broker share: the simulator's process and how long to wait."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.broker import Mosquitto

THERMOSTAT = "e2e_thermostat_1"
SENSOR = "e2e_sensor_1"
WAIT = 15.0
"""Upper bound for conditions that normally hold within milliseconds (a loaded CI box is slow)."""


def start_simulator(broker: Mosquitto, log: Path) -> subprocess.Popen[bytes]:
    """``thermo-bridge-sim`` (as ``python -m``, so in this interpreter's environment), output into ``log``."""
    devices = ("--thermostats", "1", "--sensors", "1", "--id-prefix", "e2e", "--seed", "7")
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "thermo_bridge_sim", "--host", broker.host, "--port", str(broker.port), *devices],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
