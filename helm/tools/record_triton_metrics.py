"""Record a local Triton's and gateway's /metrics through idle -> overload -> idle, for the autoscaling test.

    .venv/bin/python helm/tools/record_triton_metrics.py --rps 105 --capacity 35 --load 75 --idle 30 --tail 90 \\
        --out tests/helm/data/triton-overload.json

Starts the real tritonserver (facestack.triton.launcher) and a gateway process in front of it (the load test's
private stack), scrapes both /metrics every `--interval` seconds while `python -m loadtest.run` pushes `--rps`
verify requests a second for `--load` seconds, with `--idle` seconds before and `--tail` seconds after. Keeps
Triton's nv_inference_* counters and gauges per model (the summaries' quantiles are left out), the gateway's
Triton bulkhead gauges and shed counter, and the load average at each scrape.
tests/helm/test_autoscaling_recording.py feeds the recording to the chart's own KEDA / adapter queries.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from facestack.triton.launcher import TritonServer  # noqa: E402
from localstack.stack import LocalStack  # noqa: E402

KEEP = ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
        "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us", "nv_inference_pending_request_count",
        # the gateway's side of the face_pipeline calls: where the backlog waits once Triton is saturated
        "facestack_triton_waiting", "facestack_triton_inflight", "facestack_rejected")


def scrape(url: str) -> list[list]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total") if sample.name.removesuffix("_total") in KEEP else sample.name
            if name in KEEP:
                out.append([name, {k: v for k, v in sorted(sample.labels.items())}, sample.value])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rps", type=float, required=True, help="verify requests per second during the load")
    p.add_argument("--capacity", type=float, default=7.0,
                   help="the stack's measured verify capacity, req/s (docs/loadtest.md), recorded beside --rps")
    p.add_argument("--users", type=int, default=80)
    p.add_argument("--load", type=float, default=75.0, help="seconds of load")
    p.add_argument("--idle", type=float, default=30.0, help="seconds before the load")
    p.add_argument("--tail", type=float, default=90.0, help="seconds after the load")
    p.add_argument("--interval", type=float, default=5.0, help="scrape interval, seconds")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    scrapes: list[dict] = []
    marks: dict[str, float] = {}
    stop = threading.Event()
    # No per-key rate limit: the load test's one key would otherwise be shed before Triton's bulkhead is.
    with TritonServer() as triton, LocalStack(triton.grpc_url, gateway_rate_limit_rps=0) as gateway:
        t0 = time.monotonic()

        def scraper() -> None:
            while not stop.is_set():
                at = time.monotonic() - t0
                scrapes.append({"t": round(at, 2), "load_average": os.getloadavg()[0],
                                "samples": scrape(triton.metrics_url),
                                "gateway_samples": scrape(f"{gateway.url}/metrics")})
                stop.wait(max(0.0, args.interval - (time.monotonic() - t0 - at)))

        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        time.sleep(args.idle)
        with tempfile.TemporaryDirectory() as results:
            cmd = [sys.executable, "-m", "loadtest.run", "--url", gateway.url, "--api-key", gateway.api_key,
                   "--stack", "none", "--duration", f"{args.load:g}s", "--users", str(args.users),
                   "--rps", f"{args.rps:g}", "--mix", "verify_image=1", "--subjects", "0", "--bad-fraction", "0",
                   "--p99-ms", "1e9", "--max-error-rate", "100", "--results", results]
            marks["load_command_started"] = round(time.monotonic() - t0, 2)
            code = subprocess.run(cmd, cwd=REPO, check=False).returncode
            marks["load_command_ended"] = round(time.monotonic() - t0, 2)
            summary = json.loads((Path(results) / "summary.json").read_text()) if code in (0, 1) else {}
        time.sleep(args.tail)
        stop.set()
        thread.join()
    stats = {s["name"]: s for s in summary.get("stats", [])}
    record = {
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "helm/tools/record_triton_metrics.py", *(argv or sys.argv[1:])]),
        "cpus": os.cpu_count(), "interval_s": args.interval, "offered_rps": args.rps, "capacity_rps": args.capacity,
        "marks": marks, "loadtest_exit": code,
        "loadtest_seconds": summary.get("seconds"), "loadtest_stats": stats,
        "scrapes": scrapes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}: {len(scrapes)} scrapes; loadtest exit {code}; marks {marks}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
