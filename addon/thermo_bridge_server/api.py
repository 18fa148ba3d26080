"""The REST API under ``/api/v1`` plus the unauthenticated ``/health`` and ``/metrics``.

Access model (documented in the README): every device belongs to exactly one home (new
devices get the configured default home; admins move them). A user may see and control
the devices of the homes granted to their Auth0 ``sub`` server-side (the grants table,
managed by admins over this API) together with the homes listed in their token's
namespaced homes claim. A principal with the admin permission sees every device.

A device id that exists but belongs to a home the caller cannot see answers 403
``forbidden_device`` (as the issue asks); this confirms that the id exists, which is
acceptable because device ids are not secrets (they are topic segments every MQTT
client of the broker sees), and the body never carries any of the device's data.
Commands are visible only to the user who sent them (and admins), and only while that
user can still see the device; any other command id answers 404, because command ids
are unguessable and a 403 would confirm someone else's command exists.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from thermo_bridge_protocol import DeviceKind, ProtocolError, validate_device_id

from .auth import PRINCIPAL_KEY, Principal, require_permission
from .errors import ApiError, error_response
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import HttpCounters, Metrics
from .store.base import CommandRecord, DeadLetter, DeviceRecord, HistoryPoint, StateRecord, Store

_LOGGER = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
HOME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_HOMES_PER_USER = 256
MAX_SUB_LENGTH = 256
MAX_HISTORY_POINTS = 10_000
DEFAULT_HISTORY_SECONDS = 24 * 3600
MAX_DEAD_LETTERS = 1000
HEALTH_STORE_TIMEOUT = 2.0
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class CommandSender(Protocol):
    """What the API needs from the ingest to send a command."""

    async def send_command(self, device_id: str, values: Mapping[str, Any], sub: str) -> CommandRecord:
        """Validate against the device's capabilities, store as pending, publish to ``<base>/<id>/set``."""
        ...


class BrokerState(Protocol):
    """What ``/health`` needs from the MQTT transport."""

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        ...


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The parts of the configuration the API handlers use."""

    version: str = "0.0.0"
    base_topic: str = "thermo_bridge"
    default_home: str = "default"
    read_permission: str = "read:devices"
    write_permission: str = "write:devices"
    admin_permission: str = "admin"
    max_body_bytes: int = 64 * 1024
    cors_origins: tuple[str, ...] = ()
    rate_limit_per_minute: int = 120


STORE: web.AppKey[Store] = web.AppKey("store", Store)
SENDER: web.AppKey[CommandSender] = web.AppKey("command_sender", CommandSender)
BROKER: web.AppKey[BrokerState] = web.AppKey("broker", BrokerState)
SETTINGS: web.AppKey[ApiSettings] = web.AppKey("api_settings", ApiSettings)
HTTP_COUNTERS: web.AppKey[HttpCounters] = web.AppKey("http_counters", HttpCounters)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
OPENAPI_DOCUMENT: web.AppKey[Callable[[], Mapping[str, Any]]] = web.AppKey("openapi_document")
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")

# --------------------------------------------------------------------------- access


@dataclass(frozen=True, slots=True)
class Access:
    """What one authenticated caller may see: ``homes`` None means every home (admin)."""

    principal: Principal
    homes: frozenset[str] | None

    @property
    def admin(self) -> bool:
        """Whether the caller sees every device."""
        return self.homes is None

    def sees(self, home: str) -> bool:
        """Whether devices of ``home`` are visible to the caller."""
        return self.homes is None or home in self.homes


async def resolve_access(request: web.Request, permission: str) -> Access:
    """Check ``permission`` (403 insufficient_scope) and compute the caller's homes."""
    principal = require_permission(request, permission)
    settings = request.app[SETTINGS]
    if principal.has(settings.admin_permission):
        return Access(principal, None)
    granted = await request.app[STORE].get_grants(principal.sub)
    return Access(principal, frozenset(principal.homes) | granted)


