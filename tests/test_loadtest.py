"""Load test tooling: the SLO gates on synthetic stats, shapes and options, and short real runs.

The real runs start `python -m loadtest.run` (Locust as its subprocess: gevent must not patch this pytest
process) against a gateway process in front of the session's real Triton: a passing run, a run with an
impossible p99 that must fail, and a run whose every request gets an unexpected 401 that must fail on errors.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest import gates, soak
from loadtest.arrivals import next_wait, schedule
from loadtest.capacity import judge, step_seconds, users_for
from loadtest.headless import parse_duration
from loadtest.mix import DEFAULT_MIX, ENDPOINTS, parse_mix
from loadtest.shapes import SHAPES, spike, steady, step
from localstack.stack import LocalStack

HEADER = ("Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
          "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
          "99.99%,100%")


def stat(name: str, requests: int = 100, failures: int = 0, p99: float = 200.0, method: str = "POST"
         ) -> gates.EndpointStats:
    return gates.EndpointStats(name, method, requests, failures, rps=requests / 60, p50_ms=p99 / 2,
                               p95_ms=p99 * 0.9, p99_ms=p99, max_ms=p99 * 1.2)


def run_stats(*endpoints: gates.EndpointStats) -> list[gates.EndpointStats]:
    requests = sum(s.requests for s in endpoints)
    failures = sum(s.failures for s in endpoints)
    worst = max((s.p99_ms for s in endpoints), default=math.nan)
    return [*endpoints, stat(gates.AGGREGATED, requests, failures, worst, method="")]


# ---- gates on synthetic stats ----------------------------------------------------------------------

def test_gates_pass_within_both_slos():
    verdict = gates.evaluate(run_stats(stat("/v1/verify", p99=480), stat("/v1/identify", p99=300)), 500, 0.1)
    assert verdict.passed and not verdict.reasons
    assert len(verdict.checks) == 4 and all(c.startswith("PASS") for c in verdict.checks)


def test_gates_fail_on_one_endpoints_p99():
    verdict = gates.evaluate(run_stats(stat("/v1/verify", p99=500), stat("/v1/identify", p99=100)), 500, 0.1)
    assert not verdict.passed
    assert "p99 500 ms >= 500 ms: POST /v1/verify" in verdict.reasons  # the bound is strict: p99 < P99_MS


def test_gates_error_rate_is_strict_and_aggregate():
    # 1 error in 2000 = 0.05 %: passes 0.1 %; 2 in 1000 = 0.2 %: fails even though each endpoint alone...
    assert gates.evaluate(run_stats(stat("/a", 1000, 1), stat("/b", 1000, 0)), 500, 0.1).passed
    verdict = gates.evaluate(run_stats(stat("/a", 500, 2), stat("/b", 500, 0)), 500, 0.1)
    assert not verdict.passed and verdict.reasons == ["error rate 0.200 % (2/1000) >= 0.1 %"]
    # exactly at the limit fails (errors < 0.1 %)
    assert not gates.evaluate(run_stats(stat("/a", 1000, 1)), 500, 0.1).passed


def test_gates_zero_error_budget():
    assert gates.evaluate(run_stats(stat("/a")), 500, 0).passed
    assert not gates.evaluate(run_stats(stat("/a", 10_000, 1)), 500, 0).passed


def test_gates_fail_without_requests_or_latency():
    assert gates.evaluate([], 500, 0.1).reasons == ["no requests completed"]
    assert not gates.evaluate(run_stats(stat("/a", 0)), 500, 0.1).passed
    assert not gates.evaluate(run_stats(stat("/a", p99=math.nan)), 500, 0.1).passed  # "N/A" never passes


def test_gates_skip_endpoints_without_requests():
    verdict = gates.evaluate(run_stats(stat("/a", p99=100), stat("/idle", 0, p99=math.nan)), 500, 0.1)
    assert verdict.passed and not any("/idle" in c for c in verdict.checks)


def test_read_stats_and_table(tmp_path: Path):
    path = tmp_path / "locust_stats.csv"
    path.write_text("\n".join([
        HEADER,
        "POST,/v1/verify (image),120,1,150,170.5,60.1,640.2,900.0,2.0,0.01,150,170,200,220,300,400,500,610,640,640,640",
        "POST,/v1/detect [bad: GIF],3,0,2,2.2,1.9,3.1,300.0,0.05,0.0,2,2,3,3,3,3,3,3,3,3,3",
        "GET,/idle,0,0,0,0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A",
        ",Aggregated,123,1,140,166.0,1.9,640.2,880.0,2.05,0.01,140,170,200,220,300,400,500,610,640,640,640",
    ]) + "\n")
    stats = gates.read_stats(path)
    assert [s.label for s in stats] == ["POST /v1/verify (image)", "POST /v1/detect [bad: GIF]", "GET /idle",
                                        "Aggregated"]
    verify = stats[0]
    assert (verify.requests, verify.failures, verify.p50_ms, verify.p95_ms, verify.p99_ms) == (120, 1, 150, 400, 610)
    assert math.isnan(stats[2].p99_ms)
    assert gates.aggregate(stats) is stats[3]
    verdict = gates.evaluate(stats, 500, 1.0)
    assert verdict.reasons == ["p99 610 ms >= 500 ms: POST /v1/verify (image)", "p99 610 ms >= 500 ms: Aggregated"]
    lines = gates.table(stats).splitlines()
    assert lines[0].split()[:4] == ["endpoint", "reqs", "errors", "err"] and "p99" in lines[0]
    row = next(line for line in lines if line.startswith("POST /v1/verify (image)"))
    assert row.split()[3:] == ["120", "1", "0.83", "2.00", "150", "400", "610", "640"]
    assert "-" in next(line for line in lines if line.startswith("GET /idle")).split()  # N/A shown as "-"


def test_read_failures(tmp_path: Path):
    path = tmp_path / "locust_failures.csv"
    path.write_text("Method,Name,Error,Occurrences\nPOST,/a,\"expected 200, got 429 rate_limited\",3\n"
                    "POST,/b,wrong decision,7\n")
    assert gates.read_failures(path) == [(7, "/b", "wrong decision"), (3, "/a", "expected 200, got 429 rate_limited")]
    assert gates.read_failures(tmp_path / "absent.csv") == []


# ---- shapes, mix, durations, capacity steps ------------------------------------------------------

def test_steady_shape_ramps_then_holds_then_stops():
    assert steady(0, 10, 100) == (10, 1.0)  # ramp over 10 % of the run, at most 10 s
    assert steady(99.9, 10, 100)[0] == 10
    assert steady(100, 10, 100) is None
    assert steady(0, 4, 5)[1] == 4.0  # short runs ramp within a second


def test_step_shape_bursts_to_three_times_in_the_middle_third():
    users = [step(t, 4, 90)[0] for t in (0, 29, 30, 59, 60, 89)]
    assert users == [4, 4, 12, 12, 4, 4]
    assert step(30, 4, 90)[1] >= 12  # the burst arrives within a second
    assert step(90, 4, 90) is None
    assert step(45, 4, 90, factor=2)[0] == 8


def test_spike_shape_is_short_and_sudden():
    timeline = [spike(t, 2, 100)[0] for t in range(100)]
    assert timeline.count(10) == 10 and set(timeline) == {2, 10}
    assert timeline.index(10) == 45
    assert spike(45, 2, 100)[1] >= 100
    assert spike(100, 2, 100) is None
    assert set(SHAPES) == {"steady", "step", "spike"}


def test_ramp_can_be_set():
    assert steady(0, 10, 100, ramp_s=1) == (10, 10.0) and step(0, 6, 90, ramp_s=2) == (6, 3.0)
    assert spike(0, 4, 100, ramp_s=0) == (4, 40.0)  # 0 means as fast as possible: 0.1 s


def test_poisson_arrivals_have_the_exact_count_and_random_gaps():
    times = schedule(10.0, 110.0, 0.5, "poisson", random.Random(1))
    assert len(times) == 200 and list(times) == sorted(times) and times[0] >= 10 and times[-1] < 110
    gaps = [b - a for a, b in zip(times, list(times)[1:], strict=False)]
    assert min(gaps) < 0.05 < 1.5 < max(gaps)  # bursts and lulls, not a metronome
    even = schedule(0.0, 10.0, 1.0, "even", random.Random(2))
    assert len(even) == 10 and all(abs((b - a) - 1.0) < 1e-9 for a, b in zip(even, list(even)[1:], strict=False))
    assert not schedule(5.0, 5.0, 1.0) and not schedule(0.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        schedule(0.0, 1.0, 0.1, "bursty")


def test_late_arrivals_are_dropped_not_fired_at_once():
    times = deque([1.0, 2.0, 3.0, 4.5, 9.0])
    assert next_wait(times, now=4.0, late_after=1.0) == 0.0  # 1.0 and 2.0 dropped, 3.0 due now
    assert next_wait(times, now=4.0, late_after=1.0) == 0.5
    assert next_wait(times, now=4.6, late_after=1.0) == pytest.approx(4.4)
    assert next_wait(times, now=10.0, late_after=1.0) is None


def test_parse_mix():
    assert parse_mix(DEFAULT_MIX).keys() == ENDPOINTS.keys()
    assert parse_mix("identify=2, detect") == {"identify": 2, "detect": 1}
    assert parse_mix("identify=2,detect=0") == {"identify": 2}
    for bad in ("verify=1", "identify=x", "identify=-1", "detect=0", ""):
        with pytest.raises(ValueError):
            parse_mix(bad)


def test_parse_duration():
    assert [parse_duration(t) for t in ("90", "90s", "2m", "1m30s", "1h", 12)] == [90, 90, 120, 90, 3600, 12]
    for bad in ("", "abc", "5x", "m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_capacity_step_needs_slos_and_throughput():
    stats = run_stats(stat("/v1/identify", requests=300, p99=300))
    assert judge(stats, "identify", 10, 30, 500, 0.1, 0.9) == (True, [], 10.0)
    passed, reasons, achieved = judge(stats, "identify", 12, 30, 500, 0.1, 0.9)  # 10/s of 12/s asked
    assert not passed and achieved == 10.0 and reasons == ["achieved 10.00/s < 90% of 12.00/s"]
    assert not judge(run_stats(stat("/v1/identify", 300, p99=800)), "identify", 10, 30, 500, 0.1, 0.9)[0]
    assert users_for(10, 500) == 10 and users_for(0.5, 500) == 2 and users_for(10, 1000) == 20
    assert step_seconds(1, 30, 100) == 100 and step_seconds(5, 30, 100) == 30 and step_seconds(3, 30, 100) == 34


def test_soak_capacity_of_the_mix_from_a_closed_loop():
    """4 users, 3 on verify (0.1 s a task: 30/s) and 1 on enrolment (0.5 s: 2/s, its enrol request counting the
    task): a user running the mix 3:1 back to back does 4 tasks in 0.8 s, so 4 users 20 tasks/s. Failed
    requests are not tasks done; an endpoint that completed nothing is an error, not an infinite capacity."""
    stats = run_stats(stat("/v1/verify (image)", 302, failures=2), stat("/v1/galleries/{g}/subjects", 21),
                      stat(".../subjects/{s}/faces", 21, failures=1), stat(".../subjects/{s}", 20, method="DELETE"))
    rate, by_endpoint = soak.mix_capacity(stats, {"verify_image": 3, "enrol": 1}, 4, 10.0)
    assert by_endpoint == {"verify_image": 30.0, "enrol": 2.0} and rate == pytest.approx(20.0)
    # the same completions from twice the users: each task took twice as long, the same capacity
    assert soak.mix_capacity(stats, {"verify_image": 3, "enrol": 1}, 8, 10.0)[0] == pytest.approx(20.0)
    with pytest.raises(RuntimeError, match="no identify task completed"):
        soak.mix_capacity(stats, {"verify_image": 3, "identify": 1}, 4, 10.0)


# ---- short real runs against the local stack -----------------------------------------------------

# find_spec, not import: importing Locust would let gevent monkey-patch this pytest process.
needs_locust = pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                  reason="locust not installed (the dev extras pin it)")


@pytest.fixture(scope="module")
def stack(triton) -> Iterator[LocalStack]:
    with LocalStack(triton.grpc_url) as local:
        yield local


def loadtest(stack: LocalStack, results: Path, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "loadtest.run", "--url", stack.url, "--stack", "none", "--results", str(results),
           "--gallery", "lt-test", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOADTEST_", "LOCUST_"))}
    env["LOADTEST_API_KEY"] = stack.api_key if key is None else key
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.triton
@needs_locust
def test_run_passes_and_writes_reports(stack: LocalStack, tmp_path: Path):
    # A light load and a generous p99: this checks the machinery on a shared 2-core machine, not capacity.
    result = loadtest(stack, tmp_path, "--duration", "12s", "--users", "5", "--subjects", "4", "--p99-ms", "10000",
                      "--bad-fraction", "0.3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS: reports in" in result.stdout and "POST /v1/identify" in result.stdout
    for name in ("report.html", "locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv",
                 "summary.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"]["passed"] and summary["seed"]["subjects"] == 4
    assert "api_key" not in summary["config"] and stack.api_key not in (tmp_path / "summary.json").read_text()
    stats = gates.read_stats(tmp_path / "locust_stats.csv")
    assert gates.aggregate(stats).failures == 0
    # deliberately bad requests were sent, got their expected 4xx, and counted as successes
    bad = [s for s in stats if "[bad:" in s.name]
    assert sum(s.requests for s in bad) > 0 and all(s.failures == 0 for s in bad)
    good = {s.name for s in stats if s.requests and "[bad:" not in s.name}
    assert {"/v1/verify (image)", "/v1/verify (subject)", "/v1/identify"} <= good


@pytest.mark.triton
@needs_locust
def test_run_fails_an_impossible_p99(stack: LocalStack, tmp_path: Path):
    result = loadtest(stack, tmp_path, "--duration", "5s", "--users", "2", "--shape", "spike", "--subjects", "3",
                      "--mix", "detect=1,identify=1", "--p99-ms", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL p99" in result.stdout and "FAIL: reports in" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not summary["verdict"]["passed"]
    assert all(r.startswith("p99") for r in summary["verdict"]["reasons"])  # latency only: no errors


@pytest.mark.triton
@needs_locust
def test_unexpected_status_codes_are_errors(stack: LocalStack, tmp_path: Path):
    # Every request answers 401 (a wrong key): none is expected, so the error gate fails even with a huge p99.
    result = loadtest(stack, tmp_path, "--duration", "4s", "--users", "2", "--subjects", "0", "--mix", "detect=1",
                      "--p99-ms", "60000", key="fs_not-a-valid-key")
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"]["reasons"][0].startswith("error rate 100.000 %")
    assert any("got 401 unauthorized" in error for _, _, error in summary["errors"])
