"""The zeroconf advertisement across a network boundary: two network namespaces joined by a veth pair.

The server runs in one namespace (bound to all addresses, as on a LAN host), a python-zeroconf
browser in the other resolves ``_thermo-bridge._tcp.local.`` and fetches ``/health/live`` at the
address and port the advertisement gives. Namespaces need root: this machine and CI run the
tests as root, so there it must run; elsewhere it is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.broker import find_mosquitto

BROWSER = textwrap.dedent(
    """
    import asyncio, json, sys, urllib.request
    from zeroconf import ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    TYPE = "_thermo-bridge._tcp.local."

    async def main():
        azc = AsyncZeroconf()
        loop = asyncio.get_running_loop()
        found = loop.create_future()

        def handler(zeroconf, service_type, name, state_change):
            if state_change is ServiceStateChange.Added and not found.done():
                found.set_result(name)

        browser = AsyncServiceBrowser(azc.zeroconf, [TYPE], handlers=[handler])
        name = await asyncio.wait_for(found, 60)
        info = AsyncServiceInfo(TYPE, name)
        assert await info.async_request(azc.zeroconf, 5000), "no answer to the service query"
        addresses = info.parsed_addresses()
        url = f"http://{addresses[0]}:{info.port}/health/live"
        live = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(url, timeout=10).read()))
        props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
        print(json.dumps({"addresses": addresses, "port": info.port, "properties": props, "live": live}))
        await browser.async_cancel()
        await azc.async_close()

    asyncio.run(main())
    """
)


@dataclass(frozen=True)
class Namespaces:
    server: str
    browser: str
    server_address: str
    browser_address: str


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    """Two fresh namespaces on one link, multicast routed on it; removed afterwards, even on failure."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        reason = "network namespaces need root and iproute2 (ip)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the zeroconf test")
        pytest.skip(reason)
    tag = secrets.token_hex(3)
    ns = Namespaces(f"tb-srv-{tag}", f"tb-cli-{tag}", "", "")
    subnet = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}"
    ns = Namespaces(ns.server, ns.browser, f"{subnet}.1", f"{subnet}.2")
    veth_server, veth_browser = f"tbs{tag}", f"tbc{tag}"
    try:
        ip("netns", "add", ns.server)
        ip("netns", "add", ns.browser)
        ip("link", "add", veth_server, "type", "veth", "peer", "name", veth_browser)
        for name, veth, address in (
            (ns.server, veth_server, ns.server_address),
            (ns.browser, veth_browser, ns.browser_address),
        ):
            ip("link", "set", veth, "netns", name)
            ip("-n", name, "addr", "add", f"{address}/24", "dev", veth)
            ip("-n", name, "link", "set", veth, "up")
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", name, "route", "add", "224.0.0.0/4", "dev", veth)
        yield ns
    finally:
        for name in (ns.server, ns.browser):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False, timeout=10)


def test_a_browser_in_another_namespace_finds_and_reaches_the_server(namespaces: Namespaces, tmp_path: Path) -> None:
    in_server = ["ip", "netns", "exec", namespaces.server]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener 1883 127.0.0.1\nallow_anonymous true\nuser root\nlog_dest file {tmp_path / 'mq.log'}\n")
    broker = subprocess.Popen([*in_server, find_mosquitto(), "-c", str(conf)])
    env = {
        **os.environ,
        "THERMO_BRIDGE_MQTT_HOST": "127.0.0.1",
        "THERMO_BRIDGE_STORE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "THERMO_BRIDGE_HTTP_HOST": "0.0.0.0",  # noqa: S104 - inside the test's own namespace
        "THERMO_BRIDGE_HTTP_PORT": "8099",
        "THERMO_BRIDGE_DEV_AUTH": "true",
        "THERMO_BRIDGE_DEV_KEY_PATH": str(tmp_path / "dev_key.pem"),
        "THERMO_BRIDGE_ZEROCONF": "true",
        "THERMO_BRIDGE_BASE_TOPIC": "netns/site",
        "THERMO_BRIDGE_OPTIONS_FILE": "",
    }
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [*in_server, sys.executable, "-m", "thermo_bridge_server"], env=env, stdout=log, stderr=log
    )
    try:
        found = subprocess.run(
            ["ip", "netns", "exec", namespaces.browser, sys.executable, "-c", BROWSER],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert found.returncode == 0, found.stderr + (tmp_path / "server.log").read_text()
        result = json.loads(found.stdout)
    finally:
        for proc in (server, broker):
            proc.terminate()
            proc.wait(timeout=30)
        log.close()
    # The address the LAN side can reach, not a loopback or the browser's own.
    assert result["addresses"] == [namespaces.server_address]
    assert result["port"] == 8099
    assert result["properties"]["base_topic"] == "netns/site"
    assert result["properties"]["api_path"] == "/api/v1"
    assert result["live"]["status"] == "alive"
