"""Reading requests: query parameters, path values and JSON bodies, with 400s that name the culprit."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Collection, Mapping
from typing import Any, NoReturn

from aiohttp import hdrs, web

from thermo_bridge_server.errors import ApiError

from .context import HTTP

HOME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))", re.ASCII
)
_GREGORIAN_CYCLE = 146_097 * 86_400  # 400 Gregorian years, in seconds


def _rfc3339(text: str, name: str) -> float | None:
    """An RFC 3339 date-time as epoch seconds (None: not one), every one the standard allows.

    Beyond what ``datetime`` reads: lowercase ``t``/``z``, a leap second (``:60``) and the
    year 0000 (shifted by a 400-year cycle, which the Gregorian calendar repeats exactly).
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, sign, offset_hours, offset_minutes = match[7], match[8], match[9], match[10]
    offset = 0
    if sign is not None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            raise bad_param(name, "has an invalid UTC offset")
        offset = (int(offset_hours) * 3600 + int(offset_minutes) * 60) * (1 if sign == "+" else -1)
    shift = -_GREGORIAN_CYCLE if year == 0 else 0
    leap = second == 60
    try:
        moment = dt.datetime(year or 400, month, day, hour, minute, 59 if leap else second, tzinfo=dt.UTC)
    except ValueError:
        raise bad_param(name, "is not a valid date and time") from None
    return moment.timestamp() + shift + leap + (float(fraction) if fraction else 0.0) - offset


def parse_time(value: str, name: str) -> float:
    """Epoch seconds, an RFC 3339 date-time, or another ISO-8601 time (naive = UTC); 400 otherwise."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise bad_param(name, "must be a finite epoch time or an ISO-8601 time")
        return number
    if (moment := _rfc3339(text, name)) is not None:
        return moment
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise bad_param(name, "must be an ISO-8601 time (2026-11-22T10:00:00Z) or epoch seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def parse_duration(value: str, name: str) -> float:
    """Seconds, or a number with a unit (``500ms``, ``30s``, ``5m``, ``1h``, ``1d``)."""
    match = _DURATION_RE.fullmatch(value.strip())
    if match is None:
        raise bad_param(name, "must be seconds or a duration like 30s, 5m, 1h, 1d")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not 1 <= seconds <= 366 * 86400:
        raise bad_param(name, "must be between 1 second and 366 days")
    return seconds


def parse_int(value: str, name: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi]; 400 naming the parameter otherwise."""
    try:
        number = int(value)
    except ValueError:
        raise bad_param(name, "must be an integer") from None
    if not lo <= number <= hi:
        raise bad_param(name, f"must be between {lo} and {hi}")
    return number


def parse_bool(value: str, name: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no)."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise bad_param(name, "must be true or false")


def bad_param(name: str, message: str) -> ApiError:
    """400 invalid_parameter naming the query or path parameter."""
    return ApiError(400, "invalid_parameter", f"{name} {message}", details={"parameter": name})


def check_query(request: web.Request, allowed: Collection[str]) -> None:
    """400 for any query parameter the route does not take (a typo must not be ignored)."""
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            "invalid_parameter",
            f"unknown query parameter {unknown[0]!r}; allowed: {', '.join(sorted(allowed)) or 'none'}",
            details={"parameter": unknown[0]},
        )


def single(request: web.Request, name: str) -> str | None:
    """The value of a query parameter given at most once."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_param(name, "must be given once")
    return values[0] if values else None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (400 otherwise, 413 when too large)."""
    limit = request.app[HTTP].settings.max_body_bytes
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


def bad_field(field: str, message: str) -> ApiError:
    """400 invalid_body naming the offending field (as ``_bad_param`` does for the query)."""
    return ApiError(400, "invalid_body", message, details={"field": field})


def only_keys(data: Mapping[str, Any], allowed: Collection[str]) -> None:
    """400 for any body field the route does not take."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        name = unknown[0][:40]
        raise bad_field(name, f"unknown field {name!r}; allowed: {', '.join(sorted(allowed))}")


def home_field(value: object, field: str) -> str:
    """A body field holding a home name."""
    if not isinstance(value, str) or not HOME_RE.fullmatch(value):
        raise bad_field(field, f"{field} must be a home name of 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' or '-'")
    return value
