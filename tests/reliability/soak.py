"""Soak run: the real stack under Locust at about 70 % of its measured capacity for a bounded time.

    .venv/bin/python -m tests.reliability.soak                 # 5 minutes (plus ~1 minute of setup)
    .venv/bin/python -m tests.reliability.soak --minutes 20 --fraction 0.7 --users 4

Starts its own Triton (CPU) and gateway process (`python -m uvicorn gateway.app:app`) on free 127.0.0.1
ports with a fresh data directory, seeds a gallery, measures capacity with a short closed-loop burst of the
same mix, then runs Locust (tests/reliability/soak_locustfile.py, as a subprocess) at `fraction` of that
capacity, sampling every few seconds: the gateway's RSS, open files and threads, Triton's process tree
(count, RSS) and open files. Gates: no failed request; gateway RSS growth under 10 % from the end of the
warm-up to the end of the run; open files back to their pre-load count; the same Triton processes at the
end; and after shutdown no process of the stack left and its ports free. Writes a JSON summary (default
benchmarks/results/reliability/soak-<UTC time>.json) and exits 0 when every gate passes, else 1.

Not part of `make test` (it runs for minutes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

from export.artifacts import photo_bytes
from facestack.triton.launcher import TritonServer
from tests.reliability.harness import REPO, GatewayProcess, alive, descendants, open_fds, rss_mb, write_keys

LOCUSTFILE = Path(__file__).resolve().parent / "soak_locustfile.py"
MIX = {"verify_image": 3, "verify_subject": 2, "identify": 3, "detect": 1, "enrol_and_erase": 1}


def seed(client: httpx.Client, gallery: str) -> None:
    assert client.post("/v1/galleries", json={"gallery_id": gallery}).status_code == 201
    for subject, photo in (("obama", "obama.jpg"), ("biden", "biden.jpg")):
        assert client.post(f"/v1/galleries/{gallery}/subjects", json={"subject_id": subject}).status_code == 201
        r = client.post(f"/v1/galleries/{gallery}/subjects/{subject}/faces", files={"image": photo_bytes(photo)})
        assert r.status_code == 201, r.text


def one_task(client: httpx.Client, name: str, gallery: str, images: dict[str, bytes]) -> bool:
    """The locustfile's tasks, for the closed-loop capacity probe."""
    if name == "verify_image":
        r = client.post("/v1/verify", files={"probe": images["probe"], "reference": images["reference"]})
    elif name == "verify_subject":
        r = client.post("/v1/verify", files={"probe": images["probe"]},
                        data={"gallery": gallery, "subject_id": "obama"})
    elif name == "identify":
        r = client.post("/v1/identify", files={"probe": images["probe"]}, data={"gallery": gallery})
    elif name == "detect":
        r = client.post("/v1/detect", files={"image": images["other"]})
    else:
        subject = f"probe-{os.urandom(3).hex()}"
        base = f"/v1/galleries/{gallery}/subjects"
        ok = client.post(base, json={"subject_id": subject}).status_code == 201
        ok = ok and client.post(f"{base}/{subject}/faces", files={"image": images["other"]}).status_code == 201
        return ok and client.delete(f"{base}/{subject}").status_code == 200
    return r.status_code == 200


