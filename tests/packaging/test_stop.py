"""The add-on's stop sequence, on the real server process.

Under the base image's s6-overlay, ``docker stop`` ends with SIGTERM to the CMD and SIGKILL
``S6_KILL_GRACETIME`` ms later. The server must exit 0 inside that grace with everything it
received in the store: SIGTERM lands while the store's writer still has messages queued.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import Mosquitto, free_port
from tests.packaging.test_addon import dockerfile_env

MESSAGES = 2000
DEVICE = "stop_sensor"
CONFIG = {
    "schema": 1,
    "id": DEVICE,
    "kind": "sensor",
    "name": "Stop test sensor",
    "measurements": {"temperature": {"unit": "°C"}},
}


def received(port: int) -> float:
    """The server's count of MQTT messages taken in (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("thermo_bridge_mqtt_messages_in_total"):
                return float(line.split()[-1])
    return 0.0


def wait_until(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def server(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    database = tmp_path / "thermo_bridge.db"
    env = {
        **os.environ,
        "THERMO_BRIDGE_MQTT_HOST": mosquitto.host,
        "THERMO_BRIDGE_MQTT_PORT": str(mosquitto.port),
        "THERMO_BRIDGE_STORE_URL": f"sqlite:///{database}",
        "THERMO_BRIDGE_HTTP_PORT": str(port),
        "THERMO_BRIDGE_DEV_AUTH": "true",
        "THERMO_BRIDGE_DEV_KEY_PATH": str(tmp_path / "dev_key.pem"),
        "THERMO_BRIDGE_ZEROCONF": "false",
        "THERMO_BRIDGE_OPTIONS_FILE": "",
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "thermo_bridge_server"], env=env, stdout=log, stderr=log)
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200, "/health"
        )
        yield proc, port, database
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_sigterm_drains_and_flushes_within_the_s6_grace(
    server: tuple[subprocess.Popen[bytes], int, Path], mosquitto: Mosquitto, tmp_path: Path
) -> None:
    proc, port, database = server
    grace = int(dockerfile_env()["S6_KILL_GRACETIME"]) / 1000

    device = paho.Client(CallbackAPIVersion.VERSION2, client_id="stop-test-device")
    device.connect(mosquitto.host, mosquitto.port)
    device.loop_start()
    try:
        device.publish(f"thermo_bridge/{DEVICE}/config", json.dumps(CONFIG), qos=1, retain=True).wait_for_publish(10)
        wait_until(lambda: received(port) >= 1, "the config to reach the server")
        start = time.time()
        infos = [
            device.publish(
                f"thermo_bridge/{DEVICE}/state",
                json.dumps({"temperature": 20 + i / 1000, "seq": i, "ts": start + i / 1000}),
                qos=1,
            )
            for i in range(MESSAGES)
        ]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        device.loop_stop()
        device.disconnect()
    # SIGTERM as soon as the server has taken everything in, before its writer caught up.
    wait_until(lambda: received(port) >= MESSAGES + 1, "the server to receive every message")
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server was still running {grace} s after SIGTERM: s6 would SIGKILL it")
    took = time.monotonic() - stopped_at
    log = (tmp_path / "server.log").read_text()
    assert code == 0, log
    assert took < grace
    assert "Stopped" in log

    with contextlib.closing(sqlite3.connect(database)) as db:  # sqlite3's own context manager does not close
        (stored,) = db.execute("SELECT count(*) FROM history WHERE device_id = ?", (DEVICE,)).fetchone()
    assert stored == MESSAGES
