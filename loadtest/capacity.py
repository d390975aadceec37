"""Capacity search: the highest steady request rate per endpoint at which the SLOs hold.

    python -m loadtest.capacity --endpoints verify_image identify          # the local stack, as `make loadtest`
    python -m loadtest.capacity --url https://... --start-rps 20 --step-duration 60s

For each endpoint alone: constant-throughput users (rate/users each, Poisson arrivals) at a target rate
for --step-duration, or longer to get --min-requests (the p99 of 30 requests is their maximum: one outlier).
A step passes when p99 < P99_MS on every request name, the error rate < MAX_ERROR_RATE and the achieved
rate is at least --min-achieved of the target (a gateway that cannot keep up fails even if the requests it
does serve are fast). The rate grows by --growth until a step fails, then the gap between the last pass and
the first failure is bisected --refine times. Good traffic only (no deliberately bad requests). Results:
capacity.json and every step's Locust files under --results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from facestack.settings import REPO_ROOT
from loadtest import gates
from loadtest.headless import LocustRun, parse_duration
from loadtest.mix import ENDPOINTS
from loadtest.seed import SeedError, seed
from loadtest.target import LOCAL_URL, Target, TargetError, resolve
from localstack.stack import StackError

# The request that counts one task of each endpoint (an enrolment task is create + enrol + erase).
PRIMARY = {"verify_image": "/v1/verify (image)", "verify_subject": "/v1/verify (subject)",
           "identify": "/v1/identify", "detect": "/v1/detect", "enrol": ".../subjects/{s}/faces"}


@dataclass
class Step:
    endpoint: str
    target_rps: float
    users: int
    achieved_rps: float
    p50_ms: float
    p99_ms: float  # the worst p99 over the step's request names
    errors: int
    requests: int
    passed: bool
    reasons: list[str]
    results: str
    load_1m: float  # the machine's load average at the end of the step (ours included): noise context


@dataclass
class Capacity:
    endpoint: str
    rps: float | None  # highest passing target rate (None: even the first step failed)
    first_failure: float | None
    steps: list[Step]


def users_for(rps: float, p99_ms: float) -> int:
    """Enough users that each one's pacing period exceeds a latency at the SLO: period = users / rps."""
    return max(2, math.ceil(rps * max(1.0, 2 * p99_ms / 1000)))


def step_seconds(rps: float, step_s: float, min_requests: int) -> float:
    """Long enough for min_requests: the p99 of fewer than ~100 requests is their maximum, one outlier."""
    return max(step_s, math.ceil(min_requests / rps))


def judge(stats: list[gates.EndpointStats], endpoint: str, target_rps: float, duration_s: float, p99_ms: float,
          max_error_rate: float, min_achieved: float) -> tuple[bool, list[str], float]:
    verdict = gates.evaluate(stats, p99_ms, max_error_rate)
    primary = next((s for s in stats if s.name == PRIMARY[endpoint]), None)
    achieved = (primary.requests - primary.failures) / duration_s if primary else 0.0
    reasons = list(verdict.reasons)
    if achieved < min_achieved * target_rps:
        reasons.append(f"achieved {achieved:.2f}/s < {min_achieved:.0%} of {target_rps:.2f}/s")
    return not reasons, reasons, achieved


def run_step(target: Target, endpoint: str, rps: float, args: argparse.Namespace, out: Path) -> Step:
    duration = step_seconds(rps, parse_duration(args.step_duration), args.min_requests)
    users = users_for(rps, args.p99_ms)
    run = LocustRun(url=target.url, api_key=target.api_key, out_dir=out / f"{endpoint}-{rps:.2f}rps",
                    duration_s=duration, users=users, shape="steady", mix=f"{endpoint}=1", gallery=args.gallery,
                    rps=rps, bad_fraction=0.0, ramp_s=1.0, extra_args=["--arrivals", args.arrivals])
    code = run.run()
    if code != 0 or not run.stats_csv.exists():
        raise RuntimeError(f"locust exited with {code}: {run.log_tail()}")
    stats = gates.read_stats(run.stats_csv)
    passed, reasons, achieved = judge(stats, endpoint, rps, duration, args.p99_ms, args.max_error_rate,
                                      args.min_achieved)
    named = [s for s in stats if s.name != gates.AGGREGATED and s.requests]
    total = gates.aggregate(stats)
    step = Step(endpoint, round(rps, 3), users, round(achieved, 2),
                max((s.p50_ms for s in named), default=math.nan), max((s.p99_ms for s in named), default=math.nan),
                total.failures if total else 0, total.requests if total else 0, passed, reasons, str(run.out_dir),
                round(os.getloadavg()[0], 2))
    print(f"    {endpoint:15} {rps:7.2f}/s  users {users:3}  achieved {achieved:6.2f}/s  p50 {step.p50_ms:6.0f} ms  "
          f"p99 {step.p99_ms:6.0f} ms  errors {step.errors:3}  load {step.load_1m:4.1f}  "
          f"{'PASS' if passed else 'FAIL: ' + '; '.join(reasons)}",
          flush=True)
    return step


