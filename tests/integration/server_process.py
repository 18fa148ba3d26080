"""The real Thermo Bridge server as a process, for the integration's server-link tests.

``python -m thermo_bridge_server`` with dev auth on loopback, its SQLite database and internal
token in a temporary folder, connected to the test's mosquitto. Run as a process (not imported)
so this HA test process keeps one identity of the protocol (custom_components.thermo_bridge.protocol).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.broker import Mosquitto, free_port

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


@dataclass
class ServerProcess:
    """One server; ``start()``/``stop()`` are blocking (call them in an executor)."""

    workdir: Path
    broker: Mosquitto
    base_topic: str = "thermo_bridge"
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    """More THERMO_BRIDGE_* settings (e.g. the browser tests' ingress)."""

    @property
    def token_path(self) -> Path:
        return self.workdir / "internal_token"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def token(self) -> str:
        """The internal token the server created at its first start."""
        return self.token_path.read_text().strip()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def discovery_config(self) -> dict[str, Any]:
        """What the add-on posts to the Supervisor (and HA core hands to async_step_hassio)."""
        return {
            "host": self.host,
            "port": self.port,
            "api_path": "/api/v1",
            "base_topic": self.base_topic,
            "token": self.token,
            "addon": "Thermo Bridge",
        }

    def start(self) -> None:
        """Start and wait until the status endpoint answers (the assembled server, not the stand-in)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "THERMO_BRIDGE_OPTIONS_FILE": "",
            "THERMO_BRIDGE_MQTT_HOST": self.broker.host,
            "THERMO_BRIDGE_MQTT_PORT": str(self.broker.port),
            "THERMO_BRIDGE_MQTT_CLIENT_ID": f"tb_server_{self.port}",
            "THERMO_BRIDGE_BASE_TOPIC": self.base_topic,
            "THERMO_BRIDGE_STORE_URL": f"sqlite:///{self.workdir / 'server.db'}",
            "THERMO_BRIDGE_HTTP_HOST": self.host,
            "THERMO_BRIDGE_HTTP_PORT": str(self.port),
            "THERMO_BRIDGE_DEV_AUTH": "true",
            "THERMO_BRIDGE_DEV_KEY_PATH": str(self.workdir / "dev_key.pem"),
            "THERMO_BRIDGE_INTERNAL_TOKEN_PATH": str(self.token_path),
            "THERMO_BRIDGE_ZEROCONF": "false",
            "THERMO_BRIDGE_COMMAND_TIMEOUT": "5",
            **self.env,
        }
        env.pop("SUPERVISOR_TOKEN", None)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "thermo_bridge_server"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.log_path.read_text()}")
            if self.token_path.exists() and self._status_code() == 200:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start: {self.log_path.read_text()}")
            time.sleep(0.1)

    def _status_code(self) -> int | None:
        # http://127.0.0.1:<port> built here, never a caller's scheme.
        request = urllib.request.Request(  # noqa: S310
            f"{self.url}/internal/v1/status", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return None

    def stop(self) -> None:
        """SIGTERM (the server drains and flushes), SIGKILL if it hangs."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def mint(self, sub: str, *permissions: str) -> str:
        """An access token from the server's dev issuer (``thermo-bridge-token``, the real CLI)."""
        command = [
            sys.executable,
            "-m",
            "thermo_bridge_server.auth.devauth",
            "--key",
            str(self.workdir / "dev_key.pem"),
            "--issuer",
            f"http://localhost:{self.port}/",
            "--sub",
            sub,
            "--homes",
            "default",
            "--permissions",
            *permissions,
        ]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()

    def request(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        """One API call (blocking); (status, JSON body)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())
