"""A real Home Assistant core in this process, for benchmarks.

Not pytest-homeassistant-custom-component's test instance (that one mocks storage and
wraps job scheduling): this follows ``homeassistant.bootstrap`` minus the frontend and
the default integrations (which need packages HACS users have but this venv lacks):
HA's own event loop factory, real registries and storage in a temporary config dir,
``http`` on a free loopback port (MQTT depends on it), HA's MQTT integration as a config
entry with a real connection to the benchmark's broker, and custom integrations loaded
from this repository's ``custom_components``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections import Counter
from pathlib import Path
from types import MappingProxyType
from typing import Any

from homeassistant import bootstrap, config_entries, core, loader
from homeassistant.components import mqtt
from homeassistant.components.mqtt.const import CONFIG_ENTRY_MINOR_VERSION, CONFIG_ENTRY_VERSION
from homeassistant.core_config import async_process_ha_core_config
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    # `import custom_components` (HA's loader) must find this repository's folder.
    sys.path.insert(0, str(REPO))

from tests.broker import free_port  # noqa: E402 - needs REPO on sys.path

BENCH_DEVICE_RE = re.compile(r"[a-z]+_t_\d{5}")
"""Device ids of bench/_publisher.py, whatever the integration wraps them in."""


class LogCounter(logging.Handler):
    """Counts WARNING+ records by logger and keeps the first few distinct messages."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.samples: dict[str, str] = {}

        self.paused = False
        """Set while HA starts: its start-up notices are not what the benchmark measures."""

    def emit(self, record: logging.LogRecord) -> None:
        if self.paused:
            return
        self.counts[record.name] += 1
        if len(self.samples) < 20 and record.name not in self.samples:
            self.samples[record.name] = f"{record.levelname}: {record.getMessage()[:300]}"


def _write_configuration(config_dir: Path) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    # Integrations (MQTT among them) read configuration.yaml for their YAML part.
    (config_dir / "configuration.yaml").write_text("homeassistant:\n  name: bench\n")


async def start_home_assistant(config_dir: Path) -> core.HomeAssistant:
    """A running HA with core, http and the registries, nothing else."""
    await asyncio.to_thread(_write_configuration, config_dir)
    hass = core.HomeAssistant(str(config_dir))
    loader.async_setup(hass)
    hass.config.skip_pip = True
    hass.config_entries = config_entries.ConfigEntries(hass, {})
    await loader.async_get_custom_components(hass)
    if not await bootstrap.async_load_base_functionality(hass):
        raise RuntimeError("Home Assistant could not load its registries")
    for domain in bootstrap.CORE_INTEGRATIONS:
        if not await async_setup_component(hass, domain, {}):
            raise RuntimeError(f"Home Assistant core integration {domain} failed")
    await async_process_ha_core_config(
        hass,
        {
            "name": "bench",
            "unit_system": "metric",
            "time_zone": "UTC",
            "latitude": 52.37,
            "longitude": 4.89,
            "elevation": 0,
        },
    )
    http_conf = {"http": {"server_host": ["127.0.0.1"], "server_port": free_port()}}
    if not await async_setup_component(hass, "http", http_conf):
        raise RuntimeError("Home Assistant http failed to set up")
    await hass.async_start()
    return hass


async def add_mqtt_entry(hass: core.HomeAssistant, host: str, port: int) -> None:
    """HA's MQTT integration connected to ``host:port`` (a real connection, discovery on)."""
    entry = config_entries.ConfigEntry(
        data={"broker": host, "port": port},
        discovery_keys=MappingProxyType({}),
        domain=mqtt.DOMAIN,
        minor_version=CONFIG_ENTRY_MINOR_VERSION,
        options={},
        source=config_entries.SOURCE_USER,
        subentries_data=None,
        title=f"{host}:{port}",
        unique_id=None,
        version=CONFIG_ENTRY_VERSION,
    )
    await hass.config_entries.async_add(entry)
    await hass.async_block_till_done()
    if entry.state is not config_entries.ConfigEntryState.LOADED:
        raise RuntimeError(f"HA's MQTT entry did not load: {entry.state} {entry.reason}")
    try:
        async with asyncio.timeout(15):
            while not hass.data[mqtt.DATA_MQTT].client.connected:  # noqa: ASYNC110 - HA exposes no event for it
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise RuntimeError(f"HA's MQTT client did not connect to {host}:{port}") from None


async def add_thermo_bridge_entry(hass: core.HomeAssistant, base_topic: str) -> config_entries.ConfigEntry[Any]:
    """Our integration, added the way a user does (config flow, user step)."""
    integration = await loader.async_get_integration(hass, "thermo_bridge")
    if not integration.file_path.resolve().is_relative_to(REPO):
        raise RuntimeError(f"thermo_bridge was loaded from {integration.file_path}, not from {REPO}")
    result = await hass.config_entries.flow.async_init("thermo_bridge", context={"source": config_entries.SOURCE_USER})
    if result.get("type") == "form":
        result = await hass.config_entries.flow.async_configure(result["flow_id"], {"base_topic": base_topic})
    if result.get("type") != "create_entry":
        raise RuntimeError(f"thermo_bridge config flow did not create an entry: {result}")
    await hass.async_block_till_done()
    entry: config_entries.ConfigEntry[Any] = result["result"]
    if entry.state is not config_entries.ConfigEntryState.LOADED:
        raise RuntimeError(f"thermo_bridge entry did not load: {entry.state} {entry.reason}")
    return entry


async def set_up_saved_entries(hass: core.HomeAssistant) -> None:
    """Set up every integration that has a saved config entry, concurrently, as bootstrap does."""
    domains = {entry.domain for entry in hass.config_entries.async_entries()}
    results = await asyncio.gather(*(async_setup_component(hass, domain, {}) for domain in domains))
    failed = [domain for domain, ok in zip(domains, results, strict=True) if not ok]
    if failed:
        raise RuntimeError(f"after the restart these integrations failed to set up: {failed}")


async def flush_storage(hass: core.HomeAssistant) -> None:
    """Write the registries' pending delayed saves now, so they do not land in a measured window.

    Real HA writes them ~10 s after the last change; a benchmark cannot wait that long
    between phases. Uses storage internals, hence the guards.
    """
    stores = [getattr(er.async_get(hass), "_store", None), getattr(dr.async_get(hass), "_store", None)]
    stores.append(getattr(hass.config_entries, "_store", None))
    for store in stores:
        handle = getattr(store, "_async_handle_write_data", None)
        if handle is not None and getattr(store, "_data", None) is not None:
            await handle()
    await hass.async_block_till_done()


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def platform_entities(hass: core.HomeAssistant, platform: str) -> list[er.RegistryEntry]:
    """Entity registry entries created by ``platform``."""
    return [entry for entry in er.async_get(hass).entities.values() if entry.platform == platform]


def device_key(hass: core.HomeAssistant, entry: er.RegistryEntry) -> str | None:
    """The bench device id behind a registry entry (from its device's identifiers)."""
    if entry.device_id is None:
        return None
    device = dr.async_get(hass).async_get(entry.device_id)
    if device is None:
        return None
    for _domain, ident in device.identifiers:
        if match := BENCH_DEVICE_RE.search(ident):
            return match.group(0)
    return None