async def visible_device(request: web.Request, access: Access) -> DeviceRecord:
    """The device named in the path, if the caller may see it (404 unknown, 403 foreign)."""
    raw = request.match_info["device_id"]
    try:
        device_id = validate_device_id(raw)
    except ProtocolError:
        raise _unknown_device(raw) from None
    device = await request.app[STORE].get_device(device_id)
    if device is None:
        raise _unknown_device(device_id)
    if not access.sees(device.home):
        raise ApiError(403, "forbidden_device", "you have no access to this device")
    return device


def _unknown_device(device_id: str) -> ApiError:
    return ApiError(404, "unknown_device", f"no device with id {device_id[:80]!r}")


# --------------------------------------------------------------------------- parsing helpers


def parse_time(value: str, name: str) -> float:
    """ISO-8601 (a naive time is UTC) or epoch seconds; 400 naming the parameter otherwise."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise _bad_param(name, "must be a finite epoch time or an ISO-8601 time")
        return number
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise _bad_param(name, "must be an ISO-8601 time (2026-11-22T10:00:00Z) or epoch seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def parse_duration(value: str, name: str) -> float:
    """Seconds, or a number with a unit (``500ms``, ``30s``, ``5m``, ``1h``, ``1d``)."""
    match = _DURATION_RE.fullmatch(value.strip())
    if match is None:
        raise _bad_param(name, "must be seconds or a duration like 30s, 5m, 1h, 1d")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not 1 <= seconds <= 366 * 86400:
        raise _bad_param(name, "must be between 1 second and 366 days")
    return seconds


def parse_int(value: str, name: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi]; 400 naming the parameter otherwise."""
    try:
        number = int(value)
    except ValueError:
        raise _bad_param(name, "must be an integer") from None
    if not lo <= number <= hi:
        raise _bad_param(name, f"must be between {lo} and {hi}")
    return number


def parse_bool(value: str, name: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no)."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _bad_param(name, "must be true or false")


def _bad_param(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{name} {message}", details={"parameter": name})


def _check_query(request: web.Request, allowed: Collection[str]) -> None:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            "invalid_parameter",
            f"unknown query parameter {unknown[0]!r}; allowed: {', '.join(sorted(allowed)) or 'none'}",
            details={"parameter": unknown[0]},
        )


