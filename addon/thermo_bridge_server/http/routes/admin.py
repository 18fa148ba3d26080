"""Admin: server-side grants, device homes, dead letters (the admin permission)."""

from __future__ import annotations

import logging

from aiohttp import web

from thermo_bridge_server.access import unknown_device_error
from thermo_bridge_server.auth.tokens import MAX_SUB_LENGTH
from thermo_bridge_server.http.context import API_PREFIX, HTTP, caller
from thermo_bridge_server.http.params import (
    bad_field,
    bad_param,
    check_query,
    home_field,
    only_keys,
    parse_int,
    read_json_object,
    single,
)
from thermo_bridge_server.resources import dead_letter_json, device_json

_LOGGER = logging.getLogger(__name__)

MAX_HOMES_PER_USER = 256
MAX_DEAD_LETTERS = 1000

routes = web.RouteTableDef()


@routes.get(f"{API_PREFIX}/admin/grants")
async def list_grants(request: web.Request) -> web.Response:
    """Every user's server-side grants."""
    ctx = request.app[HTTP]
    await caller(request, ctx.settings.permissions.admin)
    check_query(request, ())
    grants = await ctx.store.all_grants()
    return web.json_response(
        {"grants": [{"sub": sub, "homes": sorted(homes)} for sub, homes in sorted(grants.items())]}
    )


def _sub(request: web.Request) -> str:
    sub = request.match_info["sub"]
    if not sub or len(sub) > MAX_SUB_LENGTH or not sub.isprintable():
        raise bad_param("sub", f"must be 1-{MAX_SUB_LENGTH} printable characters")
    return sub


@routes.get(API_PREFIX + "/admin/grants/{sub}")
async def get_grants(request: web.Request) -> web.Response:
    """One user's server-side grants."""
    ctx = request.app[HTTP]
    await caller(request, ctx.settings.permissions.admin)
    check_query(request, ())
    sub = _sub(request)
    homes = await ctx.store.get_grants(sub)
    return web.json_response({"sub": sub, "homes": sorted(homes)})


@routes.put(API_PREFIX + "/admin/grants/{sub}")
async def put_grants(request: web.Request) -> web.Response:
    """Replace one user's server-side grants (an empty list revokes everything)."""
    ctx = request.app[HTTP]
    admin = await caller(request, ctx.settings.permissions.admin)
    check_query(request, ())
    sub = _sub(request)
    body = await read_json_object(request)
    only_keys(body, ("homes",))
    homes = body.get("homes")
    if not isinstance(homes, list) or len(homes) > MAX_HOMES_PER_USER:
        raise bad_field("homes", f"homes must be a list of at most {MAX_HOMES_PER_USER} home names")
    checked = sorted({home_field(home, "homes") for home in homes})
    before = sorted(await ctx.store.get_grants(sub))
    await ctx.store.set_grants(sub, checked)
    # Who did it, from the verified token: the audit trail of access changes. %r keeps any
    # character of a sub on one line.
    _LOGGER.info("Admin %r set the grants of %r to %s (were %s)", admin.principal.sub, sub, checked, before)
    return web.json_response({"sub": sub, "homes": checked})


@routes.put(API_PREFIX + "/admin/devices/{device_id}/home")
async def put_device_home(request: web.Request) -> web.Response:
    """Assign a device to a home."""
    ctx = request.app[HTTP]
    admin = await caller(request, ctx.settings.permissions.admin)
    check_query(request, ())
    device = await ctx.access.device(admin, request.match_info["device_id"])
    body = await read_json_object(request)
    only_keys(body, ("home",))
    home = home_field(body.get("home"), "home")
    if not await ctx.store.set_device_home(device.device_id, home):
        raise unknown_device_error(device.device_id)
    updated = await ctx.store.get_device(device.device_id)
    if updated is None:  # removed in between
        raise unknown_device_error(device.device_id)
    _LOGGER.info(
        "Admin %r moved device %s from home %s to %s", admin.principal.sub, device.device_id, device.home, home
    )
    return web.json_response(device_json(updated))


@routes.get(f"{API_PREFIX}/admin/dead-letters")
async def list_dead_letters(request: web.Request) -> web.Response:
    """The newest rejected MQTT messages."""
    ctx = request.app[HTTP]
    await caller(request, ctx.settings.permissions.admin)
    check_query(request, ("limit",))
    limit_text = single(request, "limit")
    limit = parse_int(limit_text, "limit", 1, MAX_DEAD_LETTERS) if limit_text is not None else 100
    letters = await ctx.store.dead_letters(limit)
    return web.json_response({"dead_letters": [dead_letter_json(letter) for letter in letters]})
