"""When a constant-throughput user sends (--rps): its arrival times over the run, drawn up front.

"poisson": a Poisson process conditioned on its count, i.e. round(duration / period) times uniform over the
run, sorted: random gaps and bursts like independent clients, yet the offered count is exact, so an achieved
rate below the target means the gateway did not keep up, not that the dice rolled low.
"even": one request every period from a random phase. The phases stay fixed for the whole run, so whether
two users collide every period is luck of the draw, and the p99 with it.
No Locust import: unit-tested directly.
"""

from __future__ import annotations

import random
from collections import deque


def schedule(start: float, end: float, period: float, kind: str = "poisson",
             rng: random.Random | None = None) -> deque[float]:
    rng = rng or random.Random()
    if end <= start or period <= 0:
        return deque()
    if kind == "poisson":
        return deque(sorted(rng.uniform(start, end) for _ in range(round((end - start) / period))))
    if kind == "even":
        first = start + rng.uniform(0, period)
        return deque(first + i * period for i in range(int((end - first) / period) + 1) if first + i * period < end)
    raise ValueError(f"unknown arrivals {kind!r} (poisson, even)")


def next_wait(times: deque[float], now: float, late_after: float) -> float | None:
    """Seconds until the next arrival (0: due now), or None when none is left. Arrivals more than late_after
    overdue are dropped: a user stuck behind slow answers does not fire its backlog at once, and the requests
    it could not send show as a missed rate."""
    while times and times[0] < now - late_after:
        times.popleft()
    if not times:
        return None
    return max(0.0, times.popleft() - now)
