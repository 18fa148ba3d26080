"""A bare ingest process (transport + ingest + SQLite store) for crash tests: ``python -m tests.server.ingest_worker``.

Arguments: broker host, port, store URL, client id, and optionally an MQTT v5 shared
subscription group and the session expiry in seconds. Prints ``ready`` once subscribed, then
runs until killed (the test kills it with SIGKILL mid-stream, or SIGTERM for a clean stop).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from thermo_bridge_server.config import MqttSettings
from thermo_bridge_server.ingest import Ingest
from thermo_bridge_server.mqtt import MqttTransport
from thermo_bridge_server.store import create_store


async def main(
    host: str, port: int, store_url: str, client_id: str, shared_group: str | None = None, session_expiry: int = 86_400
) -> None:
    store = create_store(store_url, retention_days=30, dead_letter_limit=100)
    await store.open()
    settings = MqttSettings(
        host=host,
        port=port,
        client_id=client_id,
        reconnect_min=0.05,
        shared_group=shared_group,
        session_expiry=session_expiry,
    )
    transport = MqttTransport(settings)
    ingest = Ingest(store, transport, base_topic="thermo_bridge", shared_group=shared_group)
    await transport.connect(wait_seconds=10)
    await ingest.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await ingest.stop()
    await transport.disconnect()
    await store.close()


if __name__ == "__main__":
    group = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
    expiry = int(sys.argv[6]) if len(sys.argv) > 6 else 86_400
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], group, expiry))
