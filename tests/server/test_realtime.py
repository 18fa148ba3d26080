"""The WebSocket API against a real server, broker, simulator and RS256 tokens (docs/websocket.md).

Homes: T1 in ``alpha``, T2 in ``beta``, S1 in ``gamma``. Users: alice sees ``alpha`` (token
claim), bob ``beta`` (server-side grant), carol ``gamma`` (claim), the admin everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.server.api_stack import ADMIN, RW, ServerStack
from tests.server.realtime_client import WsClient
from tests.waiting import wait_for
from thermo_bridge_server.realtime.connection import MAX_PENDING

pytestmark = pytest.mark.asyncio(loop_scope="module")

T1, T2, S1 = "r_thermostat_1", "r_thermostat_2", "r_sensor_1"
HOME_OF = {T1: "alpha", T2: "beta", S1: "gamma"}
READ = ("read:devices",)
ORIGIN = "https://app.example.com"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerStack]:
    server = ServerStack(
        tmp_path_factory.mktemp("realtime"),
        prefix="r",
        env={"rate_limit_per_minute": "100000", "cors_origins": ORIGIN, "ws_allow_no_origin": "true"},
    )
    await server.start()
    store = server.components.store
    for device, home in HOME_OF.items():
        assert await store.set_device_home(device, home)
    await store.set_grants("auth0|bob", ["beta"])
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def clients(stack: ServerStack) -> AsyncIterator[list[WsClient]]:
    """Make clients with ``new(stack)``; every one is closed afterwards."""
    made: list[WsClient] = []
    yield made
    for client in made:
        await client.close()


def new(stack: ServerStack, made: list[WsClient], origin: str | None = None) -> WsClient:
    client = WsClient(stack.api.base_url, origin=origin)
    made.append(client)
    return client


def token(stack: ServerStack, user: str, permissions: tuple[str, ...] = RW, **claims: Any) -> str:
    homes = {"alice": ["alpha"], "carol": ["gamma"]}.get(user)
    if user == "admin":
        permissions = ADMIN
    return stack.jwks.make_token(f"auth0|{user}", permissions, homes=homes, **claims)


async def authed(stack: ServerStack, made: list[WsClient], user: str, **kwargs: Any) -> WsClient:
    client = new(stack, made)
    auth = await client.connect(token(stack, user, **kwargs))
    assert auth["type"] == "auth_ok", auth
    return client


# --------------------------------------------------------------------------- auth


async def test_auth_ok_carries_identity_expiry_and_log_position(stack: ServerStack, clients: list[WsClient]) -> None:
    client = new(stack, clients)
    before = time.time()
    auth = await client.connect(stack.jwks.make_token("auth0|alice", RW, homes=["alpha"], exp=time.time() + 600))
    assert auth["type"] == "auth_ok"
    assert auth["sub"] == "auth0|alice"
    assert auth["permissions"] == ["read:devices", "write:devices"]
    assert before + 590 < auth["expires_at"] < before + 610
    assert auth["epoch"] == stack.components.store.epoch
    assert auth["offset"] == stack.components.realtime.hub.position or auth["offset"] > 0
    assert auth["version"] == stack.components.realtime.settings.version


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ({"type": "auth", "access_token": "not-a-jwt"}, "invalid_token"),
        ({"type": "auth"}, "invalid_message"),
        ({"type": "subscribe", "id": 1}, "invalid_message"),
        ({"type": "auth", "access_token": 7}, "invalid_message"),
        ("nonsense", "invalid_message"),
    ],
)
async def test_a_bad_auth_message_is_auth_invalid_then_close(
    stack: ServerStack, clients: list[WsClient], first: Any, code: str
) -> None:
    client = new(stack, clients)
    await client.connect(None)
    assert client.ws is not None
    if isinstance(first, str):
        await client.ws.send_str(first)
    else:
        await client.ws.send_json(first)
    reply = await client.ws.receive_json(timeout=10)
    assert reply["type"] == "auth_invalid"
    assert reply["code"] == code
    assert reply["message"]
    closing = await client.ws.receive(timeout=10)
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert client.ws.close_code == 4002


async def test_expired_and_wrong_audience_tokens_are_refused(stack: ServerStack, clients: list[WsClient]) -> None:
    for bad in (
        stack.jwks.make_token("auth0|alice", RW, exp=time.time() - 120),
        stack.jwks.make_token("auth0|alice", RW, aud="https://other.example.com"),
        stack.jwks.make_token("auth0|alice", ()),  # no read permission
    ):
        client = new(stack, clients)
        auth = await client.connect(bad)
        assert auth["type"] == "auth_invalid"
        assert auth["code"] in {"invalid_token", "insufficient_scope"}


async def test_no_auth_within_the_timeout_closes_with_4001(stack: ServerStack, clients: list[WsClient]) -> None:
    realtime = stack.components.realtime
    original = realtime.settings
    realtime.settings = dataclasses.replace(original, auth_timeout=0.5)
    try:
        client = new(stack, clients)
        await client.connect(None)
        assert client.ws is not None
        closing = await client.ws.receive(timeout=10)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert client.ws.close_code == 4001
    finally:
        realtime.settings = original


async def test_expiry_mid_connection_warns_then_closes_with_4003(stack: ServerStack, clients: list[WsClient]) -> None:
    realtime = stack.components.realtime
    original = realtime.settings
    realtime.settings = dataclasses.replace(original, expiry_grace=0.5)
    try:
        client = new(stack, clients)
        auth = await client.connect(stack.jwks.make_token("auth0|alice", RW, homes=["alpha"], exp=time.time() + 2))
        assert auth["type"] == "auth_ok"
        await client.closed.wait()
        assert {"type": "token_expired"} in client.others
        assert client.close_code == 4003
    finally:
        realtime.settings = original


async def test_refresh_keeps_the_socket_and_its_subscriptions(stack: ServerStack, clients: list[WsClient]) -> None:
    realtime = stack.components.realtime
    original = realtime.settings
    realtime.settings = dataclasses.replace(original, expiry_grace=0.5)
    try:
        client = new(stack, clients)
        await client.connect(stack.jwks.make_token("auth0|alice", RW, homes=["alpha"], exp=time.time() + 3))
        sub_id, _ = await client.subscribe(devices=[T1], events=["state"], snapshot=False)
        fresh = stack.jwks.make_token("auth0|alice", RW, homes=["alpha"], exp=time.time() + 600)
        refreshed = await client.request({"type": "auth", "access_token": fresh})
        assert refreshed["success"], refreshed
        assert refreshed["result"]["expires_at"] > time.time() + 500
        await asyncio.sleep(4)  # past the first token's expiry and grace
        assert not client.closed.is_set()
        stack.sim.publish_state(T1, temperature=23.25)
        await client.until(
            lambda: any(e["data"]["values"].get("temperature") == 23.25 for e in client.of(sub_id)),
            "the state after the refresh",
        )
        other = await client.request({"type": "auth", "access_token": stack.jwks.make_token("auth0|bob", RW)})
        assert other["error"]["code"] == "sub_mismatch"
        garbage = await client.request({"type": "auth", "access_token": "x.y.z"})
        assert garbage["error"]["code"] == "invalid_token"
        assert not client.closed.is_set()
    finally:
        realtime.settings = original


# --------------------------------------------------------------------------- commands and errors


async def test_message_errors_keep_the_connection_open(stack: ServerStack, clients: list[WsClient]) -> None:
    client = await authed(stack, clients, "admin")
    assert client.ws is not None
    await client.ws.send_str("{not json")
    await client.ws.send_json([1, 2])
    await client.ws.send_json({"type": "ping"})  # no id
    await client.ws.send_bytes(b"\x00")
    await client.until(lambda: len([m for m in client.messages if m.get("id") is None]) >= 4, "four errors")
    codes = [m["error"]["code"] for m in client.messages if m.get("id") is None]
    assert codes == ["invalid_message"] * 4
    unknown = await client.request({"type": "teleport"})
    assert unknown["error"]["code"] == "unknown_command"
    bad = await client.request({"type": "subscribe", "devices": "all"})
    assert bad["error"]["code"] == "invalid_message"
    assert bad["error"]["details"]["path"] == "devices"
    extra = await client.request({"type": "get_state", "device_id": T1, "color": "red"})
    assert extra["error"]["code"] == "invalid_message"
    await client.send({"type": "ping"})
    assert client.ws is not None
    await client.ws.send_json({"id": 1, "type": "ping"})  # an id that does not increase
    reuse = await wait_for(
        lambda: [m for m in client.messages if m.get("error", {}).get("code") == "id_reuse"], what="the id_reuse error"
    )
    assert reuse[0]["id"] == 1
    pong = await wait_for(lambda: [m for m in client.messages if m.get("type") == "pong"], what="a pong")
    assert pong[0]["id"] == client.next_id
    state = await client.request({"type": "get_state", "device_id": T1})
    assert state["success"]
    assert state["result"]["device_id"] == T1


async def test_get_devices_and_get_state_follow_access(stack: ServerStack, clients: list[WsClient]) -> None:
    alice = await authed(stack, clients, "alice")
    devices = await alice.request({"type": "get_devices"})
    assert [d["id"] for d in devices["result"]["devices"]] == [T1]
    assert (await alice.request({"type": "get_devices", "homes": ["beta"]}))["result"]["devices"] == []
    assert (await alice.request({"type": "get_state", "device_id": T2}))["error"]["code"] == "forbidden_device"
    assert (await alice.request({"type": "get_state", "device_id": "ghost"}))["error"]["code"] == "unknown_device"
    admin = await authed(stack, clients, "admin")
    kinds = await admin.request({"type": "get_devices", "kinds": ["sensor"]})
    assert [d["id"] for d in kinds["result"]["devices"]] == [S1]


async def test_send_command_is_acked_on_its_own_id(stack: ServerStack, clients: list[WsClient]) -> None:
    alice = await authed(stack, clients, "alice")
    msg = {"type": "send_command", "device_id": T1, "values": {"target_temperature": 21.5}}
    result = await alice.request(msg)
    assert result["success"], result
    command = result["result"]
    assert command["status"] == "pending"
    await alice.until(lambda: any(e["data"]["status"] == "acked" for e in alice.of(result["id"])), "the ack")
    (acked,) = [e for e in alice.of(result["id"]) if e["data"]["status"] == "acked"]
    assert acked["type"] == "command"
    assert acked["data"]["id"] == command["id"]
    assert acked["data"]["sub"] == "auth0|alice"
    assert acked["offset"] > 0


async def test_send_command_errors(stack: ServerStack, clients: list[WsClient]) -> None:
    alice = await authed(stack, clients, "alice")
    too_hot = await alice.request({"type": "send_command", "device_id": T1, "values": {"target_temperature": 99}})
    assert too_hot["error"]["code"] == "invalid_command"
    assert too_hot["error"]["details"] == {"reason": "out_of_range", "path": "target_temperature"}
    foreign = await alice.request({"type": "send_command", "device_id": T2, "values": {"hvac_mode": "off"}})
    assert foreign["error"]["code"] == "forbidden_device"
    reader = await authed(stack, clients, "alice", permissions=READ)
    refused = await reader.request({"type": "send_command", "device_id": T1, "values": {"hvac_mode": "off"}})
    assert refused["error"]["code"] == "insufficient_scope"


async def test_an_idempotency_key_sends_once_and_answers_again(stack: ServerStack, clients: list[WsClient]) -> None:
    alice = await authed(stack, clients, "alice")
    msg = {"type": "send_command", "device_id": T1, "values": {"target_temperature": 19.5}, "idempotency_key": "k-ws-1"}
    first = await alice.request(msg)
    await alice.until(lambda: any(e["data"]["status"] == "acked" for e in alice.of(first["id"])), "the ack")
    again = await alice.request(msg)
    assert again["result"]["id"] == first["result"]["id"]
    assert again["result"]["status"] == "acked"  # the earlier command, as it is now
    conflict = await alice.request({**msg, "values": {"target_temperature": 20.0}})
    assert conflict["error"]["code"] == "idempotency_conflict"
    rest = await stack.api.call(
        "POST",
        f"/api/v1/devices/{T1}/commands",
        token=token(stack, "alice"),
        json_body={"values": {"target_temperature": 19.5}},
        headers={"Idempotency-Key": "k-ws-1"},
    )
    assert rest.status == 202
    assert rest.json()["id"] == first["result"]["id"]  # the same key across REST and the WebSocket
    commands = [
        e
        for e in await stack.components.store.events_since(0, limit=100_000)
        if e.data.get("id") == first["result"]["id"]
    ]
    assert [e.data["status"] for e in commands] == ["pending", "acked"]  # published once


# --------------------------------------------------------------------------- events, filters, isolation


async def test_every_event_type_and_the_filters(stack: ServerStack, clients: list[WsClient]) -> None:
    admin = await authed(stack, clients, "admin")
    everything, _ = await admin.subscribe(snapshot=False)
    states, _ = await admin.subscribe(events=["state"], snapshot=False)
    sensors, _ = await admin.subscribe(kinds=["sensor"], snapshot=False)
    beta, _ = await admin.subscribe(homes=["beta"], snapshot=False)
    one, _ = await admin.subscribe(devices=[T2], events=["device_event", "availability"], snapshot=False)

    stack.sim.publish_state(S1, temperature=12.5)
    stack.sim.publish_state(T2, temperature=22.5)
    stack.sim.emit_event(T2, "button_press", {"button": "up"})
    sent = await admin.request({"type": "send_command", "device_id": T2, "values": {"hvac_mode": "heat"}})
    store = stack.components.store
    await store.set_device_home(S1, "delta")
    await store.set_device_home(S1, "gamma")
    await store.apply_availability(T2, False, time.time())
    await store.apply_availability(T2, True, time.time())
    config = (await store.get_device(S1)).config  # type: ignore[union-attr]
    await store.apply_config(dataclasses.replace(config, name="Renamed sensor"), time.time())
    await admin.until(
        lambda: (
            {e["type"] for e in admin.of(everything)}
            >= {"state", "device_event", "command", "device_removed", "device_updated", "availability"}
        ),
        "every event type",
    )
    await admin.until(lambda: any(e["data"]["status"] == "acked" for e in admin.of(sent["id"])), "the ack")
    await asyncio.sleep(0.3)
    seen = admin.of(everything)
    offsets = [e["offset"] for e in seen]
    assert offsets == sorted(set(offsets))
    assert all(e["type"] == "state" for e in admin.of(states))
    assert {e["device_id"] for e in admin.of(sensors)} == {S1}
    assert {e["device_id"] for e in admin.of(beta)} == {T2}
    assert {e["type"] for e in admin.of(one)} == {"device_event", "availability"}
    assert {e["device_id"] for e in admin.of(one)} == {T2}
    moved = [e for e in seen if e["device_id"] == S1 and e["type"] in {"device_removed", "device_updated"}]
    assert [(e["type"], e["home"]) for e in moved] == [
        ("device_removed", "gamma"),
        ("device_updated", "delta"),
        ("device_removed", "delta"),
        ("device_updated", "gamma"),
        ("device_updated", "gamma"),  # the renamed config
    ]
    press = next(e for e in seen if e["type"] == "device_event")
    assert press["data"]["event"] == "button_press"
    assert press["data"]["data"] == {"button": "up"}
    for event in seen:
        assert set(event) == {"type", "device_id", "home", "offset", "epoch", "ts", "data"}
        assert event["epoch"] == store.epoch


async def test_four_users_never_see_each_others_devices(stack: ServerStack, clients: list[WsClient]) -> None:
    users = {name: await authed(stack, clients, name) for name in ("alice", "bob", "carol", "admin")}
    subs = {name: (await client.subscribe())[0] for name, client in users.items()}
    snapshot_of = {
        name: {d["id"] for d in client.results[subs[name]]["result"]["snapshot"]["devices"]}
        for name, client in users.items()
    }
    visible = {"alice": {T1}, "bob": {T2}, "carol": {S1}, "admin": {T1, T2, S1}}
    assert snapshot_of == visible
    for device in (T1, T2, S1):
        stack.sim.publish_state(device, temperature=17.25)
    for name, client in users.items():
        if name != "admin":
            values = {T1: {"target_temperature": 20.5}, T2: {"target_temperature": 20.5}, S1: None}
            for device in visible[name]:
                if values[device] is not None:
                    await client.request({"type": "send_command", "device_id": device, "values": values[device]})

    def states_seen(client: WsClient, name: str) -> set[str]:
        return {
            e["device_id"] for e in client.of(subs[name]) if e["data"].get("values", {}).get("temperature") == 17.25
        }

    for name, client in users.items():
        await client.until(
            lambda client=client, name=name: states_seen(client, name) == visible[name],  # type: ignore[misc]
            f"{name}'s states",
        )
    await asyncio.sleep(0.5)
    for name, client in users.items():
        events = client.of(subs[name])
        assert {e["device_id"] for e in events} <= visible[name], name
        commands = [e for e in events if e["type"] == "command"]
        if name == "admin":
            assert {e["data"]["sub"] for e in commands} >= {"auth0|alice", "auth0|bob"}
        else:
            assert all(e["data"]["sub"] == f"auth0|{name}" for e in commands), name
        everything = json.dumps(client.messages)
        for device in {T1, T2, S1} - visible[name]:
            assert device not in everything, (name, device)


async def test_grant_changes_apply_to_open_streams(stack: ServerStack, clients: list[WsClient]) -> None:
    dave = await authed(stack, clients, "dave")
    sub_id, result = await dave.subscribe()
    assert result["snapshot"]["devices"] == []
    await stack.components.store.set_grants("auth0|dave", ["gamma"])
    await asyncio.sleep(0.3)
    stack.sim.publish_state(S1, temperature=8.5)
    await dave.until(lambda: any(e["device_id"] == S1 for e in dave.of(sub_id)), "the granted home's events")
    await stack.components.store.set_grants("auth0|dave", [])
    await asyncio.sleep(0.3)
    count = len(dave.of(sub_id))
    stack.sim.publish_state(S1, temperature=9.5)
    await asyncio.sleep(0.5)
    assert len(dave.of(sub_id)) == count  # revoked: nothing more


# --------------------------------------------------------------------------- resume


async def test_resume_after_a_client_drop_replays_exactly_the_missed_events(
    stack: ServerStack, clients: list[WsClient]
) -> None:
    first = await authed(stack, clients, "admin")
    sub_id, start = await first.subscribe(devices=[T1, T2], snapshot=False)
    for i in range(5):
        stack.sim.publish_state(T1, temperature=15 + i / 4)
    await first.until(lambda: len(first.of(sub_id)) >= 5, "five events")
    position = {"epoch": start["epoch"], "offset": first.of(sub_id)[-1]["offset"]}
    await first.close()
    for i in range(7):
        stack.sim.publish_state(T2, temperature=25 + i / 4)
    store = stack.components.store
    missed: list[Any] = await wait_for(
        lambda: _missed(store, position["offset"], {T1, T2}, at_least=7), what="seven missed events in the log"
    )
    second = await authed(stack, clients, "admin")
    again, result = await second.subscribe(devices=[T1, T2], since=position)
    assert result["recovered"] is True
    assert result["epoch"] == position["epoch"]
    await second.until(lambda: len(second.of(again)) >= len(missed), "the replay")
    replayed = [e["offset"] for e in second.of(again)]
    assert replayed[: len(missed)] == [e.offset for e in missed]
    assert len(replayed) == len(set(replayed))
    stack.sim.publish_state(T1, temperature=30.5)
    await second.until(
        lambda: any(e["data"].get("values", {}).get("temperature") == 30.5 for e in second.of(again)), "live again"
    )
    assert [e["offset"] for e in second.of(again)] == sorted({e["offset"] for e in second.of(again)})


async def _missed(store: Any, after: int, devices: set[str], at_least: int) -> list[Any] | None:
    found = [e for e in await store.events_since(after, limit=100_000) if e.device_id in devices]
    return found if len(found) >= at_least else None


async def test_not_recoverable_positions_get_a_snapshot(stack: ServerStack, clients: list[WsClient]) -> None:
    client = await authed(stack, clients, "admin")
    epoch = stack.components.store.epoch
    _, other_db = await client.subscribe(since={"epoch": "0" * 32, "offset": 5})
    assert (other_db["recovered"], other_db["reason"]) == (False, "epoch_changed")
    assert {d["id"] for d in other_db["snapshot"]["devices"]} == {T1, T2, S1}
    _, future = await client.subscribe(since={"epoch": epoch, "offset": 10**12})
    assert (future["recovered"], future["reason"]) == (False, "offset_unknown")
    _, no_snapshot = await client.subscribe(since={"epoch": "0" * 32, "offset": 5}, snapshot=False)
    assert no_snapshot["recovered"] is False
    assert "snapshot" not in no_snapshot
    for device in no_snapshot, other_db:
        assert device["offset"] >= 0


# --------------------------------------------------------------------------- limits, origins


async def test_origin_is_checked_at_the_handshake(stack: ServerStack, clients: list[WsClient]) -> None:
    allowed = new(stack, clients, origin=ORIGIN)
    assert (await allowed.connect(token(stack, "alice")))["type"] == "auth_ok"
    own = new(stack, clients, origin=stack.api.base_url)
    assert (await own.connect(token(stack, "alice")))["type"] == "auth_ok"
    evil = new(stack, clients, origin="https://evil.example.com")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await evil.connect(token(stack, "alice"))
    assert refused.value.status == 403
    realtime = stack.components.realtime
    original = realtime.settings
    realtime.settings = dataclasses.replace(original, allow_no_origin=False)
    try:
        bare = new(stack, clients)
        with pytest.raises(aiohttp.WSServerHandshakeError) as bare_refused:
            await bare.connect(token(stack, "alice"))
        assert bare_refused.value.status == 403
    finally:
        realtime.settings = original


async def test_connection_subscription_and_frame_limits(stack: ServerStack, clients: list[WsClient]) -> None:
    realtime = stack.components.realtime
    original = realtime.settings
    realtime.settings = dataclasses.replace(
        original, max_connections_per_user=2, max_subscriptions=3, max_message_bytes=2048
    )
    try:
        a = await authed(stack, clients, "carol")
        await authed(stack, clients, "carol")
        third = new(stack, clients)
        refused = await third.connect(token(stack, "carol"))
        assert (refused["type"], refused["code"]) == ("auth_invalid", "too_many_connections")
        for _ in range(3):
            await a.subscribe(snapshot=False)
        over = await a.request({"type": "subscribe", "snapshot": False})
        assert over["error"]["code"] == "too_many_subscriptions"
        assert a.ws is not None
        await a.ws.send_str(json.dumps({"id": 99, "type": "ping", "pad": "x" * 4096}))
        await a.closed.wait()
        assert a.close_code == 1009
    finally:
        realtime.settings = original


async def test_a_message_flood_is_closed_with_4029(stack: ServerStack, clients: list[WsClient]) -> None:
    flooder = await authed(stack, clients, "alice")
    assert flooder.ws is not None
    for i in range(1, 400):
        await flooder.ws.send_json({"id": i, "type": "ping"})
    await asyncio.wait_for(flooder.closed.wait(), 10)
    assert flooder.close_code == 4029


async def test_a_slow_consumer_is_closed_with_its_position_and_the_others_keep_up(
    stack: ServerStack, clients: list[WsClient]
) -> None:
    from thermo_bridge_protocol import DeviceEvent  # noqa: PLC0415

    realtime = stack.components.realtime
    fast = await authed(stack, clients, "admin")
    fast_sub, _ = await fast.subscribe(devices=[T1], snapshot=False)
    before = set(realtime.connections)
    slow = new(stack, clients)
    await slow.connect(token(stack, "admin"), read=False)  # never reads: its socket buffers fill up
    assert slow.ws is not None
    await slow.ws.send_json({"id": 1, "type": "subscribe", "devices": [T2], "snapshot": False})
    (slow_conn,) = await wait_for(
        lambda: [c for c in realtime.connections - before if c.subscriptions], what="the slow client's subscription"
    )
    store = stack.components.store
    pad = "p" * 2000  # about 2 KB per event: the socket's buffers fill after a few hundred
    writes = [
        store.record_device_event(T2, DeviceEvent("button_press", {"pad": pad, "i": i}, None), time.time())
        for i in range(MAX_PENDING + 2000)
    ]
    stack.sim.publish_state(T1, temperature=11.75)
    await fast.until(
        lambda: any(e["data"].get("values", {}).get("temperature") == 11.75 for e in fast.of(fast_sub)),
        "the fast client's update while the slow one is flooded",
    )
    await asyncio.gather(*writes)
    await wait_for(lambda: slow_conn.close_code == 4008, what="the slow client closed as slow_consumer")
    assert slow_conn not in realtime.connections
    assert realtime.figures()["slow_consumers_total"] >= 1
    reason = json.loads(slow_conn.position_reason("slow_consumer", store.epoch))
    assert reason == {"code": "slow_consumer", "epoch": store.epoch, "offset": slow_conn.last_offset}
    assert not fast.closed.is_set()


async def test_a_peer_that_stops_answering_pings_is_dropped(stack: ServerStack, clients: list[WsClient]) -> None:
    realtime = stack.components.realtime
    original = realtime.settings
    realtime.settings = dataclasses.replace(original, heartbeat=0.4)
    try:
        session = aiohttp.ClientSession()
        try:
            url = stack.api.base_url.replace("http://", "ws://") + "/api/v1/ws"
            ws = await session.ws_connect(url, autoping=False)  # never answers the server's pings
            await ws.receive_json(timeout=10)
            await ws.send_json({"type": "auth", "access_token": token(stack, "alice")})
            assert (await ws.receive_json(timeout=10))["type"] == "auth_ok"
            async with asyncio.timeout(10):
                while (msg := await ws.receive()).type is aiohttp.WSMsgType.PING:
                    pass
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            await wait_for(
                lambda: not [c for c in realtime.connections if c.access.principal.sub == "auth0|alice"],
                what="the dead peer's stream released",
            )
        finally:
            await session.close()
    finally:
        realtime.settings = original


async def test_connections_waiting_to_authenticate_are_capped_per_address(
    stack: ServerStack, clients: list[WsClient]
) -> None:
    realtime = stack.components.realtime
    original = realtime.settings
    realtime.settings = dataclasses.replace(original, max_unauthenticated_per_address=3)
    try:
        waiting = [new(stack, clients) for _ in range(3)]
        for client in waiting:
            await client.connect(None)  # handshake done, no auth sent
        extra = new(stack, clients)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await extra.connect(None)
        assert refused.value.status == 429
        assert refused.value.headers is not None
        assert refused.value.headers["Retry-After"] == "5"
        await waiting[0].close()
        await wait_for(lambda: realtime.unauthenticated.get("127.0.0.1", 0) < 3, what="a slot freed")
        again = new(stack, clients)
        assert (await again.connect(token(stack, "alice")))["type"] == "auth_ok"
    finally:
        realtime.settings = original


async def test_commands_share_the_per_user_rate_limit(stack: ServerStack, clients: list[WsClient]) -> None:
    from thermo_bridge_server.ratelimit import RateLimiter  # noqa: PLC0415

    realtime = stack.components.realtime
    original = realtime.command_limiter
    realtime.command_limiter = RateLimiter(60, burst=2)
    try:
        alice = await authed(stack, clients, "alice")
        answers = [
            await alice.request({"type": "send_command", "device_id": T1, "values": {"hvac_mode": "heat"}})
            for _ in range(3)
        ]
        assert [a["success"] for a in answers] == [True, True, False]
        assert answers[2]["error"]["code"] == "rate_limited"
    finally:
        realtime.command_limiter = original
