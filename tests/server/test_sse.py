"""The SSE stream against a real server: tickets, filters, resume with Last-Event-ID, keep-alive."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.server.api_stack import ADMIN, RW, ServerStack
from tests.waiting import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

T1, T2, S1 = "e_thermostat_1", "e_thermostat_2", "e_sensor_1"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerStack]:
    server = ServerStack(tmp_path_factory.mktemp("sse"), prefix="e", env={"rate_limit_per_minute": "100000"})
    await server.start()
    assert await server.components.store.set_device_home(T2, "beta")
    yield server
    await server.stop()


class SseReader:
    """Reads an event stream into (event, id, data) records and keep-alive comments."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: list[dict[str, Any]] = []
        self.comments = 0
        self.ended = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        record: dict[str, Any] = {}
        try:
            async for raw in self.response.content:
                line = raw.decode().rstrip("\n")
                if not line:
                    if record:
                        self.events.append(record)
                    record = {}
                elif line.startswith(":"):
                    self.comments += 1
                else:
                    field, _, value = line.partition(": ")
                    record[field] = json.loads(value) if field == "data" else value
        except aiohttp.ClientPayloadError:
            pass
        finally:
            self.ended.set()

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    def data(self) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e.get("event") not in {"ready", "snapshot", "status"}]

    async def close(self) -> None:
        self.response.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest_asyncio.fixture(loop_scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def ticket(stack: ServerStack, token: str) -> str:
    resp = await stack.api.call("POST", "/api/v1/events/tickets", token=token)
    assert resp.status == 201, resp.text
    body = resp.json()
    assert body["expires_in"] == 30
    return str(body["ticket"])


async def open_stream(
    session: aiohttp.ClientSession, stack: ServerStack, query: str = "", headers: dict[str, str] | None = None
) -> SseReader:
    resp = await session.get(f"{stack.api.base_url}/api/v1/events?{query}", headers=headers or {})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-store"
    return SseReader(resp)


async def test_a_ticket_opens_one_stream_once(stack: ServerStack, session: aiohttp.ClientSession) -> None:
    token = stack.api.token("auth0|alice", RW, homes=["default"])
    once = await ticket(stack, token)
    reader = await open_stream(session, stack, f"ticket={once}")
    try:
        await wait_for(lambda: reader.of("ready"), what="the ready event")
        (ready,) = reader.of("ready")
        assert ready["data"]["recovered"] is False
        assert ready["data"]["reason"] == "no_position"
        assert ready["data"]["epoch"] == stack.components.store.epoch
        (snapshot,) = reader.of("snapshot")
        assert {d["id"] for d in snapshot["data"]["devices"]} == {T1, S1}  # not T2: another home
    finally:
        await reader.close()
    again = await session.get(f"{stack.api.base_url}/api/v1/events?ticket={once}")
    assert again.status == 401
    assert (await again.json())["error"]["code"] == "invalid_ticket"
    for bad in ("nope", "x" * 200):
        refused = await session.get(f"{stack.api.base_url}/api/v1/events?ticket={bad}")
        assert refused.status == 401
    anonymous = await session.get(f"{stack.api.base_url}/api/v1/events")
    assert anonymous.status == 401
    no_token = await session.post(f"{stack.api.base_url}/api/v1/events/tickets")
    assert no_token.status == 401


async def test_a_bearer_token_in_the_url_is_never_accepted(stack: ServerStack, session: aiohttp.ClientSession) -> None:
    token = stack.api.token("auth0|alice", RW)
    resp = await session.get(f"{stack.api.base_url}/api/v1/events", params={"access_token": token})
    assert resp.status == 400
    assert (await resp.json())["error"]["details"] == {"parameter": "access_token"}
    as_ticket = await session.get(f"{stack.api.base_url}/api/v1/events", params={"ticket": token})
    assert as_ticket.status == 401


async def test_filters_and_bad_parameters(stack: ServerStack, session: aiohttp.ClientSession) -> None:
    admin = {"Authorization": f"Bearer {stack.api.token('auth0|admin', ADMIN)}"}
    for query, parameter in (
        ("events=state,explosion", "events"),
        ("devices=", "devices"),
        ("since=nope", "since"),
        ("homes=" + ",".join(f"h{i}" for i in range(300)), "homes"),
    ):
        resp = await session.get(f"{stack.api.base_url}/api/v1/events?{query}", headers=admin)
        assert resp.status == 400, query
        assert (await resp.json())["error"]["details"]["parameter"] == parameter
    reader = await open_stream(session, stack, f"devices={T1},{T2}&events=state", headers=admin)
    try:
        await wait_for(lambda: reader.of("ready"), what="ready")
        stack.sim.publish_state(S1, temperature=3.5)
        stack.sim.publish_state(T2, temperature=4.5)
        stack.sim.emit_event(T2, "button_press", {})
        await wait_for(lambda: any(d["device_id"] == T2 for d in reader.data()), what="T2's state")
        await asyncio.sleep(0.3)
        assert {d["type"] for d in reader.data()} == {"state"}
        assert {d["device_id"] for d in reader.data()} <= {T1, T2}
        for event in reader.events:
            if event.get("event") == "state":
                assert event["id"] == f"{event['data']['epoch']}:{event['data']['offset']}"
    finally:
        await reader.close()


async def test_last_event_id_resumes_exactly_after_it(stack: ServerStack, session: aiohttp.ClientSession) -> None:
    admin = {"Authorization": f"Bearer {stack.api.token('auth0|admin', ADMIN)}"}
    first = await open_stream(session, stack, f"devices={T1}", headers=admin)
    try:
        for i in range(4):
            stack.sim.publish_state(T1, temperature=10 + i / 4)
        await wait_for(lambda: len(first.of("state")) >= 4, what="four states")
        last = first.of("state")[-1]["id"]
    finally:
        await first.close()
    for i in range(5):
        stack.sim.publish_state(T1, temperature=20 + i / 4)
    epoch, _, offset = last.partition(":")
    store = stack.components.store
    missed = await wait_for(lambda: _after(store, int(offset), T1, at_least=5), what="five more states in the log")
    second = await open_stream(session, stack, f"devices={T1}", headers={**admin, "Last-Event-ID": last})
    try:
        await wait_for(lambda: len(second.data()) >= len(missed), what="the replay")
        (ready,) = second.of("ready")
        assert ready["data"] == {"recovered": True, "epoch": epoch, "offset": ready["data"]["offset"]}
        assert not second.of("snapshot")
        assert [d["offset"] for d in second.data()][: len(missed)] == [e.offset for e in missed]
    finally:
        await second.close()
    third = await open_stream(session, stack, f"devices={T1}&since={last}", headers=admin)
    try:
        await wait_for(lambda: len(third.data()) >= len(missed), what="the replay by ?since=")
        assert [d["offset"] for d in third.data()][: len(missed)] == [e.offset for e in missed]
    finally:
        await third.close()


async def _after(store: Any, offset: int, device: str, at_least: int) -> list[Any] | None:
    found = [e for e in await store.events_since(offset, limit=100_000) if e.device_id == device]
    return found if len(found) >= at_least else None


async def test_keep_alive_comments_and_the_token_expiry_ends_the_stream(
    stack: ServerStack, session: aiohttp.ClientSession
) -> None:
    realtime = stack.components.realtime
    original = realtime.settings
    realtime.settings = dataclasses.replace(original, sse_keepalive=0.2)
    try:
        import time  # noqa: PLC0415

        short = stack.jwks.make_token("auth0|alice", RW, exp=time.time() + 2)
        reader = await open_stream(session, stack, f"devices={S1}", headers={"Authorization": f"Bearer {short}"})
        await wait_for(lambda: reader.comments >= 2, what="keep-alive comments")
        await asyncio.wait_for(reader.ended.wait(), 10)
        assert reader.of("token_expired")
        await reader.close()
    finally:
        realtime.settings = original


async def test_the_stream_ends_when_its_token_expires_not_at_the_next_keep_alive(
    stack: ServerStack, session: aiohttp.ClientSession
) -> None:
    import time  # noqa: PLC0415

    # The default keep-alive is 15 s; the token lives 1.5 s.
    short = stack.jwks.make_token("auth0|alice", RW, exp=time.time() + 1.5)
    reader = await open_stream(session, stack, f"devices={S1}", headers={"Authorization": f"Bearer {short}"})
    opened = time.monotonic()
    await asyncio.wait_for(reader.ended.wait(), 10)
    assert reader.of("token_expired")
    assert time.monotonic() - opened < 5
    await reader.close()
