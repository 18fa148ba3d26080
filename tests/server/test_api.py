"""The REST API over real HTTP: real broker, SQLite file, RS256 tokens from a JWKS server, simulator.

One server stack is shared by the module (starting one costs ~1 s); tests that need other
settings (a low rate limit, a tiny body limit) or break things (stop the broker) build
their own. Every JSON answer is validated against the OpenAPI document (api_stack.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import pytest_asyncio
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion

from tests.server.api_stack import ADMIN, RW, ServerStack
from tests.waiting import wait_for
from thermo_bridge_server.app import server_version
from thermo_bridge_server.errors import ApiError
from thermo_bridge_server.http.params import parse_time

pytestmark = pytest.mark.asyncio(loop_scope="module")

T1, T2, S1 = "t_thermostat_1", "t_thermostat_2", "t_sensor_1"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerStack]:
    """Server with 2 thermostats + 1 sensor; T1 in home alpha, T2 in beta, S1 in the default home."""
    server = ServerStack(
        tmp_path_factory.mktemp("api"),
        env={"cors_origins": "https://app.example.com", "max_body_bytes": "2048", "rate_limit_per_minute": "100000"},
    )
    await server.start()
    store = server.components.store
    assert await store.set_device_home(T1, "alpha")
    assert await store.set_device_home(T2, "beta")
    yield server
    await server.stop()


@pytest.fixture
def admin(stack: ServerStack) -> str:
    return stack.api.token("auth0|admin", ADMIN)


# --------------------------------------------------------------------------- devices


async def test_list_devices_admin_sees_all_with_capabilities(stack: ServerStack, admin: str) -> None:
    resp = await stack.api.call("GET", "/api/v1/devices", token=admin)
    assert resp.status == 200
    devices = {d["id"]: d for d in resp.json()["devices"]}
    assert set(devices) == {T1, T2, S1}
    assert [d["id"] for d in resp.json()["devices"]] == sorted(devices)
    assert devices[T1]["home"] == "alpha"
    assert devices[S1]["home"] == stack.config.default_home  # type: ignore[union-attr]
    assert devices[T1]["kind"] == "thermostat"
    assert devices[T1]["online"] is True
    assert "heat" in devices[T1]["config"]["thermostat"]["hvac_modes"]
    assert devices[S1]["config"]["measurements"]["co2"] == {"unit": "ppm", "precision": 0}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"kind": "thermostat"}, {T1, T2}),
        ({"kind": "sensor"}, {S1}),
        ({"online": "true"}, {T1, T2, S1}),
        ({"online": "false"}, set()),
        ({"home": "alpha"}, {T1}),
        ({"home": "alpha", "kind": "sensor"}, set()),
    ],
)
async def test_list_devices_filters(stack: ServerStack, admin: str, query: dict[str, str], expected: set[str]) -> None:
    resp = await stack.api.call("GET", "/api/v1/devices", token=admin, params=query)
    assert resp.status == 200
    assert {d["id"] for d in resp.json()["devices"]} == expected


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"kind": "boiler"}, "kind"),
        ({"online": "maybe"}, "online"),
        ({"home": "no spaces"}, "home"),
        ({"colour": "red"}, "colour"),
        ([("kind", "sensor"), ("kind", "thermostat")], "kind"),
    ],
)
async def test_list_devices_bad_parameters_are_400(
    stack: ServerStack, admin: str, query: dict[str, str] | list[tuple[str, str]], parameter: str
) -> None:
    resp = await stack.api.call("GET", "/api/v1/devices", token=admin, params=query)
    assert resp.status == 400
    err = resp.error
    assert err["code"] == "invalid_parameter"
    assert err["details"]["parameter"] == parameter
    assert parameter in err["message"]


async def test_get_device_and_unknown_device(stack: ServerStack, admin: str) -> None:
    resp = await stack.api.call("GET", f"/api/v1/devices/{T2}", token=admin)
    assert resp.status == 200
    body = resp.json()
    assert body["id"] == T2
    assert body["config"]["thermostat"]["setpoint"] == "both"
    assert body["config"]["thermostat"]["min_temp"] == 7.0

    for missing in ("t_thermostat_99", "not%20an%20id", "x" * 65):
        resp = await stack.api.call("GET", f"/api/v1/devices/{missing}", token=admin)
        assert resp.status == 404, missing
        assert resp.error["code"] == "unknown_device"


async def test_latest_state_follows_reports(stack: ServerStack, admin: str) -> None:
    stack.sim.publish_state(S1, co2=812.0, window_open=True)

    async def reported() -> bool:
        resp = await stack.api.call("GET", f"/api/v1/devices/{S1}/state", token=admin)
        values = resp.json()["values"]
        return values.get("co2") == 812.0 and values.get("window_open") is True

    await wait_for(reported, what="the reported CO2 value")
    resp = await stack.api.call("GET", f"/api/v1/devices/{S1}/state", token=admin)
    body = resp.json()
    assert body["device_id"] == S1
    assert body["updated_at"] <= time.time()
    assert isinstance(body["seq"], int)
    assert "temperature" in body["values"]  # merged: earlier keys are kept


# --------------------------------------------------------------------------- history


async def test_history_raw_aggregated_keys_and_limit(stack: ServerStack, admin: str) -> None:
    start = time.time() - 1
    published = [19.0, 21.5, 23.0, 20.25]
    for value in published:
        stack.sim.publish_state(T2, temperature=value)
    path = f"/api/v1/devices/{T2}/history"

    async def stored() -> bool:
        resp = await stack.api.call("GET", path, token=admin, params={"start": str(start), "keys": "temperature"})
        values = [p["value"] for p in resp.json()["points"]]
        return all(v in values for v in published)

    await wait_for(stored, what="the published temperatures in history")
    # A closed window: natural reports keep arriving, so let anything sent before `end` be
    # committed before comparing queries of the same window.
    end = time.time()
    await asyncio.sleep(0.5)
    iso_start = dt.datetime.fromtimestamp(start, dt.UTC).isoformat().replace("+00:00", "Z")
    raw = await stack.api.call(
        "GET", path, token=admin, params={"start": iso_start, "end": str(end), "keys": "temperature"}
    )
    assert raw.status == 200
    body = raw.json()
    assert body["keys"] == ["temperature"]
    assert body["truncated"] is False
    assert math.isclose(body["start"], start, abs_tol=1e-3)
    points = body["points"]
    assert {p["key"] for p in points} == {"temperature"}
    assert [p["ts"] for p in points] == sorted(p["ts"] for p in points)
    assert all(start <= p["ts"] < end for p in points)

    agg = await stack.api.call(
        "GET",
        path,
        token=admin,
        params={"start": str(start), "end": str(end), "keys": "temperature", "resolution": "1h"},
    )
    assert agg.status == 200
    buckets = agg.json()["points"]
    assert agg.json()["resolution"] == 3600
    assert sum(b["count"] for b in buckets) == len(points)
    raw_values = [p["value"] for p in points]
    assert min(b["min"] for b in buckets) == min(raw_values)
    assert max(b["max"] for b in buckets) == max(raw_values)

    limited = await stack.api.call(
        "GET", path, token=admin, params={"start": str(start), "end": str(end), "keys": "temperature", "limit": "2"}
    )
    assert limited.json()["truncated"] is True
    assert limited.json()["points"] == points[:2]

    both = await stack.api.call(
        "GET", path, token=admin, params=[("start", str(start)), ("keys", "temperature"), ("keys", "humidity")]
    )
    assert {p["key"] for p in both.json()["points"]} <= {"temperature", "humidity"}
    assert both.json()["keys"] == ["humidity", "temperature"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"start": "yesterday"}, "start"),
        ({"end": "2026-13-45T00:00:00Z"}, "end"),
        ({"start": "nan"}, "start"),
        ({"start": "2000", "end": "1000"}, "start"),
        ({"resolution": "fortnight"}, "resolution"),
        ({"resolution": "0s"}, "resolution"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"keys": ","}, "keys"),
    ],
)
async def test_history_bad_parameters_are_400(
    stack: ServerStack, admin: str, params: dict[str, str], parameter: str
) -> None:
    resp = await stack.api.call("GET", f"/api/v1/devices/{T1}/history", token=admin, params=params)
    assert resp.status == 400
    assert resp.error["code"] == "invalid_parameter"
    assert resp.error["details"]["parameter"] == parameter


UTC_2026 = dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1795341600", UTC_2026),
        ("1795341600.25", UTC_2026 + 0.25),
        ("2026-11-22T10:00:00Z", UTC_2026),
        ("2026-11-22t10:00:00z", UTC_2026),  # RFC 3339 allows lowercase
        ("2026-11-22T12:30:00+02:30", UTC_2026),
        ("2026-11-22T09:00:00.5-01:00", UTC_2026 + 0.5),
        ("2016-12-31T23:59:60Z", dt.datetime(2017, 1, 1, tzinfo=dt.UTC).timestamp()),  # a leap second
        ("0000-01-01T00:00:00Z", dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp() - 366 * 86400),
        ("2026-11-22T10:00:00", UTC_2026),  # ISO-8601 without a zone: UTC
        ("2026-11-22 10:00:00+00:00", UTC_2026),
        ("2026-11-22", UTC_2026 - 10 * 3600),
    ],
)
async def test_history_times_every_rfc_3339_date_time_and_epoch_seconds(text: str, expected: float) -> None:
    assert parse_time(text, "start") == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["2026-02-30T00:00:00Z", "2026-11-22T10:00:00+24:00", "2026-11-22T10:00:00+01:60", "inf"]
)
async def test_history_times_that_are_no_time_are_400(text: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_time(text, "end")
    assert (refused.value.status, refused.value.details) == (400, {"parameter": "end"})


# --------------------------------------------------------------------------- commands


async def test_command_end_to_end_publish_ack_status(stack: ServerStack) -> None:
    token = stack.api.token("auth0|cmd", RW, homes=["alpha"])
    resp = await stack.api.call(
        "POST", f"/api/v1/devices/{T1}/commands", token=token, json_body={"values": {"target_temperature": 23.5}}
    )
    assert resp.status == 202
    command = resp.json()
    assert command["status"] == "pending"
    assert command["values"] == {"target_temperature": 23.5}
    assert resp.headers["Location"] == f"/api/v1/commands/{command['id']}"

    # The simulated device received exactly this command on <base>/<id>/set.
    await wait_for(lambda: any(c.command_id == command["id"] for _, c in stack.sim.commands), what="the device")
    received = next((d, c) for d, c in stack.sim.commands if c.command_id == command["id"])
    assert received[0] == T1
    assert received[1].values == {"target_temperature": 23.5}

    async def acked() -> bool:
        status = await stack.api.call("GET", resp.headers["Location"], token=token)
        return bool(status.json()["status"] == "acked")

    await wait_for(acked, what="the device's ack")
    final = (await stack.api.call("GET", resp.headers["Location"], token=token)).json()
    assert final["reason"] is None
    assert final["updated_at"] >= final["created_at"]

    async def applied() -> bool:
        state = await stack.api.call("GET", f"/api/v1/devices/{T1}/state", token=token)
        return bool(state.json()["values"].get("target_temperature") == 23.5)

    await wait_for(applied, what="the new setpoint in the state")


@pytest.mark.parametrize(
    ("device", "values", "reason", "path"),
    [
        (T1, {"target_temperature": 99}, "out_of_range", "target_temperature"),
        (T1, {"hvac_mode": "turbo"}, "invalid_value", "hvac_mode"),
        (T1, {"target_temperature": "warm"}, "wrong_type", "target_temperature"),
        (T1, {"colour": "blue"}, "unknown_key", "colour"),
        (T1, {}, "missing_key", ""),
        (S1, {"target_temperature": 20}, "not_supported", ""),
    ],
)
async def test_invalid_command_values_are_422_with_details(
    stack: ServerStack, admin: str, device: str, values: dict[str, object], reason: str, path: str
) -> None:
    before = len(stack.sim.commands)
    resp = await stack.api.call("POST", f"/api/v1/devices/{device}/commands", token=admin, json_body={"values": values})
    assert resp.status == 422
    err = resp.error
    assert err["code"] == "invalid_command"
    assert err["details"] == {"reason": reason, "path": path}
    await asyncio.sleep(0.05)
    assert len(stack.sim.commands) == before  # nothing was published


@pytest.mark.parametrize(
    ("data", "headers", "status", "code"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "invalid_json"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400, "invalid_body"),
        (b'{"values": {"target_temperature": NaN}}', {"Content-Type": "application/json"}, 400, "invalid_json"),
        (b'{"values": 21}', {"Content-Type": "application/json"}, 400, "invalid_body"),
        (b'{"value": {"target_temperature": 21}}', {"Content-Type": "application/json"}, 400, "invalid_body"),
        (b"", {"Content-Type": "application/json"}, 400, "invalid_body"),
        (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "invalid_json"),
        (
            b"target_temperature=21",
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        (
            b'{"values": {"hvac_mode": "' + b"x" * 4000 + b'"}}',
            {"Content-Type": "application/json"},
            413,
            "payload_too_large",
        ),
    ],
)
async def test_malformed_command_bodies(
    stack: ServerStack, admin: str, data: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    before = len(stack.sim.commands)
    resp = await stack.api.call("POST", f"/api/v1/devices/{T1}/commands", token=admin, data=data, headers=headers)
    assert resp.status == status
    assert resp.error["code"] == code
    assert len(stack.sim.commands) == before


async def test_oversized_body_is_refused_before_authentication(stack: ServerStack) -> None:
    resp = await stack.api.call("POST", f"/api/v1/devices/{T1}/commands", data=b"x" * 5000, validate=False)
    assert resp.status == 413
    assert resp.error["details"] == {"limit": 2048}


async def test_oversized_chunked_body_is_413(stack: ServerStack, admin: str) -> None:
    """Without Content-Length the limit is enforced while reading (aiohttp's client_max_size)."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"values": {"hvac_mode": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}}'

    before = len(stack.sim.commands)
    resp = await stack.api.call(
        "POST",
        f"/api/v1/devices/{T1}/commands",
        token=admin,
        data=chunks(),  # type: ignore[arg-type]
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert resp.error["code"] == "payload_too_large"
    assert len(stack.sim.commands) == before


async def test_unknown_command_is_404(stack: ServerStack, admin: str) -> None:
    for command_id in ("0123456789abcdef", "x" * 80):
        resp = await stack.api.call("GET", f"/api/v1/commands/{command_id}", token=admin)
        assert resp.status == 404
        assert resp.error["code"] == "unknown_command"


# --------------------------------------------------------------------------- auth errors


async def test_missing_and_invalid_tokens_are_401(stack: ServerStack) -> None:
    resp = await stack.api.call("GET", "/api/v1/devices")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="thermo_bridge"'
    assert resp.error["code"] == "unauthorized"

    forged = stack.jwks.make_token("auth0|mallory", ADMIN, alg="HS256")
    resp = await stack.api.call("GET", "/api/v1/devices", token=forged)
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert resp.error["code"] == "invalid_token"

    expired = stack.jwks.make_token("auth0|alice", RW, exp=time.time() - 3600)
    resp = await stack.api.call("GET", f"/api/v1/devices/{T1}/state", token=expired)
    assert resp.status == 401
    assert "expired" in resp.headers["WWW-Authenticate"]


async def test_admin_alone_does_not_imply_read_or_write(stack: ServerStack) -> None:
    """As the README says: admin opens the admin endpoints and every home, not the other permissions."""
    admin_only = stack.api.token("auth0|root", ("admin",))
    assert (await stack.api.call("GET", "/api/v1/admin/grants", token=admin_only)).status == 200
    resp = await stack.api.call("GET", "/api/v1/devices", token=admin_only)
    assert resp.status == 403
    assert resp.error["details"] == {"required_permission": "read:devices"}
    resp = await stack.api.call(
        "POST", f"/api/v1/devices/{T1}/commands", token=admin_only, json_body={"values": {"hvac_mode": "off"}}
    )
    assert resp.status == 403
    assert resp.error["details"] == {"required_permission": "write:devices"}


async def test_missing_permission_is_403_insufficient_scope(stack: ServerStack) -> None:
    reader = stack.api.token("auth0|reader", ("read:devices",), homes=["alpha"])
    resp = await stack.api.call(
        "POST", f"/api/v1/devices/{T1}/commands", token=reader, json_body={"values": {"hvac_mode": "off"}}
    )
    assert resp.status == 403
    assert resp.error["code"] == "insufficient_scope"
    assert 'scope="write:devices"' in resp.headers["WWW-Authenticate"]

    nobody = stack.api.token("auth0|nobody", (), homes=["alpha"])
    resp = await stack.api.call("GET", "/api/v1/devices", token=nobody)
    assert resp.status == 403
    assert resp.error["details"] == {"required_permission": "read:devices"}

    for method, path in (
        ("GET", "/api/v1/admin/grants"),
        ("GET", "/api/v1/admin/grants/auth0|x"),
        ("PUT", "/api/v1/admin/grants/auth0|x"),
        ("PUT", f"/api/v1/admin/devices/{T1}/home"),
        ("GET", "/api/v1/admin/dead-letters"),
    ):
        resp = await stack.api.call(method, path, token=reader, json_body={"homes": ["alpha"]})
        assert resp.status == 403, path
        assert resp.error["details"] == {"required_permission": "admin"}


async def test_method_not_allowed_and_unknown_route(stack: ServerStack, admin: str) -> None:
    resp = await stack.api.call("DELETE", f"/api/v1/devices/{T1}", token=admin)
    assert resp.status == 405
    assert resp.error["code"] == "method_not_allowed"
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD"}

    resp = await stack.api.call("PATCH", "/api/v1/admin/grants/auth0|x", token=admin)
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD", "PUT"}

    resp = await stack.api.call("GET", "/api/v1/thermostats", token=admin)
    assert resp.status == 404
    assert resp.error["code"] == "not_found"

    resp = await stack.api.call("GET", "/nothing-here")
    assert resp.status == 404
    assert resp.error["code"] == "not_found"


# --------------------------------------------------------------------------- admin


async def test_admin_grants_round_trip_and_validation(stack: ServerStack, admin: str) -> None:
    sub = "auth0|grantee-1"
    resp = await stack.api.call("GET", f"/api/v1/admin/grants/{sub}", token=admin)
    assert resp.json() == {"sub": sub, "homes": []}

    resp = await stack.api.call(
        "PUT", f"/api/v1/admin/grants/{sub}", token=admin, json_body={"homes": ["beta", "alpha", "beta"]}
    )
    assert resp.status == 200
    assert resp.json() == {"sub": sub, "homes": ["alpha", "beta"]}
    resp = await stack.api.call("GET", f"/api/v1/admin/grants/{sub}", token=admin)
    assert resp.json()["homes"] == ["alpha", "beta"]
    listing = await stack.api.call("GET", "/api/v1/admin/grants", token=admin)
    assert {"sub": sub, "homes": ["alpha", "beta"]} in listing.json()["grants"]

    for body in (
        {"homes": "alpha"},
        {"homes": ["bad home"]},
        {"homes": [1]},
        {"home": ["alpha"]},
        {"homes": ["a"] * 300},
    ):
        resp = await stack.api.call("PUT", f"/api/v1/admin/grants/{sub}", token=admin, json_body=body)
        assert resp.status == 400, body
        assert resp.error["code"] == "invalid_body"
    resp = await stack.api.call("GET", f"/api/v1/admin/grants/{sub}", token=admin)
    assert resp.json()["homes"] == ["alpha", "beta"]  # refused updates changed nothing

    resp = await stack.api.call("PUT", f"/api/v1/admin/grants/{sub}", token=admin, json_body={"homes": []})
    assert resp.json()["homes"] == []


async def test_admin_assigns_device_home(stack: ServerStack, admin: str) -> None:
    resp = await stack.api.call("PUT", f"/api/v1/admin/devices/{S1}/home", token=admin, json_body={"home": "gamma"})
    assert resp.status == 200
    assert resp.json()["home"] == "gamma"
    user = stack.api.token("auth0|gamma-user", RW, homes=["gamma"])
    listed = await stack.api.call("GET", "/api/v1/devices", token=user)
    assert [d["id"] for d in listed.json()["devices"]] == [S1]

    resp = await stack.api.call("PUT", "/api/v1/admin/devices/t_nope/home", token=admin, json_body={"home": "gamma"})
    assert resp.status == 404
    resp = await stack.api.call("PUT", f"/api/v1/admin/devices/{S1}/home", token=admin, json_body={"home": ""})
    assert resp.status == 400

    resp = await stack.api.call(
        "PUT",
        f"/api/v1/admin/devices/{S1}/home",
        token=admin,
        json_body={"home": stack.config.default_home},  # type: ignore[union-attr]
    )
    assert resp.status == 200


async def test_rejected_messages_are_counted_and_kept_as_dead_letters(stack: ServerStack, admin: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(stack.broker.host, stack.broker.port)
    client.loop_start()
    try:
        client.publish(f"thermo_bridge/{T1}/state", b'{"temperature": "hot"}', qos=1).wait_for_publish(5)
        client.publish(f"thermo_bridge/{T1}/state", b"\x00garbage", qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()

    async def kept() -> bool:
        resp = await stack.api.call("GET", "/api/v1/admin/dead-letters", token=admin, params={"limit": "10"})
        return len(resp.json()["dead_letters"]) >= 2

    await wait_for(kept, what="two dead letters")
    letters = (await stack.api.call("GET", "/api/v1/admin/dead-letters", token=admin)).json()["dead_letters"]
    reasons = {letter["reason"] for letter in letters}
    assert {"wrong_type", "not_json"} <= reasons
    hot = next(letter for letter in letters if letter["reason"] == "wrong_type")
    assert hot["topic"] == f"thermo_bridge/{T1}/state"
    assert hot["payload_text"] == '{"temperature": "hot"}'

    metrics = await stack.api.call("GET", "/metrics")
    samples = parse_prometheus(metrics.text)
    assert samples[("thermo_bridge_mqtt_messages_rejected_total", (("reason", "wrong_type"),))] >= 1

    resp = await stack.api.call("GET", "/api/v1/admin/dead-letters", token=admin, params={"limit": "0"})
    assert resp.status == 400


# --------------------------------------------------------------------------- CORS, headers


async def test_cors_preflight_and_actual_requests(stack: ServerStack, admin: str) -> None:
    origin = "https://app.example.com"
    pre = await stack.api.call(
        "OPTIONS",
        f"/api/v1/devices/{T1}/commands",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert {h.strip().lower() for h in pre.headers["Access-Control-Allow-Headers"].split(",")} >= {
        "authorization",
        "content-type",
    }
    assert "Access-Control-Allow-Credentials" not in pre.headers

    evil = await stack.api.call(
        "OPTIONS", "/api/v1/devices", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert evil.status == 403
    assert "Access-Control-Allow-Origin" not in evil.headers

    ok = await stack.api.call("GET", "/api/v1/devices", token=admin, headers={"Origin": origin})
    assert ok.headers["Access-Control-Allow-Origin"] == origin
    assert "Origin" in ok.headers["Vary"]
    unauth = await stack.api.call("GET", "/api/v1/devices", headers={"Origin": origin})
    assert unauth.status == 401
    assert unauth.headers["Access-Control-Allow-Origin"] == origin  # the web app can read the error
    assert "WWW-Authenticate" in unauth.headers["Access-Control-Expose-Headers"]
    foreign = await stack.api.call("GET", "/api/v1/devices", token=admin, headers={"Origin": "https://evil.example"})
    assert foreign.status == 200
    assert "Access-Control-Allow-Origin" not in foreign.headers


async def test_security_headers_everywhere(stack: ServerStack, admin: str) -> None:
    for path, token in (("/api/v1/devices", admin), ("/api/v1/devices", None), ("/health", None), ("/nope", None)):
        resp = await stack.api.call("GET", path, token=token)
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Server"] == "thermo_bridge"  # no version banner
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


# --------------------------------------------------------------------------- health, metrics, openapi


async def test_health_ok(stack: ServerStack) -> None:
    resp = await stack.api.call("GET", "/health")
    assert resp.status == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert body["broker"] == {"connected": True}
    assert body["store"] == {"ok": True}


PROM_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse_prometheus(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the text format strictly enough to catch malformed lines; HELP/TYPE before samples."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            typed.add(name)
            continue
        if line.startswith("#") or not line:
            continue
        match = PROM_LINE.match(line)
        assert match, f"malformed metrics line: {line!r}"
        name, labels_text, value = match.group(1), match.group(2) or "", match.group(3)
        assert name in typed, f"{name} has no # TYPE line before its samples"
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels_text)))
        assert (name, labels) not in samples, f"duplicate sample {line!r}"
        samples[(name, labels)] = float(value)
    return samples


async def test_metrics_exposition(stack: ServerStack, admin: str) -> None:
    await stack.api.call("GET", "/api/v1/devices", token=admin)
    await stack.api.call("GET", "/api/v1/devices")
    resp = await stack.api.call("GET", "/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(resp.text)
    assert samples[("thermo_bridge_mqtt_messages_in_total", ())] >= 3
    assert samples[("thermo_bridge_http_requests_total", (("method", "GET"), ("status", "200")))] >= 1
    assert samples[("thermo_bridge_http_requests_total", (("method", "GET"), ("status", "401")))] >= 1
    assert samples[("thermo_bridge_mqtt_connected", ())] == 1
    await stack.api.call("PROPFIND", "/api/v1/devices", token=admin)  # client-chosen methods share a label
    samples = parse_prometheus((await stack.api.call("GET", "/metrics")).text)
    methods = {dict(labels)["method"] for name, labels in samples if name == "thermo_bridge_http_requests_total"}
    assert "PROPFIND" not in methods
    assert "OTHER" in methods
    assert samples[("thermo_bridge_http_open_connections", ())] >= 1
    assert samples[("thermo_bridge_http_requests_in_flight", ())] == 1  # this scrape
    assert {("status", s) for s in ("sent", "acked", "failed", "timed_out")} <= {
        labels[0] for (name, labels) in samples if name == "thermo_bridge_commands_total"
    }
    assert samples[("thermo_bridge_command_reports_total", (("result", "lost"),))] == 0
    assert any(name.startswith("thermo_bridge_store_") for name, _ in samples), "store figures are exported"
    assert samples[("thermo_bridge_asyncio_tasks", ())] >= 3  # at least the MQTT runner, the tailer, this handler
    assert samples[("thermo_bridge_process_resident_memory_bytes", ())] > 10 * 2**20
    assert samples[("thermo_bridge_process_open_fds", ())] >= 5


async def test_metrics_export_store_failures_and_held_acks(stack: ServerStack) -> None:
    """Failures an operator must see: refused store writes, stray acks, messages waiting for the store."""
    samples = parse_prometheus((await stack.api.call("GET", "/metrics")).text)
    ingest, transport = stack.components.ingest, stack.components.transport
    assert samples[("thermo_bridge_mqtt_store_errors_total", ())] == ingest.store_errors
    assert samples[("thermo_bridge_mqtt_acks_unmatched_total", ())] == ingest.acks_unmatched
    assert ("thermo_bridge_mqtt_held_acks", ()) in samples
    assert ("thermo_bridge_mqtt_unmatched_waiting", ()) in samples
    assert samples[("thermo_bridge_mqtt_acks_sent", ())] <= transport.stats.acks_sent  # more may come after


async def test_openapi_document_is_public(stack: ServerStack) -> None:
    resp = await stack.api.call("GET", "/api/v1/openapi.json")
    assert resp.status == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.1")
    assert "/api/v1/devices/{device_id}/commands" in doc["paths"]
    assert doc["info"]["version"] == server_version()


# --------------------------------------------------------------------------- own stacks


@pytest_asyncio.fixture(loop_scope="module")
async def small_stack(tmp_path: Path) -> AsyncIterator[ServerStack]:
    """A stack with a rate limit of 3 requests a minute and a route that crashes."""

    async def boom(_request: web.Request) -> web.Response:
        raise RuntimeError("secret detail: password=hunter2 at /srv/db")

    server = ServerStack(
        tmp_path,
        thermostats=1,
        sensors=0,
        prefix="s",
        env={"rate_limit_per_minute": "3"},
        extra_routes=[web.get("/api/v1/boom", boom)],
    )
    await server.start()
    yield server
    await server.stop()


async def test_rate_limit_per_user_with_retry_after(small_stack: ServerStack) -> None:
    alice = small_stack.api.token("auth0|alice", ADMIN)
    bob = small_stack.api.token("auth0|bob", ADMIN)
    for _ in range(3):
        assert (await small_stack.api.call("GET", "/api/v1/devices", token=alice)).status == 200
    limited = await small_stack.api.call("GET", "/api/v1/devices", token=alice)
    assert limited.status == 429
    assert limited.error["code"] == "rate_limited"
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 20  # one token every 20 s at 3/min
    assert limited.error["details"]["retry_after"] == retry_after
    # Another user has their own bucket; health and metrics are not rate limited.
    assert (await small_stack.api.call("GET", "/api/v1/devices", token=bob)).status == 200
    assert (await small_stack.api.call("GET", "/health")).status == 200
    metrics = parse_prometheus((await small_stack.api.call("GET", "/metrics")).text)
    assert metrics[("thermo_bridge_http_rate_limited_total", ())] == 1
    assert metrics[("thermo_bridge_http_requests_total", (("method", "GET"), ("status", "429")))] == 1


async def test_internal_error_never_leaks(small_stack: ServerStack, caplog: pytest.LogCaptureFixture) -> None:
    token = small_stack.api.token("auth0|crash", ADMIN)
    resp = await small_stack.api.call("GET", "/api/v1/boom", token=token)
    assert resp.status == 500
    assert resp.error == {"status": 500, "code": "internal_error", "message": "internal server error"}
    assert b"hunter2" not in resp.body
    assert b"Traceback" not in resp.body
    assert b"RuntimeError" not in resp.body
    assert "secret detail" in caplog.text  # the operator still sees it in the log
    # The server keeps serving.
    assert (await small_stack.api.call("GET", "/api/v1/devices", token=token)).status == 200


async def test_health_reports_broker_outage_and_recovery(small_stack: ServerStack) -> None:
    await asyncio.to_thread(small_stack.broker.stop)

    async def degraded() -> bool:
        resp = await small_stack.api.call("GET", "/health")
        return resp.status == 503

    await wait_for(degraded, what="health to report the broker down")
    body = (await small_stack.api.call("GET", "/health")).json()
    assert body["status"] == "degraded"
    assert body["broker"] == {"connected": False}
    assert body["store"] == {"ok": True}

    # A command cannot be published now: 503, and nothing is left pending.
    token = small_stack.api.token("auth0|outage", ADMIN)
    resp = await small_stack.api.call(
        "POST", "/api/v1/devices/s_thermostat_1/commands", token=token, json_body={"values": {"hvac_mode": "off"}}
    )
    assert resp.status == 503
    assert resp.error["code"] == "broker_unavailable"
    assert await small_stack.components.store.pending_commands(time.time() + 1) == []

    await asyncio.to_thread(small_stack.broker.start)

    async def healthy() -> bool:
        return (await small_stack.api.call("GET", "/health")).status == 200

    await wait_for(healthy, timeout=40, what="the transport to reconnect")
