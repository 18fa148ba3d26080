"""The REST API under ``/api/v1``, its public routes, and the internal-token ``/internal/v1/status``.

The public ones are ``/health`` (readiness), ``/health/live``, ``/metrics``, the OpenAPI
document, and the dashboard with its configuration (``routes/dashboard.py``). Handlers live in
``routes/`` (one module per resource) and reach their services through one ``HttpContext``;
what a caller may see is decided by ``access.py``, not here.
"""

from __future__ import annotations

from aiohttp import web

from .context import API_PREFIX, HTTP, HttpContext, HttpSettings, InternalStatus
from .middlewares import OPENAPI_PATH, middlewares, on_response_prepare
from .routes import admin, commands, dashboard, devices, internal, public

ROUTES = (*devices.routes, *commands.routes, *admin.routes, *public.routes, *internal.routes, *dashboard.routes)
"""Every route of the API (the OpenAPI test compares them with the document)."""


def setup_http(app: web.Application, context: HttpContext) -> None:
    """Register the routes, the context and the response headers on an app built with ``middlewares``."""
    app[HTTP] = context
    app.router.add_routes(ROUTES)
    app.on_response_prepare.append(on_response_prepare)


__all__ = [
    "API_PREFIX",
    "HTTP",
    "OPENAPI_PATH",
    "ROUTES",
    "HttpContext",
    "HttpSettings",
    "InternalStatus",
    "middlewares",
    "setup_http",
]
