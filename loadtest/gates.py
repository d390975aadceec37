"""Read Locust's CSV stats, print the summary table and evaluate the SLO gates (no Locust import).

Gates (both configurable): every endpoint's p99 and the aggregate p99 must be below `p99_ms`, and the
aggregate error rate below `max_error_rate_pct` percent. A request is an error when its status was not the
one expected: 5xx, 429, timeouts and connection errors, a wrong decision, or a deliberately bad request that
did not get its expected 4xx (the locustfile marks those; expected 4xx are successes).
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

AGGREGATED = "Aggregated"


@dataclass(frozen=True)
class EndpointStats:
    name: str
    method: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def label(self) -> str:
        return self.name if self.name == AGGREGATED or not self.method else f"{self.method} {self.name}"

    @property
    def error_rate_pct(self) -> float:
        return 100.0 * self.failures / self.requests if self.requests else 0.0


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # why it failed (empty when passed)
    checks: list[str] = field(default_factory=list)  # every check, for the log

    def as_dict(self) -> dict:
        return asdict(self)


def _number(value: str) -> float:
    # Locust writes "N/A" for percentiles of an endpoint without requests.
    try:
        return float(value)
    except ValueError:
        return math.nan


def read_stats(path: Path) -> list[EndpointStats]:
    """Rows of Locust's `<prefix>_stats.csv`, the aggregate last."""
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            rows.append(EndpointStats(
                name=row["Name"], method=row["Type"], requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]), rps=_number(row["Requests/s"]), p50_ms=_number(row["50%"]),
                p95_ms=_number(row["95%"]), p99_ms=_number(row["99%"]), max_ms=_number(row["Max Response Time"])))
    return rows


def read_failures(path: Path, limit: int = 8) -> list[tuple[int, str, str]]:
    """(occurrences, endpoint, error) from `<prefix>_failures.csv`, most frequent first."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = [(int(r["Occurrences"]), r["Name"], r["Error"]) for r in csv.DictReader(f)]
    return sorted(rows, reverse=True)[:limit]


def aggregate(stats: list[EndpointStats]) -> EndpointStats | None:
    return next((s for s in stats if s.name == AGGREGATED), None)


def evaluate(stats: list[EndpointStats], p99_ms: float, max_error_rate_pct: float) -> Verdict:
    """SLOs: p99 < p99_ms for each endpoint and the aggregate; aggregate error rate < max_error_rate_pct.

    A run with zero errors always passes the error gate, so MAX_ERROR_RATE=0 means "no errors at all".
    A run without any request fails: it proves nothing.
    """
    verdict = Verdict(passed=True)

    def check(ok: bool, value: str, limit: str, what: str = "", op: str = "") -> None:
        text = f"{value} {op or ('<' if ok else '>=')} {limit}{': ' + what if what else ''}"
        verdict.checks.append(("PASS " if ok else "FAIL ") + text)
        if not ok:
            verdict.passed = False
            verdict.reasons.append(text)

    total = aggregate(stats)
    if total is None or total.requests == 0:
        verdict.passed = False
        verdict.reasons.append("no requests completed")
        verdict.checks.append("FAIL no requests completed")
        return verdict
    rate = total.error_rate_pct
    zero = total.failures == 0 and max_error_rate_pct <= 0  # "no errors allowed" and none happened
    check(zero or rate < max_error_rate_pct, f"error rate {rate:.3f} % ({total.failures}/{total.requests})",
          f"{max_error_rate_pct:g} %", op="<=" if zero else "")
    for s in stats:
        if s.requests == 0:
            continue
        # NaN (no latency recorded) compares False: it fails, as it should.
        check(s.p99_ms < p99_ms, f"p99 {s.p99_ms:.0f} ms", f"{p99_ms:g} ms", s.label)
    return verdict


def table(stats: list[EndpointStats]) -> str:
    """The summary table: RPS, p50/p95/p99, errors per endpoint, the aggregate last."""
    width = max([len("endpoint"), *(len(s.label) for s in stats)])
    head = (f"{'endpoint':<{width}}  {'reqs':>6}  {'errors':>6}  {'err %':>6}  {'RPS':>6}  "
            f"{'p50 ms':>7}  {'p95 ms':>7}  {'p99 ms':>7}  {'max ms':>7}")
    lines = [head, "-" * len(head)]
    for s in stats:
        if s.name == AGGREGATED:
            lines.append("-" * len(head))

        def ms(v: float) -> str:
            return "-" if math.isnan(v) else f"{v:.0f}"

        lines.append(f"{s.label:<{width}}  {s.requests:>6}  {s.failures:>6}  {s.error_rate_pct:>6.2f}  "
                     f"{s.rps:>6.2f}  {ms(s.p50_ms):>7}  {ms(s.p95_ms):>7}  {ms(s.p99_ms):>7}  {ms(s.max_ms):>7}")
    return "\n".join(lines)
