"""Fixtures shared by the server tests (run without the Home Assistant plugin).

Shared file: each helper adds its fixtures with targeted edits and leaves the others' alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

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