def search(target: Target, endpoint: str, args: argparse.Namespace, out: Path) -> Capacity:
    steps: list[Step] = []
    low: float | None = None
    high: float | None = None
    rps = args.start_rps
    while rps <= args.max_rps:
        steps.append(run_step(target, endpoint, rps, args, out))
        if not steps[-1].passed:
            high = rps
            break
        low = rps
        rps *= args.growth
    if high is not None:
        floor = low if low is not None else 0.0
        for _ in range(args.refine):
            mid = (floor + high) / 2
            if mid < args.min_rps or high - floor < args.min_rps:
                break
            steps.append(run_step(target, endpoint, mid, args, out))
            if steps[-1].passed:
                floor = low = mid
            else:
                high = mid
    return Capacity(endpoint, round(low, 2) if low is not None else None, round(high, 2) if high else None, steps)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.capacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=LOCAL_URL)
    p.add_argument("--api-key", default=os.environ.get("LOADTEST_API_KEY", ""))
    p.add_argument("--stack", choices=("auto", "private", "none"), default="auto")
    p.add_argument("--triton-url")
    p.add_argument("--endpoints", nargs="+", choices=list(ENDPOINTS), default=list(ENDPOINTS))
    p.add_argument("--p99-ms", type=float, default=500.0)
    p.add_argument("--max-error-rate", type=float, default=0.1, help="percent")
    p.add_argument("--min-achieved", type=float, default=0.9, help="achieved / target rate for a pass")
    p.add_argument("--start-rps", type=float, default=1.0)
    p.add_argument("--growth", type=float, default=1.5, help="rate multiplier between passing steps")
    p.add_argument("--max-rps", type=float, default=200.0)
    p.add_argument("--refine", type=int, default=2, help="bisection steps after the first failure")
    p.add_argument("--min-rps", type=float, default=0.25, help="stop bisecting below this gap")
    p.add_argument("--arrivals", choices=("poisson", "even"), default="poisson",
                   help="request arrivals at the target rate: Poisson (realistic bursts) or evenly paced")
    p.add_argument("--step-duration", default="30s", help="at least; longer when needed for --min-requests")
    p.add_argument("--min-requests", type=int, default=100, help="requests per step at least (p99 needs ~100)")
    p.add_argument("--subjects", type=int, default=100)
    p.add_argument("--gallery", default="loadtest")
    p.add_argument("--results", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # SIGTERM (CI timeouts, kill) unwinds like Ctrl-C: Locust and a private stack are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = datetime.now(UTC)
    out = args.results or REPO_ROOT / "benchmarks" / "results" / "loadtest" / f"{started:%Y%m%dT%H%M%SZ}-capacity"
    results: list[Capacity] = []
    load_before = os.getloadavg()
    try:
        parse_duration(args.step_duration)
        with resolve(args.url, args.api_key, args.stack, args.triton_url) as target:
            print(f"==> target: {target.description}", flush=True)
            description = target.description
            if args.subjects > 0:
                seeded = seed(target.url, target.api_key, args.subjects, args.gallery)
                print(f"==> gallery {seeded.gallery!r}: {seeded.subjects} subjects, {seeded.templates} templates",
                      flush=True)
            print(f"==> capacity at p99 < {args.p99_ms:g} ms, errors < {args.max_error_rate:g} %, "
                  f"{args.step_duration} steps (load average {load_before[0]:.1f})", flush=True)
            for endpoint in args.endpoints:
                results.append(search(target, endpoint, args, out))
    except (TargetError, StackError, SeedError, httpx.HTTPError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{'endpoint':16} {'capacity at SLO':>16} {'lowest failing':>14}  p99 at capacity")
    for c in results:
        best = max((s for s in c.steps if s.passed), key=lambda s: s.target_rps, default=None)
        cap = f"{c.rps:.2f} req/s" if c.rps is not None else "< start"
        fail = f"{c.first_failure:.2f}" if c.first_failure else "-"
        print(f"{c.endpoint:16} {cap:>16} {fail:>14}  {f'{best.p99_ms:.0f} ms' if best else '-'}")
    out.mkdir(parents=True, exist_ok=True)
    report = {"started": started.isoformat(timespec="seconds"), "target": description,
              "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "api_key"},
              "machine": {"cpus": os.cpu_count(), "load_average_before": load_before,
                          "load_average_after": os.getloadavg()},
              "capacity": [asdict(c) for c in results]}
    (out / "capacity.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {out}/capacity.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
