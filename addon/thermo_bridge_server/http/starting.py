"""What the server answers while it starts: alive, not ready.

Under the Supervisor the server may wait a long time before it can start (until the
Mosquitto add-on provides the broker, or a database migration is done). The add-on image's
HEALTHCHECK asks ``/health/live`` all along: were nothing listening, the Supervisor's
watchdog would restart the add-on in a loop while it waits.
"""

from __future__ import annotations

from aiohttp import web

from thermo_bridge_server.errors import ApiError, error_response


def starting_app(version: str, reason: str) -> web.Application:
    """A stand-in on the server's socket: 200 on ``/health/live``, 503 with ``reason`` elsewhere."""

    async def live(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "version": version})

    async def health(_request: web.Request) -> web.Response:
        body = {
            "status": "degraded",
            "version": version,
            "broker": {"connected": False},
            "store": {"ok": False, "error": "starting"},
        }
        return web.json_response(body, status=503)

    async def starting(_request: web.Request) -> web.Response:
        return error_response(ApiError(503, "starting", f"the server is starting: {reason}"))

    app = web.Application()
    app.router.add_get("/health/live", live)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", starting)
    return app
