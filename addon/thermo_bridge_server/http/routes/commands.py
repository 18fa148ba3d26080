"""Commands: send one to a device (202, the device's answer comes later) and read its status."""

from __future__ import annotations

import re

from aiohttp import hdrs, web

from thermo_bridge_server.errors import ApiError, command_error
from thermo_bridge_server.http.context import API_PREFIX, HTTP, caller
from thermo_bridge_server.http.params import bad_field, check_query, only_keys, read_json_object
from thermo_bridge_server.resources import command_json

IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,128}")

routes = web.RouteTableDef()


@routes.post(API_PREFIX + "/devices/{device_id}/commands")
async def send_command(request: web.Request) -> web.Response:
    """Validate and publish a command; 202 with its id, the device's ack arrives later."""
    ctx = request.app[HTTP]
    access = await caller(request, ctx.settings.permissions.write)
    check_query(request, ())
    device = await ctx.access.device(access, request.match_info["device_id"])
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise ApiError(
            400,
            "invalid_request",
            f"{IDEMPOTENCY_KEY} must be 1-128 printable ASCII characters without spaces",
            details={"header": IDEMPOTENCY_KEY},
        )
    body = await read_json_object(request)
    only_keys(body, ("values",))
    values = body.get("values")
    if not isinstance(values, dict):
        raise bad_field("values", 'the body must be {"values": {...}} with the command values')
    try:
        record = await ctx.sender.send_command(device.device_id, values, access.principal.sub, key)
    except Exception as err:
        if (error := command_error(err, device.device_id)) is None:
            raise
        raise error from None
    location = f"{API_PREFIX}/commands/{record.command_id}"
    return web.json_response(command_json(record), status=202, headers={hdrs.LOCATION: location})


@routes.get(API_PREFIX + "/commands/{command_id}")
async def get_command(request: web.Request) -> web.Response:
    """A command's status: visible to its sender (while they see the device) and to admins."""
    ctx = request.app[HTTP]
    access = await caller(request, ctx.settings.permissions.read)
    check_query(request, ())
    return web.json_response(command_json(await ctx.access.command(access, request.match_info["command_id"])))
