"""Commands: send one to a device (202, the device's answer comes later) and read its status."""

from __future__ import annotations

from aiohttp import hdrs, web

from thermo_bridge_protocol import ProtocolError
from thermo_bridge_server.access import unknown_device_error
from thermo_bridge_server.errors import ApiError
from thermo_bridge_server.http.context import API_PREFIX, HTTP, caller
from thermo_bridge_server.http.params import bad_field, check_query, only_keys, read_json_object
from thermo_bridge_server.http.serializers import command_json

routes = web.RouteTableDef()


@routes.post(API_PREFIX + "/devices/{device_id}/commands")
async def send_command(request: web.Request) -> web.Response:
    """Validate and publish a command; 202 with its id, the device's ack arrives later."""
    ctx = request.app[HTTP]
    access = await caller(request, ctx.settings.permissions.write)
    check_query(request, ())
    device = await ctx.access.device(access, request.match_info["device_id"])
    body = await read_json_object(request)
    only_keys(body, ("values",))
    values = body.get("values")
    if not isinstance(values, dict):
        raise bad_field("values", 'the body must be {"values": {...}} with the command values')
    try:
        record = await ctx.sender.send_command(device.device_id, values, access.principal.sub)
    except ProtocolError as err:
        raise ApiError(
            422,
            "invalid_command",
            f"the device refuses this command: {err}",
            details={"reason": str(err.reason), "path": err.path},
        ) from None
    except KeyError:
        raise unknown_device_error(device.device_id) from None
    except (ConnectionError, TimeoutError) as err:
        raise ApiError(503, "broker_unavailable", f"the command could not be published: {err}") from None
    location = f"{API_PREFIX}/commands/{record.command_id}"
    return web.json_response(command_json(record), status=202, headers={hdrs.LOCATION: location})


@routes.get(API_PREFIX + "/commands/{command_id}")
async def get_command(request: web.Request) -> web.Response:
    """A command's status: visible to its sender (while they see the device) and to admins."""
    ctx = request.app[HTTP]
    access = await caller(request, ctx.settings.permissions.read)
    check_query(request, ())
    return web.json_response(command_json(await ctx.access.command(access, request.match_info["command_id"])))
