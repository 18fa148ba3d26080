"""Hypothesis-generated WebSocket frames against a live, authenticated socket.

Each example opens a socket as a real user (RS256 token), sends a batch of generated frames
(near-valid commands of the catalogue in docs/websocket.md with generated fields, arbitrary
JSON, text that is not JSON, binary frames), then a ping. Every reply up to the pong must be
a documented message: a ``result`` that succeeded, or failed with a code the documentation
lists (never ``internal_error``), an ``event`` of a subscription the batch made, or the pong.
The pong proves the connection stayed usable. After the examples, every connection,
subscription, task and session object the sockets made is gone again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.api_stack import RW, ServerStack
from tests.server.realtime_client import WsClient
from tests.waiting import wait_for
from thermo_bridge_server.realtime.commands import COMMANDS, EVENT_TYPES, MAX_ID
from thermo_bridge_server.realtime.connection import Connection
from thermo_bridge_server.realtime.hub import Subscription
from thermo_bridge_server.realtime.websocket import Session

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXAMPLES = 300
DOCUMENTED_CODES = frozenset(
    {
        # docs/websocket.md: the REST codes and the WebSocket's own
        "invalid_message",
        "unknown_command",
        "id_reuse",
        "too_many_subscriptions",
        "unknown_subscription",
        "too_many_requests",
        "rate_limited",
        "unknown_device",
        "forbidden_device",
        "insufficient_scope",
        "invalid_command",
        "broker_unavailable",
        "idempotency_conflict",
        "invalid_token",
        "sub_mismatch",
        "auth_unavailable",
    }
)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerStack]:
    server = ServerStack(
        tmp_path_factory.mktemp("wsfuzz"),
        prefix="w",
        env={
            "rate_limit_per_minute": "1000000",
            "ws_handshakes_per_minute": "1000000",
            "ws_allow_no_origin": "true",
        },
    )
    await server.start()
    realtime = server.components.realtime
    # Batches arrive faster than a person types: the message-rate close (4029) is not under test.
    realtime.settings = dataclasses.replace(realtime.settings, messages_per_second=100_000)
    yield server
    await server.stop()


# --------------------------------------------------------------------------- strategies

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ids = st.integers(min_value=1, max_value=2**31) | st.sampled_from([0, -1, MAX_ID - 1, MAX_ID + 1]) | json_values
DEVICES = ["w_thermostat_1", "w_thermostat_2", "w_sensor_1"]
device_ids = st.sampled_from(DEVICES) | st.text(max_size=70) | json_values
id_lists = st.lists(device_ids, max_size=4) | json_values
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "access_token": st.text(max_size=64) | json_values,
    "devices": id_lists,
    "kinds": st.lists(st.sampled_from(["thermostat", "sensor", "boiler"]), max_size=3) | json_values,
    "homes": st.lists(st.sampled_from(["default", "alpha", "a b"]) | st.text(max_size=8), max_size=3) | json_values,
    "events": st.lists(st.sampled_from([*EVENT_TYPES, "grants", "nope"]), max_size=4) | json_values,
    "since": st.fixed_dictionaries({"epoch": st.text(max_size=70), "offset": st.integers(-1, 2**60)}) | json_values,
    "snapshot": st.booleans() | json_values,
    "device_id": device_ids,
    "subscription": ids,
    "values": st.dictionaries(
        st.sampled_from(["hvac_mode", "target_temperature", "preset", "fan_mode", "x"]),
        st.sampled_from(["heat", "off", "eco"]) | st.floats(5, 35) | json_values,
        max_size=3,
    )
    | json_values,
    "idempotency_key": st.text(max_size=130) | json_values,
}
# Each command's own fields (from the schemas the server validates with), any subset of them,
# sometimes with one field that belongs to another command.
COMMAND_FIELDS = {
    name: [str(key) for key in schema.schema if str(key) not in ("id", "type")]
    for name, (schema, _handler) in COMMANDS.items()
}


def _command(name: str) -> st.SearchStrategy[dict[str, Any]]:
    own = COMMAND_FIELDS[name]
    chosen = st.lists(st.sampled_from(own), unique=True) if own else st.just([])
    stray = st.lists(st.sampled_from(sorted(FIELDS)), max_size=1)
    return st.tuples(ids, chosen, stray).flatmap(
        lambda parts: st.fixed_dictionaries({field: FIELDS[field] for field in sorted({*parts[1], *parts[2]})}).map(
            lambda fields: {"id": parts[0], "type": name, **fields}
        )
    )


commands = st.one_of(
    *(_command(name) for name in COMMAND_FIELDS),
    st.fixed_dictionaries({"id": ids, "type": st.sampled_from(["nope", "", "AUTH"]) | json_values}),
)
frames = st.lists(
    st.one_of(
        commands.map(lambda m: ("text", json.dumps(m))),
        json_values.map(lambda v: ("text", json.dumps(v))),
        st.text(max_size=200).map(lambda t: ("text", t)),
        st.binary(max_size=64).map(lambda b: ("binary", b)),
    ),
    min_size=1,
    max_size=8,
)


# --------------------------------------------------------------------------- the exchange


async def _exchange(stack: ServerStack, token: str, batch: list[tuple[str, Any]]) -> None:
    client = WsClient(stack.api.base_url)
    try:
        assert (await client.connect(token))["type"] == "auth_ok"
        assert client.ws is not None
        sent_ids: set[Any] = set()
        subscribed: set[Any] = set()
        for kind, data in batch:
            if kind == "binary":
                await client.ws.send_bytes(data)
                continue
            await client.ws.send_str(data)
            try:
                message = json.loads(data)
            except ValueError:
                continue
            if isinstance(message, dict):
                sent_ids.add(json.dumps(message.get("id")))
                if message.get("type") == "subscribe":
                    subscribed.add(json.dumps(message.get("id")))
        # A ping whose id is above anything the batch could have used: its pong closes the batch.
        await client.ws.send_json({"id": MAX_ID, "type": "ping"})
        await client.until(lambda: any(m.get("type") == "pong" for m in client.others), "the pong", timeout=20)
        assert not client.closed.is_set(), (client.close_code, batch)
        for message in client.messages:
            kind = message["type"]
            if kind == "pong":
                assert message == {"id": MAX_ID, "type": "pong"} or json.dumps(message["id"]) in sent_ids
            elif kind == "event":
                assert json.dumps(message["id"]) in subscribed | sent_ids, message  # a subscription or a command
            else:
                assert kind == "result", message
                assert message["id"] is None or json.dumps(message["id"]) in sent_ids, message
                if message["success"] is False:
                    error = message["error"]
                    assert error["code"] in DOCUMENTED_CODES, (error, batch)
                    assert isinstance(error["message"], str)
                    assert error["message"]
                else:
                    assert message["success"] is True
                    assert "result" in message
    finally:
        await client.close()


def _live_objects() -> dict[str, int]:
    gc.collect()
    counts = dict.fromkeys(("Session", "Connection", "Subscription"), 0)
    for obj in gc.get_objects():
        if isinstance(obj, Session | Connection | Subscription):
            counts[type(obj).__name__] += 1
    return counts


async def test_generated_frames_get_documented_answers_and_leave_nothing_behind(stack: ServerStack) -> None:
    realtime = stack.components.realtime
    token = stack.jwks.make_token("auth0|fuzz", RW, homes=["default"])
    loop = asyncio.get_running_loop()
    await _exchange(stack, token, [("text", json.dumps({"id": 1, "type": "ping"}))])  # warm-up
    nothing = {"Session": 0, "Connection": 0, "Subscription": 0}
    await wait_for(lambda: _live_objects() == nothing, what="the warm-up socket's objects freed")
    baseline_tasks = len(asyncio.all_tasks())
    baseline_figures = {k: realtime.figures()[k] for k in ("connections", "subscriptions")}
    tried = 0

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=frames)
    def run(batch: list[tuple[str, Any]]) -> None:
        nonlocal tried
        tried += 1
        asyncio.run_coroutine_threadsafe(_exchange(stack, token, batch), loop).result(timeout=60)

    await asyncio.to_thread(run)
    assert tried >= EXAMPLES
    await wait_for(lambda: not realtime.connections, what="every fuzzed socket released")
    assert {k: realtime.figures()[k] for k in baseline_figures} == baseline_figures
    await wait_for(lambda: len(asyncio.all_tasks()) <= baseline_tasks, what="no task left behind")
    await wait_for(lambda: _live_objects() == nothing, what="no session, connection or subscription left behind")


async def test_a_binary_frame_and_garbage_leave_the_socket_usable(stack: ServerStack) -> None:
    """The same property for the frames a browser bug would send, without Hypothesis."""
    token = stack.jwks.make_token("auth0|fuzz", RW)
    await _exchange(
        stack,
        token,
        [("binary", b"\x00\xff"), ("text", "{"), ("text", "[]"), ("text", '{"id": 5, "type": "subscribe", "x": 1}')],
    )
    async with aiohttp.ClientSession() as session:
        url = stack.api.base_url.replace("http://", "ws://") + "/api/v1/ws"
        async with session.ws_connect(url) as ws:
            await ws.receive_json()
            await ws.send_bytes(b"binary first")  # the auth phase takes text only
            refused = await ws.receive_json()
            assert (refused["type"], refused["code"]) == ("auth_invalid", "invalid_message")
