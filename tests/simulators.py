"""Simulators started for a test on its private broker, and stopped afterwards even when the test fails.

For the server and protocol tests only: it imports the simulator, hence the protocol under
its server name, which Home Assistant tests must not load (they run ``thermo-bridge-sim`` as
a process instead).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tests.broker import Mosquitto
from thermo_bridge_sim.simulator import Simulator

StartSim = Callable[..., Awaitable[Simulator]]
"""Start a simulator: keyword arguments as ``Simulator``'s, over the defaults given to ``simulators``."""


@contextlib.asynccontextmanager
async def simulators(broker: Mosquitto, **defaults: Any) -> AsyncIterator[StartSim]:
    """A starter of simulators on ``broker``; every one it started is stopped on exit."""
    started: list[Simulator] = []

    async def start(**kwargs: Any) -> Simulator:
        sim = Simulator(broker.host, broker.port, **{**defaults, **kwargs})
        started.append(sim)
        await asyncio.to_thread(sim.start)
        return sim

    try:
        yield start
    finally:
        for sim in started:
            await asyncio.to_thread(sim.stop)
