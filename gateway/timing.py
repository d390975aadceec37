"""Per-request backend timings, reported in the `Server-Timing` response header.

`triton` and `milvus` are the wall time during which at least one call to that backend was in flight
(verify's two concurrent Triton calls count once), so `total - triton` is the gateway's own overhead;
`queue` is the time calls waited for a Triton slot in the gateway's bulkhead (load shedding, not work).
"""

from __future__ import annotations

from contextvars import ContextVar

_intervals: ContextVar[dict[str, list[tuple[float, float]]] | None] = ContextVar("backend_intervals", default=None)


def begin() -> dict[str, list[tuple[float, float]]]:
    intervals: dict[str, list[tuple[float, float]]] = {}
    _intervals.set(intervals)  # tasks spawned by the request copy the context and so share this dict
    return intervals


def record(backend: str, start: float, end: float) -> None:
    intervals = _intervals.get()
    if intervals is not None:
        intervals.setdefault(backend, []).append((start, end))


def union_ms(spans: list[tuple[float, float]]) -> float:
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(spans):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total * 1000


def header(intervals: dict[str, list[tuple[float, float]]], total_s: float) -> str:
    parts = [f"{name};dur={union_ms(spans):.2f}" for name, spans in sorted(intervals.items())]
    parts.append(f"total;dur={total_s * 1000:.2f}")
    return ", ".join(parts)
