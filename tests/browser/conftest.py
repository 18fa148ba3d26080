"""The dashboard in Debian's chromium (Playwright) against a real broker, server and simulator.

Playwright's own browser download does not work here, so ``executable_path`` points at
/usr/bin/chromium (``scripts/setup`` installs it); ``playwright install`` is never needed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.broker import Mosquitto
from tests.browser.ingress_proxy import SUPERVISOR_INGRESS
from tests.integration.server_process import ServerProcess
from thermo_bridge_sim.simulator import Simulator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN = ("read:devices", "write:devices", "admin")


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for the browser tests, closed after them: Playwright's sync API keeps an
    event loop running on this thread, which would break asyncio tests collected later."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: scripts/setup installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Stack:
    """Broker, server (a process, dev auth, SQLite) and simulated devices (2 thermostats, 1 sensor)."""

    broker: Mosquitto
    server: ServerProcess
    sim: Simulator
    token: str
    problems: list[str] = field(default_factory=list)

    def dashboard_url(self, token: str | None = None) -> str:
        return f"{self.server.url}/#token={token or self.token}"

    def watch(self, page: Page) -> Page:
        """Collect CSP violations, page errors and console errors: every test asserts there are none."""
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                self.problems.append(f"console {message.type}: {message.text}") if message.type == "error" else None
            ),
        )
        return page


def start_stack(tmp_path: Path, **server_env: str) -> tuple[Mosquitto, ServerProcess, Simulator]:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    server = ServerProcess(tmp_path / "server", broker, env=server_env)
    server.start()
    sim = Simulator(broker.host, broker.port, thermostats=2, sensors=1, id_prefix="b", seed=3)
    sim.start()
    return broker, server, sim


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    broker, server, sim = start_stack(tmp_path)
    try:
        yield Stack(broker, server, sim, server.mint("browser|admin", *ADMIN))
    finally:
        sim.stop()
        server.stop()
        broker.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context
    context.close()


@pytest.fixture(scope="session")
def ingress_address() -> Iterator[str]:
    """172.30.32.2 on loopback, so the test's ingress proxy connects from the Supervisor's address."""
    ip = shutil.which("ip")
    if ip is None:
        pytest.fail("the ip command (iproute2) is needed to add the Supervisor's address on loopback")
    shown = subprocess.run([ip, "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True).stdout
    added = False
    if f"{SUPERVISOR_INGRESS}/32" not in shown:
        add = [ip, "addr", "add", f"{SUPERVISOR_INGRESS}/32", "dev", "lo"]
        result = subprocess.run(add, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"cannot add {SUPERVISOR_INGRESS} on loopback (needs root): {result.stderr.strip()}")
        added = True
    yield SUPERVISOR_INGRESS
    if added:
        subprocess.run([ip, "addr", "del", f"{SUPERVISOR_INGRESS}/32", "dev", "lo"], check=False)
