"""Storage backends behind one interface; ``create_store`` picks one from a URL."""

from __future__ import annotations

from urllib.parse import parse_qs

from thermo_bridge_server.config import sqlite_path

from .base import DEFAULT_HOME, Store
from .rows import StoreClosedError

__all__ = ["Store", "StoreClosedError", "StoreUrlError", "create_store"]


class StoreUrlError(ValueError):
    """The store URL is not one we understand (the message says what is expected)."""


def create_store(
    url: str,
    *,
    retention_days: float,
    dead_letter_limit: int,
    default_home: str = DEFAULT_HOME,
) -> Store:
    """A store for ``url`` (not opened yet).

    * ``sqlite:///abs/path.db`` (also ``sqlite:////abs/path.db``) or ``sqlite:relative/path.db``;
      optional ``?synchronous=full``
      (fsync every batch: survives power loss, not only a killed process).
    * ``postgresql://user@host:port/db`` (or ``postgres://``); extra query parameters are
      passed to the server as settings, e.g. ``?search_path=thermo`` to use a schema.
    """
    if dead_letter_limit < 0:
        raise StoreUrlError("dead_letter_limit must be >= 0")
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise StoreUrlError(f"store URL {url!r} has no scheme; use sqlite:///path.db or postgresql://…")
    if scheme == "sqlite":
        path = sqlite_path(url) or ""
        query = rest.partition("?")[2]
        if not path:
            raise StoreUrlError("sqlite store URL needs a file path, e.g. sqlite:////data/thermo_bridge.db")
        options = {k.lower(): v[-1] for k, v in parse_qs(query).items()}
        unknown = set(options) - {"synchronous"}
        if unknown:
            raise StoreUrlError(f"unknown sqlite store URL option(s): {', '.join(sorted(unknown))}")
        synchronous = options.get("synchronous", "normal").upper()
        if synchronous not in {"NORMAL", "FULL", "EXTRA"}:
            raise StoreUrlError("sqlite synchronous must be normal, full or extra")
        from .sqlite import SQLiteStore  # noqa: PLC0415 - only the chosen backend is imported

        return SQLiteStore(
            path,
            retention_days=retention_days,
            dead_letter_limit=dead_letter_limit,
            default_home=default_home,
            synchronous=synchronous,
        )
    if scheme in {"postgresql", "postgres"}:
        from .postgres import PostgresStore  # noqa: PLC0415 - asyncpg is only needed for this backend

        return PostgresStore(
            url, retention_days=retention_days, dead_letter_limit=dead_letter_limit, default_home=default_home
        )
    raise StoreUrlError(f"unsupported store URL scheme {scheme!r}; use sqlite: or postgresql:")
