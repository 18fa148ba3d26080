"""Token buckets per key (a user, an address): the limits every API entry point shares."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    """A token bucket per key: ``per_minute`` a minute, bursts up to ``burst`` (default: the same number).

    Buckets are kept in an LRU bounded by ``max_users`` so a flood of distinct keys cannot
    grow memory without bound (an evicted key simply starts with a full bucket).
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        max_users: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute if burst is None else burst)
        self.rate = per_minute / 60.0
        self.max_users = max_users
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take a token; return 0 when allowed, else the seconds until one is available."""
        if self.capacity <= 0:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_users:
            self._buckets.popitem(last=False)
        return wait
