"""A stand-in for Home Assistant's ingress: HA core's proxy and the Supervisor's in one.

Like the real pair (homeassistant/components/hassio/ingress.py, supervisor/api/ingress.py) it
serves the add-on under ``/api/hassio_ingress/<token>/``, strips client-sent
``X-Remote-User-*`` headers, adds ``X-Ingress-Path``, ``X-Forwarded-Host``/``-For``/``-Proto``
and the HA user's ``X-Remote-User-Id``/``-Name``/``-Display-Name``, and forwards HTTP and
WebSockets from the Supervisor's address 172.30.32.2 (bound on loopback by the test). ``/ha``
is a page that frames the panel the way Home Assistant's frontend does, with theme variables
on its root element.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import aiohttp
from aiohttp import hdrs, web

SUPERVISOR_INGRESS = "172.30.32.2"
HOP = {hdrs.HOST, hdrs.CONTENT_LENGTH, hdrs.TRANSFER_ENCODING, hdrs.CONNECTION, hdrs.UPGRADE, hdrs.CONTENT_ENCODING}
WS_HEADERS = {
    hdrs.SEC_WEBSOCKET_KEY,
    hdrs.SEC_WEBSOCKET_VERSION,
    hdrs.SEC_WEBSOCKET_EXTENSIONS,
    hdrs.SEC_WEBSOCKET_PROTOCOL,
}
REMOTE_USER = ("X-Remote-User-Id", "X-Remote-User-Name", "X-Remote-User-Display-Name")
HA_THEME = {"--primary-background-color": "#101820", "--primary-text-color": "#f2f5f8", "--primary-color": "#ffb000"}


class IngressProxy:
    """Runs on its own event loop in a thread; ``url`` is the panel's address."""

    def __init__(self, upstream: str, *, user: tuple[str, str, str], token: str = "Xy9token") -> None:  # noqa: S107 - the ingress URL's path segment
        self.upstream = upstream.rstrip("/")
        self.user = user
        self.prefix = f"/api/hassio_ingress/{token}"
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}/"

    @property
    def ha_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ha"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        connector = aiohttp.TCPConnector(local_addr=(SUPERVISOR_INGRESS, 0))
        self._session = aiohttp.ClientSession(connector=connector)
        app = web.Application()
        app.router.add_get("/ha", self._ha_page)
        app.router.add_route("*", self.prefix + "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _ha_page(self, request: web.Request) -> web.Response:
        style = "; ".join(f"{name}: {value}" for name, value in HA_THEME.items())
        page = (
            f'<!doctype html><html style="{style}; color-scheme: dark"><title>Home Assistant</title>'
            '<link rel="icon" href="data:,"><body>'
            f'<iframe title="Thermo Bridge" src="{self.prefix}/" style="width:1000px;height:700px">'
            "</iframe></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    def _headers(self, request: web.Request) -> dict[str, str]:
        headers = {
            k: v for k, v in request.headers.items() if k not in HOP and k not in WS_HEADERS and k not in REMOTE_USER
        }
        user_id, name, display = self.user
        headers |= {
            "X-Ingress-Path": self.prefix,
            "X-Forwarded-Host": request.host,
            "X-Forwarded-Proto": "http",
            "X-Forwarded-For": request.remote or "",
            "X-Remote-User-Id": user_id,
            "X-Remote-User-Name": name,
            "X-Remote-User-Display-Name": display,
        }
        return headers

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        url = f"{self.upstream}/{request.match_info['path']}"
        if request.query_string:
            url += f"?{request.query_string}"
        headers = self._headers(request)
        if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
            return await self._websocket(request, url, headers)
        async with self._session.request(request.method, url, headers=headers, data=await request.read()) as upstream:
            body = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k not in HOP and k != hdrs.CONTENT_TYPE}
            return web.Response(status=upstream.status, body=body, headers=kept, content_type=upstream.content_type)

    async def _websocket(self, request: web.Request, url: str, headers: dict[str, str]) -> web.WebSocketResponse:
        assert self._session is not None
        server = web.WebSocketResponse(autoping=False)
        await server.prepare(request)
        async with self._session.ws_connect(url.replace("http", "ws", 1), headers=headers, autoping=False) as client:

            async def pump(source: Any, sink: Any) -> None:
                async for message in source:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await sink.send_str(message.data)
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        await sink.send_bytes(message.data)
                    elif message.type == aiohttp.WSMsgType.PING:
                        await sink.ping()
                    elif message.type == aiohttp.WSMsgType.PONG:
                        await sink.pong()
                if not sink.closed:
                    await sink.close(code=source.close_code or 1000)

            tasks = [asyncio.ensure_future(pump(server, client)), asyncio.ensure_future(pump(client, server))]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        return server
