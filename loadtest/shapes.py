"""Load shapes as pure functions of elapsed time (the locustfile's LoadTestShape delegates here).

Each returns (users, spawn rate per second) for time t of a run of `duration` seconds with `users` as the
base level, or None when the run is over. No Locust import, so they are unit-tested directly.
"""

from __future__ import annotations

from collections.abc import Callable

Tick = tuple[int, float] | None


def _ramp_rate(users: int, duration: float, ramp_s: float | None = None) -> float:
    # Default: ramp over ~10 % of the run (1-10 s), enough to avoid a thundering start, short enough to measure
    # the steady state. The capacity search asks for ~1 s: its schedules start when each user does.
    return users / (max(0.1, ramp_s) if ramp_s is not None else min(10.0, max(1.0, duration * 0.1)))


def steady(t: float, users: int, duration: float, factor: float = 1.0, ramp_s: float | None = None) -> Tick:
    """Ramp to `users` and hold."""
    return None if t >= duration else (users, _ramp_rate(users, duration, ramp_s))


def step(t: float, users: int, duration: float, factor: float = 3.0, ramp_s: float | None = None) -> Tick:
    """Base load for the first third, a step to factor x base for the second, back to base for the last:
    shows whether latency recovers after a sustained burst."""
    if t >= duration:
        return None
    burst = round(users * factor)
    if duration / 3 <= t < 2 * duration / 3:
        return burst, float(burst)  # all burst users within ~1 s: a step, not a ramp
    return users, float(burst) if t >= duration / 3 else _ramp_rate(users, duration, ramp_s)


def spike(t: float, users: int, duration: float, factor: float = 5.0, ramp_s: float | None = None) -> Tick:
    """Base load with a short spike (factor x base, started at once) for 10 % of the run at its middle."""
    if t >= duration:
        return None
    peak = round(users * factor)
    start, end = duration * 45 / 100, duration * 55 / 100  # not 0.55 * duration: 55.000000000000001 for 100
    if start <= t < end:
        return peak, float(peak * 10)
    return users, float(peak * 10) if t >= start else _ramp_rate(users, duration, ramp_s)


SHAPES: dict[str, Callable[..., Tick]] = {"steady": steady, "step": step, "spike": spike}
DEFAULT_FACTORS = {"steady": 1.0, "step": 3.0, "spike": 5.0}
