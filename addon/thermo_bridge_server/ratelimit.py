"""Token buckets per key (a user, an address): the limits every API entry point shares."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web


class RateLimiter:
    """A token bucket per key: ``per_minute`` a minute, bursts up to ``burst`` (default: the same number).

    Buckets are kept in an LRU bounded by ``max_users`` so a flood of distinct keys cannot
    grow memory without bound (an evicted key simply starts with a full bucket).
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        max_users: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute if burst is None else burst)
        self.rate = per_minute / 60.0
        self.max_users = max_users
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take a token; return 0 when allowed, else the seconds until one is available."""
        if self.capacity <= 0:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_users:
            self._buckets.popitem(last=False)
        return wait


class ClientAddress:
    """The address the per-address limits count: the TCP peer, or the client behind trusted proxies.

    Behind a reverse proxy every client has the proxy's address, so one client's refused
    requests would throttle everyone's. When the peer is one of ``trusted`` (addresses or
    networks), the client is the rightmost ``X-Forwarded-For`` hop that is not trusted: each
    trusted proxy appends the address it received the request from, so hops further left are
    whatever the client claimed and are never read. Only the limits use this; the ingress
    check and the logs keep the TCP peer.
    """

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self._trusted = tuple(ipaddress.ip_network(item, strict=False) for item in trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def __call__(self, request: web.BaseRequest) -> str:
        """The address ``request`` counts under."""
        peer = request.remote
        if peer is None:
            return "unknown"
        if not self._trusted or not self._is_trusted(peer):
            return peer
        hops = [hop.strip() for header in request.headers.getall("X-Forwarded-For", ()) for hop in header.split(",")]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a proxy that writes no address: count the proxy
        return peer
