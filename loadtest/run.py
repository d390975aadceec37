"""`make loadtest`: seed a gallery, run Locust headless for a fixed time, report, and gate on the SLOs.

    python -m loadtest.run                                   # the local stack: `make run`'s, else a private one
    python -m loadtest.run --url https://faces.example.com --duration 10m --users 200 --shape step
    LOADTEST_API_KEY=... python -m loadtest.run --url ...    # the key: --api-key, LOADTEST_API_KEY, or the local one

Writes under --results (default benchmarks/results/loadtest/<UTC time>-<shape>/): Locust's CSVs
(locust_stats.csv, locust_stats_history.csv, locust_failures.csv, locust_exceptions.csv), report.html,
locust.log and summary.json. Prints the summary table, then the gates. Exit status: 0 when every SLO holds,
1 when one fails, 2 when the run itself could not be made (no gateway, no key, seeding or Locust failed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from facestack.settings import REPO_ROOT
from loadtest import gates
from loadtest.headless import LocustRun, parse_duration
from loadtest.mix import DEFAULT_MIX, ENDPOINTS, parse_mix
from loadtest.seed import SeedError, cleanup, seed
from loadtest.shapes import SHAPES
from loadtest.target import LOCAL_URL, TargetError, resolve
from localstack.stack import StackError

RESULTS = REPO_ROOT / "benchmarks" / "results" / "loadtest"
PASS, SLO_FAILED, RUN_FAILED = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=LOCAL_URL, help="gateway base URL (default: the local stack)")
    p.add_argument("--api-key", default=os.environ.get("LOADTEST_API_KEY", ""),
                   help="X-API-Key with verify + enrol scopes (admin to create the galleries); "
                        "default LOADTEST_API_KEY, for the local URL also make run's key")
    p.add_argument("--stack", choices=("auto", "private", "none"), default="auto",
                   help="auto: start a private local stack when URL is the local default and nothing answers")
    p.add_argument("--triton-url", help="private stack: reuse this Triton (gRPC host:port) instead of starting one")
    p.add_argument("--duration", default="60s", help="run time, e.g. 60s, 5m")
    p.add_argument("--users", type=int, default=5, help="base concurrent users (step and spike multiply it)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="steady")
    p.add_argument("--shape-factor", type=float, default=0.0, help="burst/spike multiplier (0: 3 step, 5 spike)")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"endpoint weights over {', '.join(ENDPOINTS)}")
    p.add_argument("--rps", type=float, default=0.0, help="constant-throughput target, tasks/s (0: think time)")
    p.add_argument("--bad-fraction", type=float, default=0.05, help="share of deliberately bad requests")
    p.add_argument("--p99-ms", type=float, default=500.0, help="SLO: p99 latency below this, per endpoint")
    p.add_argument("--max-error-rate", type=float, default=0.1, help="SLO: error rate below this, in percent")
    p.add_argument("--subjects", type=int, default=100, help="seed the gallery to N subjects (0: no seeding)")
    p.add_argument("--gallery", default="loadtest")
    p.add_argument("--cleanup", action="store_true", help="erase the galleries after the run")
    p.add_argument("--results", type=Path, help="results directory (default: under benchmarks/results/loadtest/)")
    p.add_argument("--locust-arg", action="append", default=[], help="passed to Locust as is (repeatable), "
                   "e.g. --locust-arg=--processes=4 for a multi-core load generator")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # SIGTERM (CI timeouts, kill) unwinds like Ctrl-C: Locust and a private stack are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        duration = parse_duration(args.duration)
        parse_mix(args.mix)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return RUN_FAILED
    started = datetime.now(UTC)
    out = args.results or RESULTS / f"{started:%Y%m%dT%H%M%SZ}-{args.shape}"
    try:
        with resolve(args.url, args.api_key, args.stack, args.triton_url) as target:
            print(f"==> target: {target.description}", flush=True)
            description = target.description
            seeded = None
            if args.subjects > 0:
                seeded = seed(target.url, target.api_key, args.subjects, args.gallery)
                print(f"==> gallery {seeded.gallery!r}: {seeded.subjects} subjects, {seeded.templates} templates "
                      f"({seeded.created} added in {seeded.seconds} s)", flush=True)
            run = LocustRun(url=target.url, api_key=target.api_key, out_dir=out, duration_s=duration,
                            users=args.users, shape=args.shape, shape_factor=args.shape_factor, mix=args.mix,
                            gallery=args.gallery, rps=args.rps, bad_fraction=args.bad_fraction,
                            extra_args=args.locust_arg)
            load_before = os.getloadavg()
            print(f"==> locust: {args.shape} shape, {args.users} users, {args.duration}, mix {args.mix}"
                  f"{f', {args.rps:g} tasks/s' if args.rps else ''} (load average {load_before[0]:.1f})", flush=True)
            t0 = time.monotonic()
            code = run.run()
            elapsed = time.monotonic() - t0
            if args.cleanup:
                cleanup(target.url, target.api_key, args.gallery)
    except (TargetError, StackError, SeedError, httpx.HTTPError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return RUN_FAILED
    if code != 0 or not run.stats_csv.exists():
        print(f"error: locust exited with {code}; its log ({run.log}) ends:\n{run.log_tail()}", file=sys.stderr)
        return RUN_FAILED

    stats = gates.read_stats(run.stats_csv)
    verdict = gates.evaluate(stats, args.p99_ms, args.max_error_rate)
    failures = gates.read_failures(run.failures_csv)
    print()
    print(gates.table(stats))
    if failures:
        print("\nerrors (most frequent first):")
        for count, name, error in failures:
            print(f"  {count:>5}  {name}: {error[:160]}")
    print(f"\nSLO gates (p99 < {args.p99_ms:g} ms per endpoint, error rate < {args.max_error_rate:g} %):")
    for line in verdict.checks:
        print(f"  {line}")
    summary = {
        "started": started.isoformat(timespec="seconds"), "seconds": round(elapsed, 1),
        "target": description,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "api_key"},
        "machine": {"cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "seed": seeded.__dict__ if seeded else None, "verdict": verdict.as_dict(),
        "stats": [s.__dict__ for s in stats], "errors": failures,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\n{'PASS' if verdict.passed else 'FAIL'}: reports in {out} (report.html, locust_*.csv, summary.json)")
    return PASS if verdict.passed else SLO_FAILED


if __name__ == "__main__":
    sys.exit(main())
