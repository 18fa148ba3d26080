"""Fixtures shared by the server tests (run without the Home Assistant plugin).

Shared file: each helper adds its fixtures with targeted edits and leaves the others' alone.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from tests.server.jwks import JwksServer


# --- auth (tests/server/jwks.py) -------------------------------------------------------
@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    """An Auth0-shaped JWKS/OIDC server on a free loopback port, with one current signing key."""
    server = JwksServer()
    await server.start()
    yield server
    await server.stop()


# --- store (tests/server/test_store*.py) ----------------------------------------------
PG_DSN_ENV = "THERMO_BRIDGE_PG_DSN"


def pg_base_dsn() -> str:
    """The PostgreSQL DSN from the environment; skip without it, fail without it under CI."""
    dsn = os.environ.get(PG_DSN_ENV)
    if not dsn:
        message = f"{PG_DSN_ENV} is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must test the PostgreSQL backend")
        pytest.skip(message)
    return dsn


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` with ``search_path`` set to ``schema`` (asyncpg passes it as a server setting)."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"] + [("search_path", schema)]
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A DSN whose search_path is a fresh, empty schema, dropped afterwards (parallel runs never collide)."""
    import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415 - only PostgreSQL tests need it

    base = pg_base_dsn()
    schema = f"tb_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield with_search_path(base, schema)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
