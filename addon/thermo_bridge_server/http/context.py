"""What the HTTP handlers share: the services they call and the settings they honour."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from thermo_bridge_server.access import Access, AccessPolicy, Permissions
from thermo_bridge_server.auth.bearer import principal_of
from thermo_bridge_server.auth.ingress import IngressIssuer
from thermo_bridge_server.metrics import HttpCounters, Metrics
from thermo_bridge_server.ratelimit import ClientAddress, RateLimiter
from thermo_bridge_server.services import BrokerState, CommandSender
from thermo_bridge_server.store.base import Store

API_PREFIX = "/api/v1"


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The parts of the configuration the handlers and middlewares use."""

    version: str = "0.0.0"
    permissions: Permissions = field(default_factory=Permissions)
    max_body_bytes: int = 64 * 1024
    cors_origins: tuple[str, ...] = ()
    rate_limit_per_minute: int = 120
    page_auth: Mapping[str, Any] = field(default_factory=lambda: {"mode": "dev"})
    """How the dashboard signs in outside ingress (``GET /api/v1/client-config``'s ``auth``)."""
    page_auth_origin: str | None = None
    """The token issuer's origin, which the page's CSP lets it connect to (Auth0's token calls)."""
    ingress: bool = False
    """Trust the Supervisor's ingress proxy: its X-Remote-User-* headers get a panel token."""


@dataclass(frozen=True, slots=True)
class InternalStatus:
    """``/internal/v1/status``: its token, and the figures only the assembled server knows."""

    token: str
    figures: Callable[[], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class HttpContext:
    """Everything a handler reaches through ``request.app[HTTP]``."""

    store: Store
    access: AccessPolicy
    sender: CommandSender
    broker: BrokerState
    settings: HttpSettings
    metrics: Metrics
    openapi: Callable[[], Mapping[str, Any]]
    rate_limiter: RateLimiter
    address_limiter: RateLimiter
    """Requests refused with 401, per client address."""
    client_address: ClientAddress = field(default_factory=ClientAddress)
    """The address ``address_limiter`` counts (the client behind trusted proxies)."""
    internal: InternalStatus | None = None
    """None: the internal status endpoint answers 404 (e.g. an app built without a token file)."""
    ingress: IngressIssuer | None = None
    """Mints the panel's tokens; None: ``POST /api/v1/ingress/token`` answers 403."""

    @property
    def counters(self) -> HttpCounters:
        """The response counters /metrics reports."""
        return self.metrics.http


HTTP: web.AppKey[HttpContext] = web.AppKey("http_context", HttpContext)


async def caller(request: web.Request, permission: str) -> Access:
    """The authenticated caller's access, if it holds ``permission`` (401/403 otherwise)."""
    return await request.app[HTTP].access.resolve(principal_of(request), permission)
