"""A private mosquitto for tests and benchmarks: free ports, a config file we write, real process.

Tests never touch the machine's own broker: each ``Mosquitto`` listens on loopback ports
picked at start, keeps its persistence file in its own folder (so a restart on the same
ports keeps persistent sessions and queued QoS 1 messages, like a production broker), and
is stopped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or a RuntimeError that says how to get it."""
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError(
        "mosquitto binary not found: run scripts/setup (it installs the Debian packages "
        f"'mosquitto' and 'mosquitto-clients') or install them yourself; {mosquitto_env_note()}"
    )


def find_mosquitto_passwd() -> str:
    """Path of mosquitto_passwd (package 'mosquitto'), or a RuntimeError that says how to get it."""
    for candidate in ("mosquitto_passwd", "/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd"):
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError("mosquitto_passwd not found: install the Debian package 'mosquitto' (scripts/setup does)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """One private broker process; ``start``/``stop``/``restart`` keep its ports and data."""

    def __init__(
        self,
        workdir: Path,
        *,
        websockets: bool = True,
        extra_config: str = "",
        users: dict[str, str] | None = None,
    ) -> None:
        """``users`` (name -> password) turns anonymous access off and writes a password file."""
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.ws_port = free_port() if websockets else None
        self.binary = find_mosquitto()
        self.config_file = workdir / "mosquitto.conf"
        self.log_file = workdir / "mosquitto.log"
        lines = [
            "per_listener_settings false",
            f"allow_anonymous {'false' if users else 'true'}",
            "persistence true",
            f"persistence_location {workdir}/",
            "autosave_interval 1",
            "max_queued_messages 1000000",
            "max_inflight_messages 100",
            "log_type error",
            "log_type warning",
            f"log_dest file {self.log_file}",
            f"listener {self.port} 127.0.0.1",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Started as root, mosquitto drops to the 'mosquitto' user, which cannot write the
            # log or the persistence file in a root-owned test folder (nor read a 0600 password
            # file): restarts would silently lose persistent sessions. Stay root instead.
            lines.insert(0, "user root")
        if users:
            password_file = workdir / "passwords"
            password_file.write_text("")
            for name, password in users.items():
                subprocess.run(
                    [find_mosquitto_passwd(), "-b", str(password_file), name, password],
                    check=True,
                    capture_output=True,
                )
            lines.insert(2, f"password_file {password_file}")
        if self.ws_port is not None:
            lines += [f"listener {self.ws_port} 127.0.0.1", "protocol websockets", "socket_domain ipv4"]
        self.config_file.write_text("\n".join(lines) + "\n" + extra_config)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://host:port``."""
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it accepts TCP connections."""
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                log = self.log_file.read_text() if self.log_file.exists() else ""
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {err}{log}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not accept connections on {self.port} within {timeout}s")

    def stop(self) -> None:
        """Stop the broker gracefully (it saves its persistence file)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop, stay down ``down_seconds``, start again on the same ports with the same data."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mosquitto_env_note() -> str:
    """For failure messages: where the binary was looked for."""
    return f"looked for {', '.join(CANDIDATES)} (PATH={os.environ.get('PATH', '')})"