def capacity(url: str, key: str, gallery: str, images: dict[str, bytes], seconds: float, workers: int) -> dict:
    """Closed loop, `workers` at once, the mix in proportion: completed tasks per second."""
    sequence = [name for name, weight in MIX.items() for _ in range(weight)]
    done, errors = [0], [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def worker(offset: int) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
            i = offset
            while time.monotonic() < end:
                ok = one_task(client, sequence[i % len(sequence)], gallery, images)
                i += 1
                with lock:
                    done[0] += ok
                    errors[0] += not ok

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(workers)))
    elapsed = time.monotonic() - started
    return {"tasks_per_s": done[0] / elapsed, "tasks": done[0], "errors": errors[0], "seconds": round(elapsed, 1),
            "workers": workers}


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


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def locust_stats(prefix: Path) -> dict:
    by_name = {r["Name"]: {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                           "p50_ms": float(r["50%"] or 0), "p99_ms": float(r["99%"] or 0),
                           "rps": float(r["Requests/s"])}
               for r in read_csv(Path(f"{prefix}_stats.csv"))}
    return {"endpoints": by_name, "failures": read_csv(Path(f"{prefix}_failures.csv"))[:20]}


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="Locust run time")
    parser.add_argument("--fraction", type=float, default=0.7, help="share of the measured capacity")
    parser.add_argument("--users", type=int, default=4, help="Locust users (the rate is split among them)")
    parser.add_argument("--probe-seconds", type=float, default=30.0, help="closed-loop capacity probe")
    parser.add_argument("--probe-workers", type=int, default=8)
    parser.add_argument("--warmup-fraction", type=float, default=0.2, help="RSS baseline taken after this share")
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--max-rss-growth", type=float, default=0.10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    started_at = datetime.now(UTC)
    work = Path(tempfile.mkdtemp(prefix="facestack-soak-"))
    plain = write_keys(work / "keys.json", {"soak": ("soak", ["admin"])})
    key = plain["soak"]
    images = {"probe": photo_bytes("obama2.jpg"), "reference": photo_bytes("obama.jpg"),
              "other": photo_bytes("biden.jpg")}
    for name, data in images.items():
        (work / f"{name}.jpg").write_bytes(data)
    print(f"==> soak: {args.minutes:g} min at {args.fraction:.0%} of capacity; work dir {work}", flush=True)

    triton = TritonServer().start()
    triton_pid = triton._process.pid  # the launcher keeps its Popen private
    gateway = GatewayProcess(work / "gateway", triton.grpc_url, work / "keys.json").start()
    gateway.wait_ready()
    ports = [gateway.port, triton.grpc_port, triton.http_port, triton.metrics_port]
    pids_before = {"triton": descendants(triton_pid) | {triton_pid}, "gateway": {gateway.pid}}
    result: dict = {"date": started_at.isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                    "args": {k: str(v) for k, v in vars(args).items()}}
    gates: dict[str, bool] = {}
    try:
        with gateway.client(key) as client:
            seed(client, "soak")
        print("==> capacity probe", flush=True)
        probe = capacity(gateway.url, key, "soak", images, args.probe_seconds, args.probe_workers)
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
        prefix = work / "locust"
        env = {**os.environ, "SOAK_API_KEY": key, "SOAK_GALLERY": "soak", "SOAK_RATE": str(rate / args.users),
               "SOAK_IMAGES": str(work)}
        seconds = int(args.minutes * 60)
        print(f"==> locust {seconds} s", flush=True)
        locust = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(args.users),
             "-r", str(args.users), "-t", f"{seconds}s", "--host", gateway.url, "--csv", str(prefix),
             "--only-summary", "--stop-timeout", "15", "--loglevel", "WARNING"],
            env=env, cwd=REPO, capture_output=True, text=True)
        sampler.stop.set()
        sampler.join()
        (work / "locust.out").write_text(locust.stdout + locust.stderr)
        time.sleep(6)
        after = {"gateway_fds": gateway.open_fds(), "triton_fds": open_fds(triton_pid)}
        stats = locust_stats(prefix)
        result["locust"] = stats
        result["samples"] = sampler.samples
        total = stats["endpoints"].get("Aggregated", {"requests": 0, "failures": -1})
        samples = sampler.samples
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
        result["processes"] = {"triton_start": samples[0]["triton_processes"],
                               "triton_end": tail[-1]["triton_processes"],
                               "gateway_children_max": max(s["gateway_children"] for s in samples),
                               "gateway_threads": [samples[0]["gateway_threads"], tail[-1]["gateway_threads"]]}
        gates["no failed request"] = total["failures"] == 0 and total["requests"] > 0
        gates["gateway RSS growth < 10 %"] = growth < args.max_rss_growth
        gates["gateway open files back to idle"] = after["gateway_fds"] <= idle["gateway_fds"] + 2
        gates["triton open files back to idle"] = after["triton_fds"] <= idle["triton_fds"] + 2
        gates["same Triton processes"] = samples[0]["triton_processes"] == tail[-1]["triton_processes"]
        gates["gateway spawned no processes"] = result["processes"]["gateway_children_max"] == 0
    finally:
        gateway.stop()
        triton.stop()
    time.sleep(1)
    left = [p for group in pids_before.values() for p in group if alive(p)]
    result["leftover_processes"] = left
    gates["no process left after shutdown"] = not left
    gates["ports free after shutdown"] = all(port_free(p) for p in ports)
    result["gates"] = gates
    result["passed"] = all(gates.values())
    out = args.out or REPO / "benchmarks" / "results" / "reliability" / f"soak-{started_at:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    print("\nendpoint                    requests  failures     rps   p50 ms   p99 ms")
    for name, row in result.get("locust", {}).get("endpoints", {}).items():
        print(f"{name:<26}{row['requests']:>10}{row['failures']:>10}{row['rps']:>8.2f}{row['p50_ms']:>9.0f}"
              f"{row['p99_ms']:>9.0f}")
    if "gateway_rss_mb" in result:
        rss = result["gateway_rss_mb"]
        print(f"\ngateway RSS MB: start {rss['start']}, after warm-up {rss['after_warmup']}, end {rss['end']}, "
              f"max {rss['max']} (growth {rss['growth_after_warmup']:+.1%}); fds {result['fds']}; "
              f"processes {result['processes']}")
    for gate, ok in gates.items():
        print(f"  {'PASS' if ok else 'FAIL'} {gate}")
    print(f"{'PASS' if result['passed'] else 'FAIL'}: {out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
