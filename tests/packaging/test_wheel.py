"""The server as the add-on image installs it: from its wheel, with the pinned dependencies, on Python 3.13.

No Home Assistant in that environment. It runs against a ``/data``-style folder (options.json,
the database, the keys) and a stand-in Supervisor (tests/fake_supervisor.py) that provides the
broker and takes the discovery; it must start, be ready, announce itself and stop cleanly on
SIGTERM within the s6 grace. The environment is cached per wheel and lock (under
~/.cache/thermo_bridge/wheel-venvs), so only the first run after a change installs anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.broker import Mosquitto, free_port
from tests.fake_supervisor import HOSTNAME, TOKEN, FakeSupervisor
from tests.packaging.test_addon import dockerfile_env
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "thermo_bridge" / "wheel-venvs"


def python313() -> str:
    """The base image's Python line: pyenv's 3.13.0 (as scripts/setup finds it), or python3.13 on PATH."""
    candidates = [os.environ.get("THERMO_BRIDGE_PYTHON_OLDEST", "")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False).stdout.strip()
        candidates.append(f"{root}/versions/3.13.0/bin/python3.13")
    candidates.append(shutil.which("python3.13") or "")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    message = "no Python 3.13 (the add-on image's) found: scripts/setup names where it looks"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert found, "uv is missing: run scripts/setup"
    return found


def build_wheel(out: Path) -> Path:
    subprocess.run([uv(), "build", "--wheel", "--out-dir", str(out), str(ROOT)], check=True, capture_output=True)
    (wheel,) = out.glob("thermo_bridge-*.whl")
    return wheel


def test_the_wheel_holds_the_built_dashboard(tmp_path: Path) -> None:
    """Every committed file of the page is package data (the add-on image installs the wheel)."""
    wheel = build_wheel(tmp_path / "dist")
    built = ROOT / "addon" / "thermo_bridge_server" / "http" / "dashboard"
    expected = {f"thermo_bridge_server/http/dashboard/{p.relative_to(built)}" for p in built.rglob("*") if p.is_file()}
    assert any(name.endswith("index.html") for name in expected)
    with zipfile.ZipFile(wheel) as archive:
        assert expected <= set(archive.namelist())


def installed(wheel: Path) -> Path:
    """A venv of Python 3.13 with the lock's pins and the wheel (and nothing else), cached."""
    lock = ROOT / "addon-requirements.lock"
    digest = hashlib.sha256(lock.read_bytes())
    with zipfile.ZipFile(wheel) as archive:  # the files, not the archive: builds stamp their own times
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + hashlib.sha256(archive.read(name)).digest())
    key = digest.hexdigest()[:16]
    venv = CACHE / key
    if (venv / ".complete").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([uv(), "venv", "--quiet", "-p", python313(), str(venv)], check=True, capture_output=True)
    python = str(venv / "bin" / "python")
    pins = ["--require-hashes", "--only-binary", ":all:", "-r", str(lock)]
    subprocess.run([uv(), "pip", "install", "--quiet", "--python", python, *pins], check=True, capture_output=True)
    subprocess.run(
        [uv(), "pip", "install", "--quiet", "--python", python, "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    (venv / ".complete").touch()
    for old in CACHE.iterdir():  # one environment per version of the sources is enough
        if old != venv and (old / ".complete").exists() and time.time() - old.stat().st_mtime > 86_400:
            shutil.rmtree(old, ignore_errors=True)
    return venv


@pytest.fixture
async def supervisor(mosquitto: Mosquitto) -> AsyncIterator[FakeSupervisor]:
    fake = FakeSupervisor()
    fake.provide_mqtt(mosquitto.host, mosquitto.port)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.mark.timeout(300)
async def test_the_wheel_on_python_3_13_runs_as_the_add_on(supervisor: FakeSupervisor, tmp_path: Path) -> None:
    wheel = await asyncio.to_thread(build_wheel, tmp_path / "dist")
    venv = await asyncio.to_thread(installed, wheel)
    python = venv / "bin" / "python"
    probe = "import sys, importlib.util; print(sys.version_info[:2], importlib.util.find_spec('homeassistant'))"
    checked = await asyncio.to_thread(subprocess.run, [str(python), "-c", probe], capture_output=True, text=True)
    assert checked.stdout.strip() == "(3, 13) None", checked.stdout + checked.stderr

    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    options = {
        "dev_auth": True,
        "dev_key_path": str(data / "dev_key.pem"),
        "store_url": f"sqlite:///{data / 'thermo_bridge.db'}",
        "internal_token_path": str(data / "internal_token"),
        "http_port": port,
        "zeroconf": False,
        "base_topic": "thermo_bridge",
        "log_level": "info",
    }
    (data / "options.json").write_text(json.dumps(options))
    env = {
        "PATH": os.environ["PATH"],
        "SUPERVISOR_TOKEN": TOKEN,
        "THERMO_BRIDGE_SUPERVISOR_URL": supervisor.url,
        "THERMO_BRIDGE_OPTIONS_FILE": str(data / "options.json"),
    }
    log = await asyncio.to_thread((tmp_path / "server.log").open, "wb")
    server = await asyncio.create_subprocess_exec(
        str(venv / "bin" / "thermo-bridge-server"), env=env, cwd=data, stdout=log, stderr=log
    )
    grace = int(dockerfile_env()["S6_KILL_GRACETIME"]) / 1000
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, what="the installed server to be ready", timeout=60)
            # The dashboard is in the wheel: the page and every module it names, with their types.
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                assert resp.status == 200
                assert resp.headers["Cache-Control"] == "no-cache"
                page = await resp.text()
            modules = re.findall(r'src="(assets/[^"]+)"', page)
            assert modules
            for module in modules:
                async with session.get(f"http://127.0.0.1:{port}/{module}") as resp:
                    assert resp.status == 200, module
                    assert resp.headers["Content-Type"].startswith("text/javascript"), module
                    assert "immutable" in resp.headers["Cache-Control"]
        await wait_for(lambda: supervisor.discoveries, what="its discovery", timeout=30)
        token = (await asyncio.to_thread((data / "internal_token").read_text)).strip()
        assert supervisor.discoveries == [
            {
                "service": "thermo_bridge",
                "config": {
                    "host": HOSTNAME,
                    "port": port,
                    "api_path": "/api/v1",
                    "base_topic": "thermo_bridge",
                    "token": token,
                },
            }
        ]
        assert ("GET", "/services/mqtt") in supervisor.calls
    finally:
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(server.wait(), grace)
        except TimeoutError:
            server.kill()
            await server.wait()
            pytest.fail(f"still running {grace} s after SIGTERM: s6 would have killed it")
        took = time.monotonic() - started
        log.close()
    assert code == 0, (tmp_path / "server.log").read_text()
    assert took < grace
    assert (data / "thermo_bridge.db").exists()
