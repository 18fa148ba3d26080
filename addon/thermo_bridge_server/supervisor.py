"""What the server asks of, and tells, the Home Assistant Supervisor.

The broker: an add-on that declares ``services: [mqtt:need]`` reads the broker's address and
the credentials the Supervisor created for it from ``GET http://supervisor/services/mqtt``
(``Authorization: Bearer $SUPERVISOR_TOKEN``). Right after a host boot the Mosquitto add-on
may not have registered its service yet: the Supervisor then answers with an error, so we
retry with capped exponential backoff (with jitter) until it is provided.

Discovery: the add-on lists ``thermo_bridge`` under ``discovery`` in its config.yaml, so it may
``POST /discovery`` ``{"service": "thermo_bridge", "config": {...}}``; Home Assistant then
offers its Thermo Bridge integration, which links to the server with that config (its address
on the Supervisor's network and the internal token). The Supervisor keeps the message while
the add-on is installed (and drops it on uninstall); posting it again after a restart
replaces its config, so the server does not delete it when it stops.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from typing import Any

import aiohttp

from .config import ServerConfig, with_mqtt

_LOGGER = logging.getLogger(__name__)

_TIMEOUT = aiohttp.ClientTimeout(total=10)


class SupervisorError(Exception):
    """The Supervisor refused us for good (e.g. a bad token): retrying will not help."""


async def fetch_mqtt_service(session: aiohttp.ClientSession, base_url: str, token: str) -> dict[str, Any] | None:
    """The service's data, or None while the service is not provided; raises SupervisorError on 401/403."""
    url = base_url.rstrip("/") + "/services/mqtt"
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=_TIMEOUT) as resp:
        if resp.status in (401, 403):
            raise SupervisorError(
                f"the Supervisor refused the add-on's token ({resp.status}); "
                "does the add-on's config.yaml declare 'services: [mqtt:need]'?"
            )
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = None
        if resp.status != 200 or not isinstance(body, dict) or body.get("result") != "ok":
            message = body.get("message") if isinstance(body, dict) else None
            _LOGGER.info("MQTT service not provided by the Supervisor yet (%s: %s)", resp.status, message)
            return None
        data = body.get("data")
        if not isinstance(data, dict) or not data.get("host"):
            _LOGGER.warning("the Supervisor's MQTT service answer has no host: %s", sorted(data or {}))
            return None
        return data


def apply_mqtt_service(config: ServerConfig, data: Mapping[str, Any]) -> ServerConfig:
    """Use the service's host/port/credentials/ssl for every MQTT option the user did not set."""
    explicit = config.mqtt_explicit
    changes: dict[str, Any] = {}
    if "mqtt_host" not in explicit:
        changes["host"] = str(data["host"])
    if "mqtt_port" not in explicit and data.get("port") is not None:
        changes["port"] = int(data["port"])
    if "mqtt_username" not in explicit and data.get("username"):
        changes["username"] = str(data["username"])
    if "mqtt_password" not in explicit and data.get("password"):
        changes["password"] = str(data["password"])
    if "mqtt_tls" not in explicit and data.get("ssl") is not None:
        changes["tls"] = bool(data["ssl"])
    return with_mqtt(config, **changes)


async def resolve_supervisor_mqtt(
    config: ServerConfig,
    session: aiohttp.ClientSession,
    *,
    initial_delay: float = 1.0,
    max_delay: float = 30.0,
) -> ServerConfig:
    """Under the Supervisor, fill in the broker from its MQTT service (retrying until provided).

    Standalone, or when the user set ``mqtt_host`` explicitly (then the service describes some
    other broker), the config is returned unchanged.
    """
    if config.supervisor_token is None or config.supervisor_url is None:
        return config
    if "mqtt_host" in config.mqtt_explicit:
        _LOGGER.info("mqtt_host is set explicitly: not using the Supervisor's MQTT service")
        return config
    delay = initial_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            data = await fetch_mqtt_service(session, config.supervisor_url, config.supervisor_token)
        except (aiohttp.ClientError, TimeoutError) as err:
            _LOGGER.info("Supervisor not reachable yet (%s)", err or type(err).__name__)
            data = None
        if data is not None:
            resolved = apply_mqtt_service(config, data)
            _LOGGER.info(
                "MQTT broker from the Supervisor: %s:%s (user %s)",
                resolved.mqtt.host,
                resolved.mqtt.port,
                resolved.mqtt.username,
            )
            return resolved
        wait = delay * random.uniform(0.5, 1.0)
        log = _LOGGER.warning if attempt in (3, 10) or attempt % 50 == 0 else _LOGGER.debug
        log("waiting for the Supervisor's MQTT service (attempt %d, next in %.1f s)", attempt, wait)
        await asyncio.sleep(wait)
        delay = min(delay * 2, max_delay)


