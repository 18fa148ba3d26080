"""Per-user isolation over real HTTP: no endpoint leaks another user's device, state, history or command.

Homes: T1 is in ``alpha``, T2 in ``beta``, S1 in ``gamma``. Users:
* alice: ``alpha`` through her token's namespaced homes claim;
* bob: ``beta`` through a server-side grant (set by an admin over the API), no claim;
* carol: ``gamma`` by claim and ``beta`` granted later (union of both sources);
* dave: valid token with permissions but no home at all.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.server.api_stack import ADMIN, RW, Response, ServerStack
from tests.waiting import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

T1, T2, S1 = "i_thermostat_1", "i_thermostat_2", "i_sensor_1"
HOME_OF = {T1: "alpha", T2: "beta", S1: "gamma"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerStack]:
    server = ServerStack(tmp_path_factory.mktemp("isolation"), prefix="i", env={"rate_limit_per_minute": "100000"})
    await server.start()
    admin = server.api.token("auth0|admin", ADMIN)
    for device, home in HOME_OF.items():
        resp = await server.api.call(
            "PUT", f"/api/v1/admin/devices/{device}/home", token=admin, json_body={"home": home}
        )
        assert resp.status == 200
    resp = await server.api.call("PUT", "/api/v1/admin/grants/auth0|bob", token=admin, json_body={"homes": ["beta"]})
    assert resp.status == 200
    yield server
    await server.stop()


def tokens(stack: ServerStack) -> dict[str, str]:
    api = stack.api
    return {
        "alice": api.token("auth0|alice", RW, homes=["alpha"]),
        "bob": api.token("auth0|bob", RW),
        "carol": api.token("auth0|carol", RW, homes=["gamma"]),
        "dave": api.token("auth0|dave", RW),
    }


VISIBLE = {"alice": {T1}, "bob": {T2}, "carol": {S1}, "dave": set()}


def assert_no_leak(resp: Response, device: str, stack: ServerStack) -> None:
    """A refusal carries the generic error and nothing about the device."""
    assert resp.status == 403
    assert resp.json() == {
        "error": {"status": 403, "code": "forbidden_device", "message": "you have no access to this device"}
    }
    sim_device = stack.sim.devices[device]
    text = resp.body.decode()
    assert sim_device.config.name not in text
    assert HOME_OF[device] not in text


async def test_each_user_lists_only_their_homes_devices(stack: ServerStack) -> None:
    for user, token in tokens(stack).items():
        resp = await stack.api.call("GET", "/api/v1/devices", token=token)
        assert resp.status == 200
        assert {d["id"] for d in resp.json()["devices"]} == VISIBLE[user], user
        for home in ("alpha", "beta", "gamma"):
            filtered = await stack.api.call("GET", "/api/v1/devices", token=token, params={"home": home})
            expected = {d for d in VISIBLE[user] if HOME_OF[d] == home}
            assert {d["id"] for d in filtered.json()["devices"]} == expected, (user, home)


async def test_foreign_devices_are_403_on_every_device_endpoint(stack: ServerStack) -> None:
    before = len(stack.sim.commands)
    for user, token in tokens(stack).items():
        for device in (T1, T2, S1):
            paths = [
                ("GET", f"/api/v1/devices/{device}", None),
                ("GET", f"/api/v1/devices/{device}/state", None),
                ("GET", f"/api/v1/devices/{device}/history", None),
                ("POST", f"/api/v1/devices/{device}/commands", {"values": {"hvac_mode": "off"}}),
            ]
            for method, path, body in paths:
                resp = await stack.api.call(method, path, token=token, json_body=body)
                if device in VISIBLE[user]:
                    assert resp.status in (200, 202, 422), (user, method, path, resp.status)
                else:
                    assert_no_leak(resp, device, stack)
    # Only the owners' own commands reached devices: alice → T1, bob → T2 (the sensor refuses with 422).
    await wait_for(lambda: len(stack.sim.commands) >= before + 2, what="the owners' commands")
    await asyncio.sleep(0.1)
    sent = [device for device, _ in stack.sim.commands[before:]]
    assert sorted(sent) == [T1, T2]


async def test_unknown_device_is_404_for_everyone(stack: ServerStack) -> None:
    for token in tokens(stack).values():
        resp = await stack.api.call("GET", "/api/v1/devices/i_thermostat_77/state", token=token)
        assert resp.status == 404
        assert resp.error["code"] == "unknown_device"


async def test_commands_are_visible_only_to_their_sender(stack: ServerStack) -> None:
    users = tokens(stack)
    admin = stack.api.token("auth0|admin", ADMIN)
    resp = await stack.api.call(
        "POST", f"/api/v1/devices/{T1}/commands", token=users["alice"], json_body={"values": {"preset": "eco"}}
    )
    assert resp.status == 202
    location = resp.headers["Location"]
    assert (await stack.api.call("GET", location, token=users["alice"])).status == 200
    assert (await stack.api.call("GET", location, token=admin)).status == 200
    for user in ("bob", "carol", "dave"):
        other = await stack.api.call("GET", location, token=users[user])
        assert other.status == 404, user
        assert other.json() == {"error": {"status": 404, "code": "unknown_command", "message": "no such command"}}
    # Even a user who can see the device does not see someone else's command.
    eve = stack.api.token("auth0|eve", RW, homes=["alpha"])
    assert (await stack.api.call("GET", location, token=eve)).status == 404


async def test_grant_changes_apply_on_the_next_request(stack: ServerStack) -> None:
    admin = stack.api.token("auth0|admin", ADMIN)
    carol = tokens(stack)["carol"]
    assert (await stack.api.call("GET", f"/api/v1/devices/{T2}", token=carol)).status == 403
    await stack.api.call("PUT", "/api/v1/admin/grants/auth0|carol", token=admin, json_body={"homes": ["beta"]})
    listed = await stack.api.call("GET", "/api/v1/devices", token=carol)
    assert {d["id"] for d in listed.json()["devices"]} == {S1, T2}  # claim plus grant
    assert (await stack.api.call("GET", f"/api/v1/devices/{T2}/state", token=carol)).status == 200

    await stack.api.call("PUT", "/api/v1/admin/grants/auth0|carol", token=admin, json_body={"homes": []})
    assert (await stack.api.call("GET", f"/api/v1/devices/{T2}/state", token=carol)).status == 403
    listed = await stack.api.call("GET", "/api/v1/devices", token=carol)
    assert {d["id"] for d in listed.json()["devices"]} == {S1}


async def test_moving_a_device_moves_its_visibility(stack: ServerStack) -> None:
    admin = stack.api.token("auth0|admin", ADMIN)
    alice = tokens(stack)["alice"]
    history_path = f"/api/v1/devices/{S1}/history"
    assert (await stack.api.call("GET", history_path, token=alice)).status == 403
    await stack.api.call("PUT", f"/api/v1/admin/devices/{S1}/home", token=admin, json_body={"home": "alpha"})
    try:
        resp = await stack.api.call("GET", history_path, token=alice, params={"start": str(time.time() - 600)})
        assert resp.status == 200
        assert resp.json()["points"], "alice now sees the sensor's history"
    finally:
        await stack.api.call("PUT", f"/api/v1/admin/devices/{S1}/home", token=admin, json_body={"home": "gamma"})
    assert (await stack.api.call("GET", history_path, token=alice)).status == 403


async def test_public_endpoints_carry_no_device_data(stack: ServerStack) -> None:
    for path in ("/health", "/metrics", "/api/v1/openapi.json"):
        resp = await stack.api.call("GET", path)
        assert resp.status == 200
        text = resp.body.decode()
        for device, sim_device in stack.sim.devices.items():
            assert device not in text, path
            assert sim_device.config.name not in text, path


async def test_non_admins_cannot_grant_themselves_homes(stack: ServerStack) -> None:
    dave = tokens(stack)["dave"]
    resp = await stack.api.call(
        "PUT", "/api/v1/admin/grants/auth0|dave", token=dave, json_body={"homes": ["alpha", "beta", "gamma"]}
    )
    assert resp.status == 403
    listed = await stack.api.call("GET", "/api/v1/devices", token=dave)
    assert listed.json() == {"devices": [], "next": None}
    admin = stack.api.token("auth0|admin", ADMIN)
    grants = await stack.api.call("GET", "/api/v1/admin/grants/auth0|dave", token=admin)
    assert json.loads(grants.body)["homes"] == []
