"""``GET /api/v1/devices`` a page at a time: ``limit``, ``after`` and the ``next`` link, over a real server."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.server.api_stack import ADMIN, RW, ServerStack
from thermo_bridge_protocol import parse_config
from thermo_bridge_server.http.routes.devices import MAX_DEVICES_PAGE
from thermo_bridge_sim import devices

IDS = [f"pg_{i:03d}" for i in range(25)]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ServerStack]:
    server = ServerStack(tmp_path, simulate=False, env={"rate_limit_per_minute": "100000"})
    await server.start()
    store = server.components.store
    for i, device_id in enumerate(IDS):
        wire = devices.sensor(device_id, name=device_id, measurements=devices.measurements("temperature"))
        await store.apply_config(parse_config(devices.encode(wire)), time.time())
        if i % 2:
            await store.apply_availability(device_id, True, time.time())
    assert await store.set_device_home(IDS[3], "other")
    yield server
    await server.stop()


async def _pages(stack: ServerStack, token: str, first: str) -> list[list[str]]:
    pages: list[list[str]] = []
    path: str | None = first
    while path is not None:
        resp = await stack.api.call("GET", path, token=token)
        assert resp.status == 200, resp.text
        body = resp.json()
        pages.append([d["id"] for d in body["devices"]])
        path = body["next"]
        assert len(pages) < 20
    return pages


async def test_pages_cover_every_device_once_in_order(stack: ServerStack) -> None:
    admin = stack.api.token("auth0|admin", ADMIN)
    pages = await _pages(stack, admin, "/api/v1/devices?limit=10")
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [d for page in pages for d in page] == IDS
    one = await stack.api.call("GET", "/api/v1/devices", token=admin)
    assert one.json()["next"] is None
    assert [d["id"] for d in one.json()["devices"]] == IDS  # the default page (1000) holds them all
    exact = await _pages(stack, admin, "/api/v1/devices?limit=25")
    assert exact == [IDS]  # a last page that is exactly full has no next link


async def test_the_next_link_keeps_the_filters(stack: ServerStack) -> None:
    admin = stack.api.token("auth0|admin", ADMIN)
    pages = await _pages(stack, admin, "/api/v1/devices?online=true&limit=4&kind=sensor")
    online = [d for i, d in enumerate(IDS) if i % 2]
    assert [d for page in pages for d in page] == online
    assert [len(p) for p in pages] == [4, 4, 4]
    user = stack.api.token("auth0|bob", RW, homes=["default"])
    seen = [d for page in await _pages(stack, user, "/api/v1/devices?limit=7") for d in page]
    assert seen == [d for d in IDS if d != IDS[3]]  # another home's device is on no page


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        (f"limit={MAX_DEVICES_PAGE + 1}", "limit"),
        ("limit=ten", "limit"),
        ("after=a%2Fb", "after"),
        ("after=" + "x" * 65, "after"),
        ("limit=5&limit=6", "limit"),
    ],
)
async def test_bad_paging_parameters_are_400(stack: ServerStack, query: str, parameter: str) -> None:
    resp = await stack.api.call("GET", f"/api/v1/devices?{query}", token=stack.api.token("auth0|admin", ADMIN))
    assert resp.status == 400
    assert resp.error["details"] == {"parameter": parameter}


def test_a_page_is_a_range_scan_of_the_primary_key(tmp_path: Path, stack: ServerStack) -> None:
    db = stack.workdir / "store.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT d.device_id FROM devices d LEFT JOIN availability a USING (device_id)"
            " WHERE TRUE AND d.device_id > ? ORDER BY d.device_id LIMIT ?",
            ("pg_010", 10),
        ).fetchall()
    finally:
        conn.close()
    text = " ".join(str(row[-1]) for row in plan)
    assert "SEARCH d USING" in text, text
    assert "device_id>?" in text, text
    assert "TEMP B-TREE" not in text, text  # no sort: the index order is the page order