DISCOVERY_SERVICE = "thermo_bridge"
"""The discovery service: the integration's domain (and what config.yaml lists under discovery)."""


class SupervisorUnavailableError(Exception):
    """The Supervisor did not answer as expected this time; worth asking again."""


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, token: str, body: Mapping[str, Any] | None = None
) -> tuple[int, dict[str, Any] | None]:
    """One Supervisor API call: (HTTP status, the answer's ``data`` when its ``result`` is ok)."""
    async with session.request(
        method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=_TIMEOUT
    ) as resp:
        try:
            answer = await resp.json(content_type=None)
        except ValueError:
            answer = None
        if resp.status == 200 and isinstance(answer, dict) and answer.get("result") == "ok":
            data = answer.get("data")
            return resp.status, data if isinstance(data, dict) else {}
        return resp.status, None


async def announce_once(
    session: aiohttp.ClientSession, config: ServerConfig, *, port: int, api_path: str, token: str
) -> str:
    """POST the discovery once; return the message's uuid.

    The host is the add-on's name on the Supervisor's network, where Home Assistant reaches it.
    Raises SupervisorError when refused for good, SupervisorUnavailableError (or an aiohttp
    error) when worth retrying.
    """
    if config.supervisor_url is None or config.supervisor_token is None:
        raise SupervisorError("not running under the Supervisor")
    base, token_header = config.supervisor_url.rstrip("/"), config.supervisor_token
    status, info = await _call(session, "GET", f"{base}/addons/self/info", token_header)
    if status in (401, 403):
        raise SupervisorError(f"the Supervisor refused the add-on's token ({status})")
    hostname = info.get("hostname") if info is not None else None
    if not isinstance(hostname, str) or not hostname:
        raise SupervisorUnavailableError(f"no add-on info from the Supervisor yet ({status})")
    discovery = {
        "service": DISCOVERY_SERVICE,
        "config": {
            "host": hostname,
            "port": port,
            "api_path": api_path,
            "base_topic": config.mqtt.base_topic,
            "token": token,
        },
    }
    status, data = await _call(session, "POST", f"{base}/discovery", token_header, discovery)
    if status in (401, 403):
        raise SupervisorError(
            f"the Supervisor refused the discovery ({status}); "
            f"does config.yaml list {DISCOVERY_SERVICE} under discovery?"
        )
    uuid = data.get("uuid") if data is not None else None
    if not uuid:
        raise SupervisorUnavailableError(f"the Supervisor did not take the discovery ({status})")
    return str(uuid)


async def announce(
    session: aiohttp.ClientSession,
    config: ServerConfig,
    *,
    port: int,
    api_path: str,
    token: str,
    initial_delay: float = 1.0,
    max_delay: float = 60.0,
) -> str:
    """``announce_once``, retried with capped backoff while the Supervisor is not ready."""
    delay = initial_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return await announce_once(session, config, port=port, api_path=api_path, token=token)
        except (SupervisorUnavailableError, aiohttp.ClientError, TimeoutError) as err:
            log = _LOGGER.warning if attempt in (3, 10) or attempt % 50 == 0 else _LOGGER.debug
            log("announcing to Home Assistant (attempt %d): %s", attempt, err or type(err).__name__)
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, max_delay)
