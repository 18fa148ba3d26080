"""The one error shape of every API answer: REST renders it as the body, the WebSocket as a result's error.

Body: ``{"error": {"status": 401, "code": "invalid_token", "message": "...", "details": {...}}}``.
``code`` is stable and machine-readable; ``message`` is for humans; ``details`` is optional.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from thermo_bridge_protocol import ProtocolError


class ApiError(Exception):
    """Raised by handlers and middlewares; rendered by ``error_response``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def as_dict(self) -> dict[str, Any]:
        """The documented JSON body."""
        body: dict[str, Any] = {"status": self.status, "code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


def error_response(err: ApiError) -> web.Response:
    """Render an ApiError as a JSON response with its headers."""
    return web.json_response(err.as_dict(), status=err.status, headers=err.headers)


class IdempotencyConflictError(ValueError):
    """An idempotency key sent again with another device or other values."""


class StoreUnavailableError(Exception):
    """The store could not commit in time (the database is failing and the writer retries)."""


def command_error(err: Exception, device_id: str) -> ApiError | None:
    """The API error for a failed ``send_command`` (None: not a failure the API explains)."""
    if isinstance(err, ProtocolError):
        return ApiError(
            422,
            "invalid_command",
            f"the device refuses this command: {err}",
            details={"reason": str(err.reason), "path": err.path},
        )
    if isinstance(err, IdempotencyConflictError):
        return ApiError(409, "idempotency_conflict", str(err))
    if isinstance(err, StoreUnavailableError):
        return ApiError(503, "store_unavailable", str(err), headers={"Retry-After": "5"})
    if isinstance(err, KeyError):
        return ApiError(404, "unknown_device", f"no device with id {device_id[:80]!r}")
    if isinstance(err, ConnectionError | TimeoutError):
        return ApiError(503, "broker_unavailable", f"the command could not be published: {err}")
    return None
