"""A WebSocket test client for the real-time API (aiohttp), speaking docs/websocket.md.

It keeps every message it received, split into results (by id) and events (by subscription
id), so tests can wait for what they expect and then assert on everything that arrived.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.waiting import wait_for


class WsClient:
    """One connection: ``connect`` runs the auth phase; ``request`` sends a command and waits for its result."""

    def __init__(self, base_url: str, *, origin: str | None = None) -> None:
        self.url = base_url.replace("http://", "ws://") + "/api/v1/ws"
        self.origin = origin
        self.session = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.next_id = 0
        self.results: dict[int, dict[str, Any]] = {}
        self.events: dict[int, list[dict[str, Any]]] = {}
        self.others: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.auth: dict[str, Any] | None = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, token: str | None, *, read: bool = True) -> dict[str, Any]:
        """Open, authenticate, start reading; returns auth_ok or auth_invalid (``token`` None: send nothing)."""
        headers = {"Origin": self.origin} if self.origin else {}
        self.ws = await self.session.ws_connect(self.url, headers=headers, autoping=True)
        required: dict[str, Any] = await self.ws.receive_json(timeout=10)
        assert required["type"] == "auth_required", required
        if token is None:
            return required
        await self.ws.send_json({"type": "auth", "access_token": token})
        self.auth = await self.ws.receive_json(timeout=10)
        if read and self.auth["type"] == "auth_ok":
            self._reader = asyncio.get_running_loop().create_task(self._read())
        return self.auth

    async def _read(self) -> None:
        assert self.ws is not None
        while True:
            msg = await self.ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                if msg.type is aiohttp.WSMsgType.CLOSE:
                    self.close_reason = msg.extra
                break
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            self.messages.append(data)
            if data.get("type") == "result" and data.get("id") is not None:
                self.results[data["id"]] = data
            elif data.get("type") == "event":
                self.events.setdefault(data["id"], []).append(data["event"])
            else:
                self.others.append(data)
        self.close_code = self.ws.close_code
        self.closed.set()

    async def send(self, message: dict[str, Any]) -> int:
        """Send a command with the next id; return the id."""
        assert self.ws is not None
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, **message})
        return self.next_id

    async def request(self, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        """Send a command and wait for its result message."""
        msg_id = await self.send(message)
        return await wait_for(lambda: self.results.get(msg_id), timeout=timeout, what=f"the result of {message}")

    async def subscribe(self, **fields: Any) -> tuple[int, dict[str, Any]]:
        """Subscribe; return (subscription id, result)."""
        result = await self.request({"type": "subscribe", **fields})
        assert result["success"], result
        return result["id"], result["result"]

    def of(self, sub_id: int) -> list[dict[str, Any]]:
        """The events received on a subscription so far."""
        return self.events.get(sub_id, [])

    async def until(
        self,
        predicate: Callable[[], bool],
        what: str,
        timeout: float = 15.0,  # noqa: ASYNC109
    ) -> None:
        """Wait for a condition on what arrived."""
        await wait_for(predicate, timeout=timeout, what=what)

    async def close(self) -> None:
        """Close the socket and the session."""
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.session.close()