def _single(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise _bad_param(name, "must be given once")
    return values[0] if values else None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (400 otherwise, 413 when too large)."""
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise payload_too_large(limit)
    content_type = request.headers.get(hdrs.CONTENT_TYPE, "application/json")
    if request.can_read_body and not content_type.lower().startswith("application/json"):
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    body = await request.read()  # aiohttp enforces client_max_size while reading chunked bodies
    if len(body) > limit:
        raise payload_too_large(limit)
    if not body:
        raise ApiError(400, "invalid_body", "a JSON object body is required")
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {str(err)[:120]}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return data


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def payload_too_large(limit: int) -> ApiError:
    """The 413 error."""
    return ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes", details={"limit": limit})


def _bad_field(field: str, message: str) -> ApiError:
    """400 invalid_body naming the offending field (as ``_bad_param`` does for the query)."""
    return ApiError(400, "invalid_body", message, details={"field": field})


def _only_keys(data: Mapping[str, Any], allowed: Collection[str]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        name = unknown[0][:40]
        raise _bad_field(name, f"unknown field {name!r}; allowed: {', '.join(sorted(allowed))}")


def _home(value: object, field: str) -> str:
    if not isinstance(value, str) or not HOME_RE.fullmatch(value):
        raise _bad_field(
            field, f"{field} must be a home name of 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' or '-'"
        )
    return value


# --------------------------------------------------------------------------- JSON forms


def device_json(device: DeviceRecord) -> dict[str, Any]:
    """A device with its capabilities (the config's wire form)."""
    config = device.config
    return {
        "id": device.device_id,
        "name": config.name,
        "kind": str(config.kind),
        "home": device.home,
        "online": device.online,
        "first_seen": device.first_seen,
        "updated_at": device.updated_at,
        "config": config.as_dict(),
    }


def state_json(device_id: str, state: StateRecord | None) -> dict[str, Any]:
    """The latest merged state (empty when the device has not reported yet)."""
    if state is None:
        return {"device_id": device_id, "values": {}, "updated_at": None, "device_ts": None, "seq": None}
    return {
        "device_id": device_id,
        "values": state.values,
        "updated_at": state.updated_at,
        "device_ts": state.device_ts,
        "seq": state.seq,
    }


def point_json(point: HistoryPoint, aggregated: bool) -> dict[str, Any]:
    """One history point; buckets also carry min/max/count."""
    if not aggregated:
        return {"ts": point.ts, "key": point.key, "value": point.value}
    return {
        "ts": point.ts,
        "key": point.key,
        "value": point.value,
        "min": point.minimum,
        "max": point.maximum,
        "count": point.count,
    }


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    """A rejected message; the payload both as text (for reading) and base64 (exact bytes)."""
    return {
        "id": letter.id,
        "ts": letter.ts,
        "topic": letter.topic,
        "reason": letter.reason,
        "message": letter.message,
        "payload_text": letter.payload.decode("utf-8", errors="replace"),
        "payload_base64": base64.b64encode(letter.payload).decode("ascii"),
    }


def command_response(record: CommandRecord) -> dict[str, Any]:
    """A command's public form (never the sender's ``sub``)."""
    return record.as_dict()


# --------------------------------------------------------------------------- handlers

routes = web.RouteTableDef()


@routes.get(f"{API_PREFIX}/devices")
async def list_devices(request: web.Request) -> web.Response:
    """Devices the caller can see; filters kind, online, home."""
    access = await resolve_access(request, request.app[SETTINGS].read_permission)
    _check_query(request, ("kind", "online", "home"))
    kind = _single(request, "kind")
    if kind is not None and kind not in {k.value for k in DeviceKind}:
        raise _bad_param("kind", f"must be one of {', '.join(k.value for k in DeviceKind)}")
    online_text = _single(request, "online")
    online = parse_bool(online_text, "online") if online_text is not None else None
    home = _single(request, "home")
    if home is not None and not HOME_RE.fullmatch(home):
        raise _bad_param("home", "is not a valid home name")
    if access.homes is not None and not access.homes:
        devices: list[DeviceRecord] = []
    else:
        devices = await request.app[STORE].list_devices(access.homes, kind=kind, online=online, home=home)
    return web.json_response({"devices": [device_json(d) for d in devices if access.sees(d.home)]})


@routes.get(API_PREFIX + "/devices/{device_id}")
async def get_device(request: web.Request) -> web.Response:
    """One device with its capabilities."""
    access = await resolve_access(request, request.app[SETTINGS].read_permission)
    _check_query(request, ())
    return web.json_response(device_json(await visible_device(request, access)))


@routes.get(API_PREFIX + "/devices/{device_id}/state")
async def get_state(request: web.Request) -> web.Response:
    """The latest merged state."""
    access = await resolve_access(request, request.app[SETTINGS].read_permission)
    _check_query(request, ())
    device = await visible_device(request, access)
    state = await request.app[STORE].get_state(device.device_id)
    return web.json_response(state_json(device.device_id, state))


@routes.get(API_PREFIX + "/devices/{device_id}/history")
async def get_history(request: web.Request) -> web.Response:
    """Stored values in [start, end), raw or aggregated to ``resolution``."""
    access = await resolve_access(request, request.app[SETTINGS].read_permission)
    _check_query(request, ("start", "end", "keys", "resolution", "limit"))
    device = await visible_device(request, access)
    end_text, start_text = _single(request, "end"), _single(request, "start")
    end = parse_time(end_text, "end") if end_text is not None else time.time()
    start = parse_time(start_text, "start") if start_text is not None else end - DEFAULT_HISTORY_SECONDS
    if start >= end:
        raise _bad_param("start", "must be before end")
    keys: list[str] | None = None
    if raw_keys := request.query.getall("keys", []):
        keys = sorted({k.strip() for text in raw_keys for k in text.split(",") if k.strip()})
        if not keys or any(len(k) > 64 for k in keys) or len(keys) > 64:
            raise _bad_param("keys", "must be a comma-separated list of up to 64 state keys")
    resolution_text = _single(request, "resolution")
    resolution = parse_duration(resolution_text, "resolution") if resolution_text is not None else None
    limit_text = _single(request, "limit")
    limit = parse_int(limit_text, "limit", 1, MAX_HISTORY_POINTS) if limit_text is not None else MAX_HISTORY_POINTS
    points = await request.app[STORE].history(
        device.device_id, start, end, keys=keys, resolution=resolution, limit=limit + 1
    )
    truncated = len(points) > limit
    aggregated = resolution is not None
    return web.json_response(
        {
            "device_id": device.device_id,
            "start": start,
            "end": end,
            "resolution": resolution,
            "keys": keys,
            "truncated": truncated,
            "points": [point_json(p, aggregated) for p in points[:limit]],
        }
    )


@routes.post(API_PREFIX + "/devices/{device_id}/commands")
async def send_command(request: web.Request) -> web.Response:
    """Validate and publish a command; 202 with its id, the device's ack arrives later."""
    access = await resolve_access(request, request.app[SETTINGS].write_permission)
    _check_query(request, ())
    device = await visible_device(request, access)
    body = await read_json_object(request)
    _only_keys(body, ("values",))
    values = body.get("values")
    if not isinstance(values, dict):
        raise _bad_field("values", 'the body must be {"values": {...}} with the command values')
    try:
        record = await request.app[SENDER].send_command(device.device_id, values, access.principal.sub)
    except ProtocolError as err:
        raise ApiError(
            422,
            "invalid_command",
            f"the device refuses this command: {err}",
            details={"reason": str(err.reason), "path": err.path},
        ) from None
    except KeyError:
        raise _unknown_device(device.device_id) from None
    except (ConnectionError, TimeoutError) as err:
        raise ApiError(503, "broker_unavailable", f"the command could not be published: {err}") from None
    location = f"{API_PREFIX}/commands/{record.command_id}"
    return web.json_response(command_response(record), status=202, headers={hdrs.LOCATION: location})


@routes.get(API_PREFIX + "/commands/{command_id}")
async def get_command(request: web.Request) -> web.Response:
    """A command's status: visible to its sender (while they see the device) and to admins."""
    access = await resolve_access(request, request.app[SETTINGS].read_permission)
    _check_query(request, ())
    command_id = request.match_info["command_id"]
    store = request.app[STORE]
    record = await store.get_command(command_id) if len(command_id) <= 64 else None
    if record is not None and not access.admin:
        device = await store.get_device(record.device_id)
        if record.sub != access.principal.sub or device is None or not access.sees(device.home):
            record = None
    if record is None:
        raise ApiError(404, "unknown_command", "no such command")
    return web.json_response(command_response(record))


# --------------------------------------------------------------------------- admin


@routes.get(f"{API_PREFIX}/admin/grants")
async def list_grants(request: web.Request) -> web.Response:
    """Every user's server-side grants."""
    await resolve_access(request, request.app[SETTINGS].admin_permission)
    _check_query(request, ())
    grants = await request.app[STORE].all_grants()
    return web.json_response(
        {"grants": [{"sub": sub, "homes": sorted(homes)} for sub, homes in sorted(grants.items())]}
    )


def _sub(request: web.Request) -> str:
    sub = request.match_info["sub"]
    if not sub or len(sub) > MAX_SUB_LENGTH or not sub.isprintable():
        raise _bad_param("sub", f"must be 1-{MAX_SUB_LENGTH} printable characters")
    return sub


@routes.get(API_PREFIX + "/admin/grants/{sub}")
async def get_grants(request: web.Request) -> web.Response:
    """One user's server-side grants."""
    await resolve_access(request, request.app[SETTINGS].admin_permission)
    _check_query(request, ())
    sub = _sub(request)
    homes = await request.app[STORE].get_grants(sub)
    return web.json_response({"sub": sub, "homes": sorted(homes)})


@routes.put(API_PREFIX + "/admin/grants/{sub}")
async def put_grants(request: web.Request) -> web.Response:
    """Replace one user's server-side grants (an empty list revokes everything)."""
    await resolve_access(request, request.app[SETTINGS].admin_permission)
    _check_query(request, ())
    sub = _sub(request)
    body = await read_json_object(request)
    _only_keys(body, ("homes",))
    homes = body.get("homes")
    if not isinstance(homes, list) or len(homes) > MAX_HOMES_PER_USER:
        raise _bad_field("homes", f"homes must be a list of at most {MAX_HOMES_PER_USER} home names")
    checked = sorted({_home(home, "homes") for home in homes})
    await request.app[STORE].set_grants(sub, checked)
    _LOGGER.info("Grants of %s set to %s", sub, checked)
    return web.json_response({"sub": sub, "homes": checked})


@routes.put(API_PREFIX + "/admin/devices/{device_id}/home")
async def put_device_home(request: web.Request) -> web.Response:
    """Assign a device to a home."""
    access = await resolve_access(request, request.app[SETTINGS].admin_permission)
    _check_query(request, ())
    device = await visible_device(request, access)
    body = await read_json_object(request)
    _only_keys(body, ("home",))
    home = _home(body.get("home"), "home")
    store = request.app[STORE]
    if not await store.set_device_home(device.device_id, home):
        raise _unknown_device(device.device_id)
    updated = await store.get_device(device.device_id)
    if updated is None:  # removed in between
        raise _unknown_device(device.device_id)
    _LOGGER.info("Device %s assigned to home %s", device.device_id, home)
    return web.json_response(device_json(updated))


@routes.get(f"{API_PREFIX}/admin/dead-letters")
async def list_dead_letters(request: web.Request) -> web.Response:
    """The newest rejected MQTT messages."""
    await resolve_access(request, request.app[SETTINGS].admin_permission)
    _check_query(request, ("limit",))
    limit_text = _single(request, "limit")
    limit = parse_int(limit_text, "limit", 1, MAX_DEAD_LETTERS) if limit_text is not None else 100
    letters = await request.app[STORE].dead_letters(limit)
    return web.json_response({"dead_letters": [dead_letter_json(letter) for letter in letters]})


# --------------------------------------------------------------------------- public


@routes.get(OPENAPI_PATH)
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this API (public: it holds no data)."""
    _check_query(request, ())
    return web.json_response(request.app[OPENAPI_DOCUMENT]())


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness/readiness: 200 when the broker is connected and the store answers, else 503."""
    _check_query(request, ())
    broker_ok = request.app[BROKER].connected
    store_ok = True
    store_error: str | None = None
    try:
        await asyncio.wait_for(request.app[STORE].latest_offset(), HEALTH_STORE_TIMEOUT)
    except TimeoutError:
        store_ok, store_error = False, "timeout"
    except Exception as err:  # health reports any store failure, it never raises
        store_ok, store_error = False, type(err).__name__
    healthy = broker_ok and store_ok
    body: dict[str, Any] = {
        "status": "ok" if healthy else "degraded",
        "version": request.app[SETTINGS].version,
        "broker": {"connected": broker_ok},
        "store": {"ok": store_ok},
    }
    if store_error:
        body["store"]["error"] = store_error
    return web.json_response(body, status=200 if healthy else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    _check_query(request, ())
    text = await request.app[METRICS].render()
    return web.Response(body=text.encode(), headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE})


# --------------------------------------------------------------------------- middlewares

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> ApiError:
    status = exc.status
    headers: dict[str, str] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers[hdrs.ALLOW] = ", ".join(sorted(exc.allowed_methods))
        message = f"{request.method} is not allowed here; allowed: {headers[hdrs.ALLOW]}"
    elif status == 404:
        message = f"no such resource: {request.path[:120]}"
    elif status == 413:
        limit = request.app[SETTINGS].max_body_bytes
        return payload_too_large(limit)
    elif status >= 500:
        message = "internal server error"
    else:
        message = exc.reason
    code = _HTTP_CODES.get(status, "internal_error" if status >= 500 else "http_error")
    return ApiError(status, code, message, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error in the one JSON shape, never leak internals, count responses."""
    counters = request.app[HTTP_COUNTERS]
    counters.in_flight += 1
    status = 500
    try:
        try:
            response = await handler(request)
        except ApiError as err:
            response = error_response(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(_from_http_exception(request, exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            _LOGGER.exception("Unhandled error in %s %s", request.method, request.path)
            response = error_response(ApiError(500, "internal_error", "internal server error"))
        status = response.status
    except web.HTTPException as exc:  # redirects re-raised above
        status = exc.status
        raise
    finally:
        counters.in_flight -= 1
        counters.observe(request.method, status)
    return response


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a declared oversized body before authentication or reading it."""
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise payload_too_large(limit)
    return await handler(request)


class RateLimiter:
    """A token bucket per user: ``per_minute`` requests a minute, bursts up to the same number.

    Buckets are kept in an LRU bounded by ``max_users`` so a flood of distinct subjects
    cannot grow memory without bound (an evicted user simply starts with a full bucket).
    """

    def __init__(
        self, per_minute: int, *, max_users: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_users = max_users
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take a token; return 0 when allowed, else the seconds until one is available."""
        if self.capacity <= 0:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_users:
            self._buckets.popitem(last=False)
        return wait


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """429 with ``Retry-After`` when an authenticated user exceeds their request rate."""
    principal: Principal | None = request.get(PRINCIPAL_KEY)
    if principal is not None:
        wait = request.app[RATE_LIMITER].take(principal.sub)
        if wait > 0:
            request.app[HTTP_COUNTERS].rate_limited += 1
            retry = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests; retry in {retry} s",
                details={"retry_after": retry},
                headers={hdrs.RETRY_AFTER: str(retry)},
            )
    return await handler(request)


CORS_ALLOW_METHODS = "GET, POST, PUT, OPTIONS"
CORS_ALLOW_HEADERS = "Authorization, Content-Type"
CORS_EXPOSE_HEADERS = "Location, Retry-After, WWW-Authenticate"
CORS_MAX_AGE = "600"


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return None
    origins = request.app[SETTINGS].cors_origins
    if origin in origins:
        return origin
    return "*" if "*" in origins else None


@web.middleware
async def cors_preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflights (before authentication: browsers send them without a token)."""
    if (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    ):
        if _allowed_origin(request) is None:
            raise ApiError(403, "cors_origin_not_allowed", "this origin is not allowed to call the API")
        return web.Response(
            status=204,
            headers={
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: CORS_ALLOW_METHODS,
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: CORS_ALLOW_HEADERS,
                hdrs.ACCESS_CONTROL_MAX_AGE: CORS_MAX_AGE,
            },
        )
    return await handler(request)


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}
SERVER_HEADER = "thermo_bridge"  # no version banner


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Security headers on every response; CORS headers for allowed origins (errors included)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers[hdrs.SERVER] = SERVER_HEADER  # aiohttp set its own banner before this signal
    if request.path in {"/metrics", "/health"}:
        return
    origin = _allowed_origin(request)
    if origin is not None:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = CORS_EXPOSE_HEADERS
    if request.app[SETTINGS].cors_origins and origin != "*":
        response.headers.add(hdrs.VARY, hdrs.ORIGIN)


# --------------------------------------------------------------------------- assembly


def setup_api(
    app: web.Application,
    *,
    store: Store,
    sender: CommandSender,
    broker: BrokerState,
    settings: ApiSettings,
    metrics: Metrics,
    openapi: Callable[[], Mapping[str, Any]],
) -> None:
    """Register routes, keys and the response signal on an app built with ``api_middlewares``."""
    app[STORE] = store
    app[SENDER] = sender
    app[BROKER] = broker
    app[SETTINGS] = settings
    app[HTTP_COUNTERS] = metrics.http
    app[METRICS] = metrics
    app[OPENAPI_DOCUMENT] = openapi
    app[RATE_LIMITER] = RateLimiter(settings.rate_limit_per_minute)
    app.router.add_routes(routes)
    app.on_response_prepare.append(on_response_prepare)


PUBLIC_API_PATHS = frozenset({OPENAPI_PATH})


def _public_bypass(auth: Middleware) -> Middleware:
    """Let the few public documents under the protected prefix (the OpenAPI document) skip auth."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in (hdrs.METH_GET, hdrs.METH_HEAD) and request.path in PUBLIC_API_PATHS:
            return await handler(request)
        return await auth(request, handler)

    return middleware


def api_middlewares(auth: Middleware) -> list[Middleware]:
    """Middlewares in order (outermost first): errors, CORS preflight, body size, auth, rate limit."""
    return [
        error_middleware,
        cors_preflight_middleware,
        body_limit_middleware,
        _public_bypass(auth),
        rate_limit_middleware,
    ]
