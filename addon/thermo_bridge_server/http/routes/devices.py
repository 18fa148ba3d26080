"""Devices: the list, one device, its latest state and its history."""

from __future__ import annotations

import re
import time
from urllib.parse import urlencode

from aiohttp import web

from thermo_bridge_protocol import DeviceKind
from thermo_bridge_server.http.context import API_PREFIX, HTTP, caller
from thermo_bridge_server.http.params import (
    HOME_RE,
    bad_param,
    check_query,
    parse_bool,
    parse_duration,
    parse_int,
    parse_time,
    single,
)
from thermo_bridge_server.resources import device_json, point_json, state_json
from thermo_bridge_server.store.base import DeviceRecord

MAX_HISTORY_POINTS = 10_000
MAX_DEVICES_PAGE = 1000
DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_HISTORY_SECONDS = 24 * 3600
MAX_HISTORY_KEYS = 64

routes = web.RouteTableDef()


@routes.get(f"{API_PREFIX}/devices")
async def list_devices(request: web.Request) -> web.Response:
    """Devices the caller can see, a page at a time (``limit``, ``after``); filters kind, online, home."""
    ctx = request.app[HTTP]
    access = await caller(request, ctx.settings.permissions.read)
    check_query(request, ("kind", "online", "home", "limit", "after"))
    limit_text = single(request, "limit")
    limit = parse_int(limit_text, "limit", 1, MAX_DEVICES_PAGE) if limit_text is not None else MAX_DEVICES_PAGE
    after = single(request, "after")
    if after is not None and not DEVICE_ID_RE.fullmatch(after):
        raise bad_param("after", "must be a device id (the last id of the previous page)")
    kind = single(request, "kind")
    if kind is not None and kind not in {k.value for k in DeviceKind}:
        raise bad_param("kind", f"must be one of {', '.join(k.value for k in DeviceKind)}")
    online_text = single(request, "online")
    online = parse_bool(online_text, "online") if online_text is not None else None
    home = single(request, "home")
    if home is not None and not HOME_RE.fullmatch(home):
        raise bad_param("home", "is not a valid home name")
    if access.homes is not None and not access.homes:
        devices: list[DeviceRecord] = []
    else:
        devices = await ctx.store.list_devices(
            access.homes, kind=kind, online=online, home=home, after=after, limit=limit + 1
        )
    following = None
    if len(devices) > limit:
        devices = devices[:limit]
        query = [(k, v) for k, v in request.query.items() if k != "after"] + [("after", devices[-1].device_id)]
        following = f"{request.path}?{urlencode(query)}"
    return web.json_response({"devices": [device_json(d) for d in devices if access.sees(d.home)], "next": following})


@routes.get(API_PREFIX + "/devices/{device_id}")
async def get_device(request: web.Request) -> web.Response:
    """One device with its capabilities."""
    ctx = request.app[HTTP]
    access = await caller(request, ctx.settings.permissions.read)
    check_query(request, ())
    return web.json_response(device_json(await ctx.access.device(access, request.match_info["device_id"])))


@routes.get(API_PREFIX + "/devices/{device_id}/state")
async def get_state(request: web.Request) -> web.Response:
    """The latest merged state."""
    ctx = request.app[HTTP]
    access = await caller(request, ctx.settings.permissions.read)
    check_query(request, ())
    device = await ctx.access.device(access, request.match_info["device_id"])
    state = await ctx.store.get_state(device.device_id)
    return web.json_response(state_json(device.device_id, state))


@routes.get(API_PREFIX + "/devices/{device_id}/history")
async def get_history(request: web.Request) -> web.Response:
    """Stored values in [start, end), raw or aggregated to ``resolution``."""
    ctx = request.app[HTTP]
    access = await caller(request, ctx.settings.permissions.read)
    check_query(request, ("start", "end", "keys", "resolution", "limit"))
    device = await ctx.access.device(access, request.match_info["device_id"])
    end_text, start_text = single(request, "end"), single(request, "start")
    end = parse_time(end_text, "end") if end_text is not None else time.time()
    start = parse_time(start_text, "start") if start_text is not None else end - DEFAULT_HISTORY_SECONDS
    if start > end:  # [t, t) is a valid, empty range; an inverted one is a mistake
        raise bad_param("start", "must not be after end")
    keys: list[str] | None = None
    if raw_keys := request.query.getall("keys", []):
        keys = sorted({k.strip() for text in raw_keys for k in text.split(",") if k.strip()})
        if not keys or any(len(k) > 64 for k in keys) or len(keys) > MAX_HISTORY_KEYS:
            raise bad_param("keys", f"must be a comma-separated list of up to {MAX_HISTORY_KEYS} state keys")
    resolution_text = single(request, "resolution")
    resolution = parse_duration(resolution_text, "resolution") if resolution_text is not None else None
    limit_text = single(request, "limit")
    limit = parse_int(limit_text, "limit", 1, MAX_HISTORY_POINTS) if limit_text is not None else MAX_HISTORY_POINTS
    points = await ctx.store.history(device.device_id, start, end, keys=keys, resolution=resolution, limit=limit + 1)
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
