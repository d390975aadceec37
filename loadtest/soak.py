"""`make soak`: the real stack under the load test's users at about 70 % of its measured capacity for a bounded
time, watched for leaks.

    .venv/bin/python -m loadtest.soak                 # 5 minutes (plus ~1-2 minutes of setup)
    .venv/bin/python -m loadtest.soak --minutes 20 --fraction 0.7 --users 20

A mode of the load test, built from its parts: a private local stack (localstack.stack: Triton on CPU and the
gateway process on free 127.0.0.1 ports, a fresh data directory, a generated key), the gallery seeded as
`make loadtest` seeds it (loadtest.seed), the mix's capacity measured by a short closed-loop Locust run
(loadtest/locustfile.py without think time; see mix_capacity), then the same users at `fraction` of that
capacity (constant throughput, Poisson arrivals; users in proportion to the mix's weights, so the endpoints'
rates are the mix), sampling every few seconds: the gateway's RSS, open files and threads, Triton's process tree
(count, RSS) and open files. Gates: no failed request; gateway RSS growth under 10 % from the end of the warm-up
to the end of the run; open files back to their pre-load count; the same Triton processes at the end; the
gateway spawned no process; and after shutdown no process of the stack left and its ports free. Writes
Locust's files and summary.json under --results (default benchmarks/results/loadtest/<UTC time>-soak/) and
exits 0 when every gate passes, 1 when one fails, 2 when the run itself could not be made.

Not part of `make test` (it runs for minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from loadtest import gates
from loadtest.capacity import PRIMARY
from loadtest.headless import LocustRun
from loadtest.mix import DEFAULT_MIX, parse_mix
from loadtest.run import RESULTS
from loadtest.seed import SeedError, seed
from localstack.probes import alive, descendants, open_fds, port_free, rss_mb
from localstack.stack import LocalStack, StackError

PASS, GATE_FAILED, RUN_FAILED = 0, 1, 2


def mix_capacity(stats: list[gates.EndpointStats], mix: dict[str, int], users: int,
                 seconds: float) -> tuple[float, dict[str, float]]:
    """(tasks/s the stack sustains for the mix, completed tasks/s per endpoint) from a closed-loop run in which
    `users` were spread over the endpoints in proportion to their weights (Locust does so exactly when users is
    a multiple of the weights' sum). Each endpoint's mean task time under that contention is its users over its
    completed tasks per second (Little's law); weighted by the mix it is the mix's mean task time, and `users`
    running the mix back to back complete users / that many tasks per second. A task is counted by its primary
    request (an enrolment task is create + enrol + erase: its enrol counts it)."""
    total = sum(mix.values())
    rates = {endpoint: sum(s.requests - s.failures for s in stats if s.name == PRIMARY[endpoint]) / seconds
             for endpoint in mix}
    if idle := [endpoint for endpoint, rate in rates.items() if rate <= 0]:
        raise RuntimeError(f"capacity probe: no {', '.join(idle)} task completed")
    mean_task_s = sum(weight / total * (users * weight / total) / rates[endpoint] for endpoint, weight in mix.items())
    return users / mean_task_s, rates


def probe_capacity(stack: LocalStack, args: argparse.Namespace, out: Path) -> dict:
    """Closed loop: the soak's users without think time for `probe_seconds`, spread over the mix's endpoints."""
    run = LocustRun(url=stack.url, api_key=stack.api_key, out_dir=out / "probe", duration_s=args.probe_seconds,
                    users=args.users, mix=args.mix, gallery=args.gallery, bad_fraction=0.0, ramp_s=1.0,
                    extra_args=["--think-time", "0,0"])
    code = run.run()
    if code != 0 or not run.stats_csv.exists():
        raise RuntimeError(f"capacity probe: locust exited with {code}: {run.log_tail()}")
    stats = gates.read_stats(run.stats_csv)
    rate, by_endpoint = mix_capacity(stats, parse_mix(args.mix), args.users, args.probe_seconds)
    total = gates.aggregate(stats)
    return {"tasks_per_s": rate, "tasks_per_s_by_endpoint": by_endpoint, "errors": total.failures if total else 0,
            "seconds": args.probe_seconds, "users": args.users}


class Sampler(threading.Thread):
    def __init__(self, gateway_pid: int, triton_pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.gateway_pid, self.triton_pid, self.every = gateway_pid, triton_pid, every
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> dict:
        tree = descendants(self.triton_pid) | {self.triton_pid}
        with open(f"/proc/{self.gateway_pid}/status") as f:
            threads = int(next(line for line in f if line.startswith("Threads:")).split()[1])
        return {"t": round(time.monotonic() - self.t0, 1), "gateway_rss_mb": round(rss_mb(self.gateway_pid), 1),
                "gateway_fds": open_fds(self.gateway_pid), "gateway_threads": threads,
                "gateway_children": len(descendants(self.gateway_pid)),
                "triton_processes": len(tree), "triton_rss_mb": round(sum(rss_mb(p) for p in tree if alive(p)), 1),
                "triton_fds": open_fds(self.triton_pid), "load1": os.getloadavg()[0]}

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.samples.append(self.sample())


def watch(stack: LocalStack, args: argparse.Namespace, out: Path, result: dict, verdicts: dict[str, bool]) -> None:
    """Seed, probe, soak and sample; fills `result` and the gates judged while the stack runs."""
    gateway, triton_pid = stack.gateway, stack.triton_pid
    seeded = seed(stack.url, stack.api_key, args.subjects, args.gallery)  # the users need its subjects
    print(f"==> gallery {seeded.gallery!r}: {seeded.subjects} subjects, {seeded.templates} templates", flush=True)
    print(f"==> capacity probe ({args.probe_seconds:g} s, {args.users} users without think time)", flush=True)
    probe = probe_capacity(stack, args, out)
    rate = probe["tasks_per_s"] * args.fraction
    result["capacity"] = probe
    result["target_tasks_per_s"] = round(rate, 2)
    print(f"    capacity {probe['tasks_per_s']:.2f} tasks/s ({probe['errors']} errors); "
          f"target {rate:.2f} tasks/s over {args.users} users", flush=True)
    time.sleep(6)  # the probe's keep-alive connections close (uvicorn: 5 s)
    idle = {"gateway_fds": gateway.open_fds(), "triton_fds": open_fds(triton_pid)}
    sampler = Sampler(gateway.pid, triton_pid, args.sample_every)
    sampler.samples.append(sampler.sample())
    sampler.start()
    seconds = int(args.minutes * 60)
    run = LocustRun(url=stack.url, api_key=stack.api_key, out_dir=out, duration_s=seconds, users=args.users,
                    mix=args.mix, gallery=args.gallery, rps=rate, bad_fraction=0.0)
    print(f"==> locust {seconds} s", flush=True)
    try:
        code = run.run()
    finally:
        sampler.stop.set()
        sampler.join()
    if code != 0 or not run.stats_csv.exists():
        raise RuntimeError(f"locust exited with {code}: {run.log_tail()}")
    time.sleep(6)
    after = {"gateway_fds": gateway.open_fds(), "triton_fds": open_fds(triton_pid)}
    stats = gates.read_stats(run.stats_csv)
    total = gates.aggregate(stats)
    result["stats"] = [s.__dict__ for s in stats]
    result["errors"] = gates.read_failures(run.failures_csv)
    result["samples"] = samples = sampler.samples
    print()
    print(gates.table(stats))
    warm = next((s for s in samples if s["t"] >= args.warmup_fraction * seconds), samples[0])
    tail = samples[-3:]
    end_rss = statistics.fmean(s["gateway_rss_mb"] for s in tail)
    growth = (end_rss - warm["gateway_rss_mb"]) / warm["gateway_rss_mb"]
    result["gateway_rss_mb"] = {"start": samples[0]["gateway_rss_mb"], "after_warmup": warm["gateway_rss_mb"],
                                "end": round(end_rss, 1), "max": max(s["gateway_rss_mb"] for s in samples),
                                "growth_after_warmup": round(growth, 4)}
    result["triton_rss_mb"] = {"after_warmup": warm["triton_rss_mb"], "end": tail[-1]["triton_rss_mb"]}
    result["fds"] = {"idle_before": idle, "idle_after": after,
                     "max_gateway_under_load": max(s["gateway_fds"] for s in samples)}
    result["processes"] = {"triton_start": samples[0]["triton_processes"], "triton_end": tail[-1]["triton_processes"],
                           "gateway_children_max": max(s["gateway_children"] for s in samples),
                           "gateway_threads": [samples[0]["gateway_threads"], tail[-1]["gateway_threads"]]}
    verdicts["no failed request"] = total is not None and total.failures == 0 and total.requests > 0
    verdicts["gateway RSS growth < 10 %"] = growth < args.max_rss_growth
    verdicts["gateway open files back to idle"] = after["gateway_fds"] <= idle["gateway_fds"] + 2
    verdicts["triton open files back to idle"] = after["triton_fds"] <= idle["triton_fds"] + 2
    verdicts["same Triton processes"] = samples[0]["triton_processes"] == tail[-1]["triton_processes"]
    verdicts["gateway spawned no processes"] = result["processes"]["gateway_children_max"] == 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0, help="Locust run time")
    p.add_argument("--fraction", type=float, default=0.7, help="share of the measured capacity")
    p.add_argument("--users", type=int, help="Locust users, a multiple of the mix's weights' sum (default: that "
                   "sum, one user per unit of weight); the probe runs them without think time, the soak at the rate")
    p.add_argument("--mix", default=DEFAULT_MIX, help="endpoint weights (loadtest.mix)")
    p.add_argument("--subjects", type=int, default=100, help="seed the gallery to N subjects (at least 2)")
    p.add_argument("--gallery", default="loadtest")
    p.add_argument("--probe-seconds", type=float, default=30.0, help="closed-loop capacity probe")
    p.add_argument("--warmup-fraction", type=float, default=0.2, help="RSS baseline taken after this share")
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument("--max-rss-growth", type=float, default=0.10)
    p.add_argument("--results", type=Path, help="results directory (default: under benchmarks/results/loadtest/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        weights = sum(parse_mix(args.mix).values())
        args.users = args.users or weights
        if args.users % weights:  # else Locust's split over the endpoints is not the mix
            raise ValueError(f"--users must be a multiple of {weights}, the sum of the mix's weights")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return RUN_FAILED
    # SIGTERM (CI timeouts, kill) unwinds like Ctrl-C: Locust and the stack are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started_at = datetime.now(UTC)
    out = args.results or RESULTS / f"{started_at:%Y%m%dT%H%M%SZ}-soak"
    out.mkdir(parents=True, exist_ok=True)
    print(f"==> soak: {args.minutes:g} min at {args.fraction:.0%} of capacity; results in {out}", flush=True)
    result: dict = {"date": started_at.isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                    "args": {k: str(v) for k, v in vars(args).items()}}
    verdicts: dict[str, bool] = {}
    stack = LocalStack()
    try:
        with stack:
            ports, pids = stack.ports, descendants(stack.triton_pid) | {stack.triton_pid, stack.gateway.pid}
            watch(stack, args, out, result, verdicts)
    except (StackError, SeedError, httpx.HTTPError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return RUN_FAILED
    time.sleep(1)
    left = sorted(p for p in pids if alive(p))
    result["leftover_processes"] = left
    verdicts["no process left after shutdown"] = not left
    verdicts["ports free after shutdown"] = all(port_free(p) for p in ports)
    result["gates"] = verdicts
    result["passed"] = all(verdicts.values())
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=str) + "\n")

    rss = result["gateway_rss_mb"]
    print(f"\ngateway RSS MB: start {rss['start']}, after warm-up {rss['after_warmup']}, end {rss['end']}, "
          f"max {rss['max']} (growth {rss['growth_after_warmup']:+.1%}); fds {result['fds']}; "
          f"processes {result['processes']}")
    for gate, ok in verdicts.items():
        print(f"  {'PASS' if ok else 'FAIL'} {gate}")
    print(f"{'PASS' if result['passed'] else 'FAIL'}: {out}/summary.json")
    return PASS if result["passed"] else GATE_FAILED


if __name__ == "__main__":
    sys.exit(main())
