"""Broker discovery under the Home Assistant Supervisor.

An add-on that declares ``services: [mqtt:need]`` reads the broker's address and the
credentials the Supervisor created for it from ``GET http://supervisor/services/mqtt``
(``Authorization: Bearer $SUPERVISOR_TOKEN``). Right after a host boot the Mosquitto add-on
may not have registered its service yet: the Supervisor then answers with an error, so we
retry with capped exponential backoff (with jitter) until it is provided.
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
