"""Waiting for a condition that another thread, process or the broker makes true: one helper for every test.

Tests never sleep a fixed time before asserting; they poll the condition until it holds or a
generous deadline passes (a loaded 2-core machine is slow, a quiet one is fast). This module
imports nothing of Home Assistant or the server, so every test folder can use it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import overload

DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for conditions that normally hold within milliseconds."""

What = str | Callable[[], str]
"""What is awaited, for the failure message; a callable is asked at the deadline (to say what is missing)."""


def _timed_out(timeout: float, what: What) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")


# ``timeout`` is a polling deadline that ends in a readable failure, not a cancellation scope
# (what ASYNC109 would have us use asyncio.timeout for).
@overload
async def wait_for[T](
    condition: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    what: What = ...,
    interval: float = ...,
) -> T: ...


@overload
async def wait_for[T](
    condition: Callable[[], T | None],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    what: What = ...,
    interval: float = ...,
) -> T: ...


async def wait_for(
    condition: Callable[[], object],
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    what: What = "the condition",
    interval: float = 0.01,
) -> object:
    """Poll ``condition`` (sync or async) on the running loop until it returns something truthy; return that.

    ``None`` is never returned, so a condition that returns a value or None gives the value.

    Raises AssertionError naming ``what`` once ``timeout`` seconds have passed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise _timed_out(timeout, what)
        await asyncio.sleep(interval)


def wait_until[T](
    condition: Callable[[], T | None],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    what: What = "the condition",
    interval: float = 0.01,
) -> T:
    """``wait_for`` for code that runs without an event loop: sleeps the calling thread between polls."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what)
        time.sleep(interval)
    return value
