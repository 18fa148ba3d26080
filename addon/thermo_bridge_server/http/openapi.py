"""The OpenAPI 3.1 description of the REST API, built in code next to the handlers it describes.

``build_document`` is what the server serves at ``/api/v1/openapi.json``; the committed
``openapi.json`` beside this file is the same document for readers and client generators
(``python -m thermo_bridge_server.http.openapi > addon/thermo_bridge_server/http/openapi.json``
refreshes it; a test fails when they differ). tests/server/test_openapi.py walks the app's
router and checks every route and method is documented and every documented one exists.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

from thermo_bridge_protocol import DeviceKind
from thermo_bridge_server.auth.tokens import MAX_SUB_LENGTH
from thermo_bridge_server.config import DEFAULT_HOMES_CLAIM
from thermo_bridge_server.store.base import INTERNAL_EVENTS, EventType

from .context import API_PREFIX
from .routes.admin import MAX_DEAD_LETTERS
from .routes.devices import MAX_DEVICES_PAGE, MAX_HISTORY_KEYS, MAX_HISTORY_POINTS

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _resp(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _json(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


NULLABLE_NUMBER = {"type": ["number", "null"]}
STATE_VALUE = {"type": ["number", "boolean", "string", "null"]}
HOME = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "The one shape of every error body.",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "code", "message"],
                "additionalProperties": False,
                "properties": {
                    "status": {"type": "integer", "description": "The HTTP status, repeated."},
                    "code": {"type": "string", "description": "Stable machine-readable code."},
                    "message": {"type": "string", "description": "For humans; may change."},
                    "details": {"type": "object", "description": "Optional structured context."},
                },
            }
        },
    },
    "DeviceConfig": {
        "type": "object",
        "description": "The device's announced config in its wire form (docs/protocol.md): capabilities.",
        "required": ["schema", "id", "kind", "name", "measurements"],
        "properties": {
            "schema": {"type": "integer"},
            "id": {"type": "string"},
            "kind": {"type": "string", "enum": ["thermostat", "sensor"]},
            "name": {"type": "string"},
            "measurements": {"type": "object", "additionalProperties": {"type": "object"}},
            "events": {"type": "array", "items": {"type": "string"}},
            "thermostat": {"type": "object"},
        },
    },
    "Device": {
        "type": "object",
        "required": ["id", "name", "kind", "home", "online", "first_seen", "updated_at", "config"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "kind": {"type": "string", "enum": ["thermostat", "sensor"]},
            "home": {"type": "string"},
            "online": {"type": ["boolean", "null"], "description": "null until availability is known."},
            "first_seen": {"type": "number", "description": "Epoch seconds."},
            "updated_at": {"type": "number", "description": "Epoch seconds."},
            "config": _ref("DeviceConfig"),
        },
    },
    "DeviceList": {
        "type": "object",
        "required": ["devices", "next"],
        "additionalProperties": False,
        "properties": {
            "devices": {"type": "array", "items": _ref("Device")},
            "next": {
                "type": ["string", "null"],
                "description": "The next page (path and query, same filters), or null after the last one.",
            },
        },
    },
    "State": {
        "type": "object",
        "required": ["device_id", "values", "updated_at", "device_ts", "seq"],
        "additionalProperties": False,
        "properties": {
            "device_id": {"type": "string"},
            "values": {"type": "object", "additionalProperties": STATE_VALUE},
            "updated_at": {**NULLABLE_NUMBER, "description": "Server receive time of the newest update."},
            "device_ts": NULLABLE_NUMBER,
            "seq": {"type": ["integer", "null"]},
        },
    },
    "HistoryPoint": {
        "type": "object",
        "required": ["ts", "key", "value"],
        "additionalProperties": False,
        "properties": {
            "ts": {"type": "number", "description": "Epoch seconds (bucket start when aggregated)."},
            "key": {"type": "string"},
            "value": {**NULLABLE_NUMBER, "description": "Raw value, or the bucket mean."},
            "min": NULLABLE_NUMBER,
            "max": NULLABLE_NUMBER,
            "count": {"type": "integer"},
        },
    },
    "History": {
        "type": "object",
        "required": ["device_id", "start", "end", "resolution", "keys", "truncated", "points"],
        "additionalProperties": False,
        "properties": {
            "device_id": {"type": "string"},
            "start": {"type": "number"},
            "end": {"type": "number"},
            "resolution": NULLABLE_NUMBER,
            "keys": {"type": ["array", "null"], "items": {"type": "string"}},
            "truncated": {"type": "boolean", "description": "More points matched than limit."},
            "points": {"type": "array", "items": _ref("HistoryPoint")},
        },
    },
    "CommandRequest": {
        "type": "object",
        "required": ["values"],
        "additionalProperties": False,
        "properties": {
            "values": {
                "type": "object",
                "minProperties": 1,
                "description": "Command values, checked against the device's capabilities.",
                "properties": {
                    "hvac_mode": {"type": "string"},
                    "target_temperature": {"type": "number"},
                    "target_temperature_low": {"type": "number"},
                    "target_temperature_high": {"type": "number"},
                    "target_humidity": {"type": "number"},
                    "preset": {"type": "string"},
                    "fan_mode": {"type": "string"},
                    "swing_mode": {"type": "string"},
                },
            }
        },
    },
    "Ticket": {
        "type": "object",
        "required": ["ticket", "expires_in"],
        "additionalProperties": False,
        "properties": {
            "ticket": {"type": "string", "description": "Pass as ?ticket= to GET /api/v1/events, once."},
            "expires_in": {"type": "number", "description": "Seconds the ticket stays valid."},
        },
    },
    "Command": {
        "type": "object",
        "required": ["id", "device_id", "values", "status", "reason", "created_at", "updated_at"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "device_id": {"type": "string"},
            "values": {"type": "object", "additionalProperties": {"type": ["number", "string"]}},
            "status": {"type": "string", "enum": ["pending", "acked", "failed", "timed_out"]},
            "reason": {"type": ["string", "null"]},
            "created_at": {"type": "number"},
            "updated_at": {"type": "number"},
        },
    },
    "Grants": {
        "type": "object",
        "required": ["sub", "homes"],
        "additionalProperties": False,
        "properties": {"sub": {"type": "string"}, "homes": {"type": "array", "items": HOME}},
    },
    "GrantsUpdate": {
        "type": "object",
        "required": ["homes"],
        "additionalProperties": False,
        "properties": {"homes": {"type": "array", "items": HOME, "maxItems": 256}},
    },
    "GrantsList": {
        "type": "object",
        "required": ["grants"],
        "additionalProperties": False,
        "properties": {"grants": {"type": "array", "items": _ref("Grants")}},
    },
    "HomeAssignment": {
        "type": "object",
        "required": ["home"],
        "additionalProperties": False,
        "properties": {"home": HOME},
    },
    "DeadLetter": {
        "type": "object",
        "required": ["id", "ts", "topic", "reason", "message", "payload_text", "payload_base64"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "ts": {"type": "number"},
            "topic": {"type": "string"},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "payload_text": {"type": "string", "description": "UTF-8 with replacement characters."},
            "payload_base64": {"type": "string", "description": "The exact bytes (truncated to 4096)."},
        },
    },
    "DeadLetterList": {
        "type": "object",
        "required": ["dead_letters"],
        "additionalProperties": False,
        "properties": {"dead_letters": {"type": "array", "items": _ref("DeadLetter")}},
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "broker", "store"],
        "additionalProperties": False,
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "version": {"type": "string"},
            "broker": {
                "type": "object",
                "required": ["connected"],
                "properties": {"connected": {"type": "boolean"}},
            },
            "store": {
                "type": "object",
                "required": ["ok"],
                "properties": {"ok": {"type": "boolean"}, "error": {"type": "string"}},
            },
        },
    },
    "ClientConfig": {
        "type": "object",
        "description": "What the dashboard needs before any login (public: no secret in it).",
        "required": ["version", "auth"],
        "additionalProperties": False,
        "properties": {
            "version": {"type": "string"},
            "auth": {
                "oneOf": [
                    {
                        "type": "object",
                        "description": "Auth0 with PKCE; client_id is null while the auth0_client_id option is unset.",
                        "required": ["mode", "domain", "client_id", "audience"],
                        "additionalProperties": False,
                        "properties": {
                            "mode": {"const": "auth0"},
                            "domain": {"type": "string"},
                            "client_id": {"type": ["string", "null"]},
                            "audience": {"type": "string"},
                        },
                    },
                    {
                        "type": "object",
                        "description": "Dev auth: the page takes a dev token (#token= in its URL).",
                        "required": ["mode"],
                        "additionalProperties": False,
                        "properties": {"mode": {"const": "dev"}},
                    },
                    {
                        "type": "object",
                        "description": "Home Assistant's ingress: the page asks POST /api/v1/ingress/token.",
                        "required": ["mode", "user"],
                        "additionalProperties": False,
                        "properties": {"mode": {"const": "ingress"}, "user": {"type": ["string", "null"]}},
                    },
                ]
            },
        },
    },
    "IngressToken": {
        "type": "object",
        "description": "A short-lived access token for the Home Assistant user of an ingress request.",
        "required": ["access_token", "token_type", "expires_at", "expires_in", "sub", "permissions"],
        "additionalProperties": False,
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"const": "Bearer"},
            "expires_at": {"type": "integer", "description": "Epoch seconds."},
            "expires_in": {"type": "integer", "description": "Seconds."},
            "sub": {"type": "string", "description": "homeassistant|<Home Assistant user id>"},
            "permissions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Liveness": {
        "type": "object",
        "required": ["status", "version"],
        "additionalProperties": False,
        "properties": {"status": {"const": "alive"}, "version": {"type": "string"}},
    },
    "ServerStatus": {
        "type": "object",
        "description": "What Home Assistant's Thermo Bridge integration shows of the server.",
        "required": [
            "version",
            "base_topic",
            "broker_connected",
            "store_ok",
            "web_clients",
            "messages_per_minute",
            "rejected_total",
            "database_bytes",
            "devices",
        ],
        "additionalProperties": False,
        "properties": {
            "version": {"type": "string"},
            "base_topic": {"type": "string", "description": "The devices' MQTT base topic this server serves."},
            "broker_connected": {"type": "boolean"},
            "store_ok": {"type": "boolean", "description": "The store answers a small read."},
            "web_clients": {"type": "integer", "minimum": 0, "description": "Open WebSocket and SSE streams."},
            "messages_per_minute": {"type": "number", "minimum": 0, "description": "MQTT messages taken in."},
            "rejected_total": {"type": "integer", "minimum": 0, "description": "MQTT messages rejected since start."},
            "database_bytes": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "Space the stored data takes; null when the store cannot tell now.",
            },
            "devices": {"type": "integer", "minimum": 0, "description": "Devices with a known config."},
        },
    },
}

_WWW_AUTH = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "RFC 6750 challenge."}}
RESPONSES: dict[str, Any] = {
    "BadRequest": _json("Malformed parameters or body.", _ref("Error")),
    "Unauthorized": _json("Missing or invalid bearer token.", _ref("Error"), _WWW_AUTH),
    "Forbidden": _json("Missing permission (insufficient_scope) or a device of another home.", _ref("Error")),
    "NotFound": _json("Unknown device or command.", _ref("Error")),
    "PayloadTooLarge": _json("The body is larger than max_body_bytes.", _ref("Error")),
    "UnsupportedMediaType": _json("The body is not application/json.", _ref("Error")),
    "TooManyRequests": _json(
        "Per-user rate limit exceeded.",
        _ref("Error"),
        {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds until a request is allowed."}},
    ),
    "ServiceUnavailable": _json("The identity provider's keys or the broker are unreachable.", _ref("Error")),
}


def _param(
    name: str, where: str, schema: dict[str, Any], description: str, *, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


@functools.cache
def printable_class() -> str:
    """A regex character class of exactly the characters ``str.isprintable`` accepts.

    Built from this Python's Unicode database, as the server's check is: the document says
    precisely what the server takes. Characters are written literally (valid in ECMA-262
    ``u`` patterns and Python's ``re``); only the class's own syntax characters are escaped.
    """
    ranges: list[tuple[int, int]] = []
    start: int | None = None
    for code in range(sys.maxunicode + 2):
        printable = code <= sys.maxunicode and chr(code).isprintable()
        if printable and start is None:
            start = code
        elif not printable and start is not None:
            ranges.append((start, code - 1))
            start = None

    def char(code: int) -> str:
        c = chr(code)
        return "\\" + c if c in "\\]-[^" else c

    return "[" + "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges) + "]"


def _list_of(item: str, most: int) -> str:
    """A pattern for a comma-separated list of 1 to ``most`` items matching ``item``."""
    return f"^{item}(,{item}){{0,{most - 1}}}$"


DEVICE_ID_ITEM = "[A-Za-z0-9_-]{1,64}"
HOME_ITEM = "[A-Za-z0-9_.:-]{1,64}"
EVENT_NAMES = sorted(str(t) for t in EventType if t not in INTERNAL_EVENTS)
KIND_NAMES = sorted(str(k) for k in DeviceKind)
DEVICE_ID = _param(
    "device_id", "path", {"type": "string", "pattern": f"^{DEVICE_ID_ITEM}$"}, "The device id (a topic segment)."
)
TIME = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": r"^-?[0-9]{1,12}(\.[0-9]{1,9})?$"},
    ],
    "description": "An RFC 3339 date-time or epoch seconds (other ISO-8601 forms, a naive time as UTC, are read too).",
}


def _sub_param() -> dict[str, Any]:
    return _param(
        "sub",
        "path",
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_SUB_LENGTH,
            "pattern": f"^{printable_class()}{{1,{MAX_SUB_LENGTH}}}$",
        },
        f"The user's Auth0 subject, 1-{MAX_SUB_LENGTH} printable characters (URL-encoded).",
    )


# Durations the server takes (1 s to 366 d); the pattern lists the forms that stay in that range.
DURATION = {
    "type": "string",
    "pattern": (
        "^([1-9][0-9]{0,6}s?|[1-9][0-9]{3,9}ms|[1-9][0-9]{0,4}m|([1-9][0-9]{0,2}|[1-7][0-9]{3})h"
        "|([1-9][0-9]?|[12][0-9]{2}|3[0-5][0-9]|36[0-6])d)$"
    ),
    "description": "Seconds, or a number with a unit (ms, s, m, h, d), between 1 second and 366 days.",
}
KEYS = {"type": "string", "pattern": _list_of("[A-Za-z0-9_.-]{1,64}", MAX_HISTORY_KEYS)}
POSITION = {"type": "string", "pattern": "^[0-9a-f]{1,64}:[0-9]{1,16}$", "description": "<epoch>:<offset>"}
STREAM_LISTS = {
    "devices": (_list_of(DEVICE_ID_ITEM, 1000), "Only these devices (comma-separated ids)."),
    "kinds": (_list_of(f"({'|'.join(KIND_NAMES)})", 2), "Only these kinds (thermostat, sensor)."),
    "homes": (_list_of(HOME_ITEM, 256), "Only these homes."),
    "events": (_list_of(f"({'|'.join(EVENT_NAMES)})", len(EVENT_NAMES)), "Only these event types."),
}


def _operation(
    op_id: str,
    summary: str,
    ok_status: str,
    ok: dict[str, Any],
    *,
    tag: str,
    errors: tuple[str, ...] = (),
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    public: bool = False,
    permission: str | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {ok_status: ok}
    if not public:
        errors = ("400", "401", "403", "429", "503", *errors)
    names = {
        "400": "BadRequest",
        "401": "Unauthorized",
        "403": "Forbidden",
        "404": "NotFound",
        "413": "PayloadTooLarge",
        "415": "UnsupportedMediaType",
        "429": "TooManyRequests",
        "503": "ServiceUnavailable",
    }
    for status in sorted(set(errors)):
        if status == "409":
            responses[status] = _json("The idempotency key was used for another device or other values.", _ref("Error"))
        elif status == "422":
            responses[status] = _json(
                "The device refuses these values (details: protocol reason and path).", _ref("Error")
            )
        else:
            responses[status] = _resp(names[status])
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag], "responses": responses}
    if permission:
        op["description"] = f"Requires the `{permission}` permission."
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
    op["security"] = [] if public else [{"bearerAuth": []}]
    return op


def build_paths() -> dict[str, Any]:
    """Every route with its methods (the test compares this with the router)."""
    p = API_PREFIX
    body_errors = ("404", "413", "415")
    return {
        f"{p}/devices": {
            "get": _operation(
                "listDevices",
                "Devices the caller can see",
                "200",
                _json("A page of devices, ordered by id; `next` links the following one.", _ref("DeviceList")),
                tag="devices",
                permission="read:devices",
                params=[
                    _param("kind", "query", {"type": "string", "enum": ["thermostat", "sensor"]}, "Only this kind."),
                    _param("online", "query", {"type": "boolean"}, "Only online (true) or offline (false) devices."),
                    _param("home", "query", HOME, "Only this home (among the caller's)."),
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": MAX_DEVICES_PAGE, "default": MAX_DEVICES_PAGE},
                        "Devices per page.",
                    ),
                    _param(
                        "after",
                        "query",
                        {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                        "Only devices whose id sorts after this one (the last id of the previous page).",
                    ),
                ],
            )
        },
        p + "/devices/{device_id}": {
            "get": _operation(
                "getDevice",
                "One device with its capabilities",
                "200",
                _json("The device.", _ref("Device")),
                tag="devices",
                permission="read:devices",
                params=[DEVICE_ID],
                errors=("404",),
            )
        },
        p + "/devices/{device_id}/state": {
            "get": _operation(
                "getState",
                "The device's latest state",
                "200",
                _json("Latest merged state; values empty until the first report.", _ref("State")),
                tag="devices",
                permission="read:devices",
                params=[DEVICE_ID],
                errors=("404",),
            )
        },
        p + "/devices/{device_id}/history": {
            "get": _operation(
                "getHistory",
                "Stored values in a time range, raw or aggregated",
                "200",
                _json("Points ordered by (ts, key).", _ref("History")),
                tag="devices",
                permission="read:devices",
                params=[
                    DEVICE_ID,
                    _param("start", "query", TIME, "Range start (inclusive), not after end; default end - 24 h."),
                    _param("end", "query", TIME, "Range end (exclusive), not before start; default now."),
                    _param(
                        "keys", "query", KEYS, f"Comma-separated state keys (at most {MAX_HISTORY_KEYS}); default all."
                    ),
                    _param(
                        "resolution",
                        "query",
                        DURATION,
                        "Aggregate into buckets of this size (seconds or 30s/5m/1h/1d).",
                    ),
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_POINTS},
                        f"At most this many points (default {MAX_HISTORY_POINTS}).",
                    ),
                ],
                errors=("404",),
            )
        },
        p + "/devices/{device_id}/commands": {
            "post": _operation(
                "sendCommand",
                "Send a command to a thermostat",
                "202",
                _json(
                    "Accepted and published to <base>/<id>/set; poll the command for the device's ack.",
                    _ref("Command"),
                    {"Location": {"schema": {"type": "string"}, "description": "The command's URL."}},
                ),
                tag="commands",
                permission="write:devices",
                params=[
                    DEVICE_ID,
                    _param(
                        "Idempotency-Key",
                        "header",
                        {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"},
                        "Makes the command safe to send again: the same user sending the same key gets the"
                        " existing command (its current status) and nothing is published twice. The WebSocket's"
                        " send_command honours the same keys.",
                    ),
                ],
                body="CommandRequest",
                errors=(*body_errors, "409", "422"),
            )
        },
        p + "/commands/{command_id}": {
            "get": _operation(
                "getCommand",
                "A command's status (its sender and admins only)",
                "200",
                _json("The command.", _ref("Command")),
                tag="commands",
                permission="read:devices",
                params=[
                    _param("command_id", "path", {"type": "string", "minLength": 1, "maxLength": 64}, "The command id.")
                ],
                errors=("404",),
            )
        },
        f"{p}/admin/grants": {
            "get": _operation(
                "listGrants",
                "Every user's server-side home grants",
                "200",
                _json("Grants by user.", _ref("GrantsList")),
                tag="admin",
                permission="admin",
            )
        },
        p + "/admin/grants/{sub}": {
            "get": _operation(
                "getGrants",
                "One user's server-side home grants",
                "200",
                _json("The grants.", _ref("Grants")),
                tag="admin",
                permission="admin",
                params=[_sub_param()],
            ),
            "put": _operation(
                "putGrants",
                "Replace one user's server-side home grants",
                "200",
                _json("The grants now.", _ref("Grants")),
                tag="admin",
                permission="admin",
                params=[_sub_param()],
                body="GrantsUpdate",
                errors=("413", "415"),
            ),
        },
        p + "/admin/devices/{device_id}/home": {
            "put": _operation(
                "putDeviceHome",
                "Assign a device to a home",
                "200",
                _json("The device with its new home.", _ref("Device")),
                tag="admin",
                permission="admin",
                params=[DEVICE_ID],
                body="HomeAssignment",
                errors=body_errors,
            )
        },
        f"{p}/admin/dead-letters": {
            "get": _operation(
                "listDeadLetters",
                "The newest rejected MQTT messages",
                "200",
                _json("Newest first.", _ref("DeadLetterList")),
                tag="admin",
                permission="admin",
                params=[
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": MAX_DEAD_LETTERS},
                        "At most this many (default 100).",
                    )
                ],
            )
        },
        f"{p}/ws": {
            "get": {
                "operationId": "openWebSocket",
                "summary": "The real-time WebSocket API (the messages: docs/asyncapi.yaml, docs/websocket.md)",
                "description": "An upgrade to a WebSocket. The token is sent in the first message, never in the URL;"
                " a browser's Origin must be the server's own or one of cors_origins.",
                "tags": ["realtime"],
                "security": [],
                "responses": {
                    "101": {"description": "Switching protocols: the auth phase starts with auth_required."},
                    "403": _json("The Origin is not allowed (origin_not_allowed).", _ref("Error")),
                    "426": _json("Not a WebSocket upgrade request (upgrade_required).", _ref("Error")),
                    "429": _resp("TooManyRequests"),
                    "503": _json("The server is shutting down.", _ref("Error")),
                },
            }
        },
        f"{p}/events": {
            "get": _operation(
                "streamEvents",
                "The same events as Server-Sent Events (text/event-stream)",
                "200",
                {
                    "description": "An endless stream: ready, a snapshot when not resumed, then every matching event"
                    " (SSE id <epoch>:<offset>) and keep-alive comments (docs/websocket.md).",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                tag="realtime",
                permission="read:devices",
                params=[
                    *(
                        _param(name, "query", {"type": "string", "pattern": pattern}, description)
                        for name, (pattern, description) in STREAM_LISTS.items()
                    ),
                    _param("since", "query", POSITION, "Resume after this position (as Last-Event-ID)."),
                    _param(
                        "ticket", "query", {"type": "string", "maxLength": 128}, "A ticket from POST events/tickets."
                    ),
                    _param("Last-Event-ID", "header", POSITION, "Set by EventSource on reconnect: resume after it."),
                ],
            )
            | {"security": [{"bearerAuth": []}, {}]}
        },
        f"{p}/events/tickets": {
            "post": _operation(
                "createEventTicket",
                "A single-use ticket for one EventSource connection (browsers cannot send headers)",
                "201",
                _json("Valid for expires_in seconds, once, on any replica.", _ref("Ticket")),
                tag="realtime",
                permission="read:devices",
            )
        },
        f"{p}/openapi.json": {
            "get": _operation(
                "getOpenApi",
                "This document",
                "200",
                {"description": "OpenAPI 3.1 document.", "content": {JSON: {"schema": {"type": "object"}}}},
                tag="meta",
                public=True,
            )
        },
        "/": {
            "get": _operation(
                "getDashboard",
                "The dashboard: also the ingress panel and where Home Assistant's device page links",
                "200",
                {"description": "The page (no-cache).", "content": {"text/html": {"schema": {"type": "string"}}}},
                tag="meta",
                public=True,
                params=[
                    _param(name, "query", {"type": "string"}, what)
                    for name, what in (
                        ("code", "Auth0's authorization code, when Auth0 sends the user back."),
                        ("state", "Auth0's state, with code."),
                        ("error", "Auth0's error, when the login failed."),
                        ("error_description", "Auth0's description of the error."),
                        ("bench", "Performance marks for bench/dashboard.py."),
                    )
                ],
            )
        },
        "/assets/{name}": {
            "get": _operation(
                "getDashboardAsset",
                "A content-hashed module of the dashboard (cached for a year)",
                "200",
                {"description": "JavaScript.", "content": {"text/javascript": {"schema": {"type": "string"}}}},
                tag="meta",
                public=True,
                errors=("404",),
                params=[_param("name", "path", {"type": "string"}, "The file name, with its hash.")],
            )
        },
        f"{p}/client-config": {
            "get": _operation(
                "getClientConfig",
                "How the dashboard signs in: Auth0's public settings, dev auth, or Home Assistant's ingress",
                "200",
                _json("The page's configuration.", _ref("ClientConfig")),
                tag="meta",
                public=True,
            )
        },
        f"{p}/ingress/token": {
            "post": _operation(
                "createIngressToken",
                "A token for the Home Assistant user of an ingress request (only from the Supervisor's proxy)",
                "200",
                _json("Valid for expires_in seconds; ask again before.", _ref("IngressToken")),
                tag="meta",
                public=True,
                errors=("403",),
            )
        },
        "/health/live": {
            "get": _operation(
                "getLiveness",
                "Liveness: the server runs and answers (unauthenticated; the add-on's HEALTHCHECK)",
                "200",
                _json("Always, while the server serves HTTP.", _ref("Liveness")),
                tag="meta",
                public=True,
            )
        },
        "/internal/v1/status": {
            "get": _operation(
                "getServerStatus",
                "The server's figures for Home Assistant's Thermo Bridge integration (internal token only)",
                "200",
                _json("Version, readiness and load.", _ref("ServerStatus")),
                tag="meta",
                errors=("400", "401", "404"),
                public=True,
            )
            | {"security": [{"internalToken": []}]}
        },
        "/health": {
            "get": _operation(
                "getHealth",
                "Readiness: broker connected and store answering (unauthenticated)",
                "200",
                _json("Broker connected and store answering.", _ref("Health")),
                tag="meta",
                public=True,
                errors=(),
            )
            | {"responses": {"200": _json("Healthy.", _ref("Health")), "503": _json("Degraded.", _ref("Health"))}}
        },
        "/metrics": {
            "get": _operation(
                "getMetrics",
                "Prometheus metrics (unauthenticated)",
                "200",
                {
                    "description": "Prometheus text exposition format 0.0.4.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                tag="meta",
                public=True,
            )
        },
    }


def build_document(version: str = "0.1.0", *, homes_claim: str = DEFAULT_HOMES_CLAIM) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (``homes_claim``: the configured ``auth0_homes_claim``)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "thermo_bridge server API",
            "version": version,
            "description": (
                "REST API of the thermo_bridge add-on server: devices, latest state, history and commands "
                "of MQTT thermostats and sensors. Every error has the body of the Error schema. Access: a "
                "user sees the devices of the homes granted to their sub server-side plus those in their "
                f"token's {homes_claim} claim; admins see every device."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "devices", "description": "Devices, state and history"},
            {"name": "commands", "description": "Commands to thermostats"},
            {"name": "admin", "description": "Homes and grants (admin permission)"},
            {"name": "meta", "description": "Health, metrics and this document"},
        ],
        "paths": build_paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An Auth0 access token (RS256) for the configured API audience.",
                },
                "internalToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The server's internal token (in the file internal_token_path names), not Auth0's.",
                },
            },
        },
    }


def main() -> None:
    """Print the document (to refresh the committed openapi.json)."""
    sys.stdout.write(json.dumps(build_document(), indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
