"""Zeroconf (mDNS/DNS-SD) advertisement of the server as ``_thermo-bridge._tcp.local.``.

Web apps and tools on the LAN find the API without configuration: the service's TXT
properties carry the server version, the API path and the MQTT base topic. Uses
python-zeroconf's async API only (registration never blocks the event loop).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence

import ifaddr
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE = "_thermo-bridge._tcp.local."


def _addresses(host: str) -> list[str]:
    """The IPv4 addresses to announce: the bound one, or those of this machine's interfaces when bound to all."""
    if host not in ("", "0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
        return [host]
    found = [
        str(ip.ip)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if ip.is_IPv4 and not ipaddress.IPv4Address(str(ip.ip)).is_loopback
    ]
    return list(dict.fromkeys(found)) or ["127.0.0.1"]


class Advertiser:
    """Registers the service on start and unregisters it (goodbye packets) on stop."""

    def __init__(
        self,
        *,
        port: int,
        version: str,
        api_path: str,
        base_topic: str,
        host: str = "0.0.0.0",  # noqa: S104 - the address to announce, bound elsewhere
        name: str | None = None,
        interfaces: Sequence[str] | None = None,
        addresses: Sequence[str] | None = None,
    ) -> None:
        """``addresses`` replace the ones derived from ``host``: what others reach us at (NAT, containers)."""
        instance = name or f"thermo_bridge on {socket.gethostname()}"
        self.info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{instance}.{SERVICE_TYPE}",
            port=port,
            parsed_addresses=list(addresses) if addresses else _addresses(host),
            properties={"version": version, "api_path": api_path, "base_topic": base_topic},
            server=f"{socket.gethostname().split('.')[0] or 'thermo-bridge'}.local.",
        )
        self._interfaces = list(interfaces) if interfaces is not None else None
        self._zeroconf: AsyncZeroconf | None = None

    async def start(self) -> None:
        """Register (renaming the instance if another server on the LAN uses the same name)."""
        if self._interfaces is None:
            self._zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only)
        else:
            self._zeroconf = AsyncZeroconf(interfaces=self._interfaces, ip_version=IPVersion.V4Only)
        # The first await registers and probes the name; the returned awaitable completes
        # once the announcements went out.
        announced = await self._zeroconf.async_register_service(self.info, allow_name_change=True)
        await announced
        _LOGGER.info("Advertising %s on port %d via zeroconf", self.info.name, self.info.port)

    async def stop(self) -> None:
        """Unregister and close; safe to call twice."""
        zc, self._zeroconf = self._zeroconf, None
        if zc is None:
            return
        try:
            goodbyes = await zc.async_unregister_service(self.info)
            await goodbyes  # so browsers drop us now rather than when the TTL runs out
        finally:
            await zc.async_close()
