"""Per-API-key rate limiting: a token bucket per key, refilled at `rate` tokens/s up to `burst`.

One bucket per (tenant, key id) in each gateway process (N replicas allow N times the rate). Keys come
from the key store, so the number of buckets is bounded by the number of configured keys. Checked right
after authentication, before the body is read or a backend is called; the answer is 429 `rate_limited`
with `Retry-After`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (tokens, last refill)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: tuple[str, str]) -> float:
        """Take one token: 0.0 if the request may go, else the seconds until a token is available.

        No await inside, so on the event loop this is atomic without a lock."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> int:
        return max(1, math.ceil(wait))
