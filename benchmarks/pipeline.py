"""Pipeline benchmark (`make bench`): Triton vs the in-process ceiling, verify end to end, and the peer library.

    python -m benchmarks.pipeline [--seconds 5] [--lfw ../shared/datasets/lfw-view1] [--out docs/bench/pipeline.json]

Side by side in one run, on the same photos (LFW-size 250 x 250 photos from View 1 DevTest, and a 12 MP
photo made from a registry portrait):
1. the ceiling: the very same FacePipeline code with in-process onnxruntime sessions (best of 1-2 calling
   threads x 1-8 images per call), and the model compute alone at the sizes the pipeline chooses;
2. Triton's face_pipeline, CPU config (models in process) and composed config (BLS calls to the model
   processes): p50 at one client and the best throughput of 1-8 clients;
3. POST /v1/verify through the gateway (two LFW photos) at concurrency 1 vs the in-process model compute
   of the same two photos;
4. face_recognition 1.3.0 on one core (`python -m benchmarks.peer`, needs `make peer`).
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import tritonclient.grpc as grpcclient

from facestack.artifacts import photo_bytes
from facestack.pipeline.faces import FacePipeline, Options
from facestack.pipeline.image import decode_reduced
from facestack.pipeline.runtime import InProcessModels, embedder_specs
from facestack.settings import REPO_ROOT
from facestack.triton import contract as pipeline_client
from facestack.triton.launcher import TritonServer
from facestack.triton.model_config import pipeline_parameters

THREADS = 2  # onnxruntime threads per session: the ceiling uses both cores in one process
LFW_DEFAULT = REPO_ROOT.parent / "shared" / "datasets" / "lfw-view1"
LFW_PHOTOS = 48  # distinct DevTest photos in the LFW-size set


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2), "n": len(ordered)}


def timed(fn: Callable[[int], object], seconds: float, min_runs: int = 20) -> list[float]:
    """Milliseconds of fn(call index), called back to back for `seconds` (after one warm-up call)."""
    fn(0)
    samples, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < min_runs:
        start = time.perf_counter()
        fn(len(samples))
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group (a Triton server and its stubs)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:  # fields from the state on: state, ppid, pgrp, ..., utime (11), stime (12)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Images per CPU-second, summed over measurements: unlike images per second, it stays meaningful when
    other jobs share the cores (the VM is shared). `clock` reads the CPU seconds of what is measured."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock, self.images, self.cpu_s = clock, 0, 0.0

    def per_cpu_second(self) -> float:
        return round(self.images / self.cpu_s, 1) if self.cpu_s else 0.0


def throughput(fn: Callable[[int, int], object], concurrency: int, seconds: float, per_call: int = 1,
               meter: CpuMeter | None = None) -> float:
    """Calls per second with `concurrency` threads each calling fn(thread, call index) in a loop; `meter` (if
    given) adds the images (per_call per call) and the CPU seconds they took."""
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> int:
        n = 0
        while time.perf_counter() < deadline:
            fn(i, n)
            n += 1
        return n

    start, cpu = time.perf_counter(), meter.clock() if meter else 0.0
    with ThreadPoolExecutor(concurrency) as pool:
        total = sum(pool.map(worker, range(concurrency)))
    if meter:
        meter.images += total * per_call
        meter.cpu_s += meter.clock() - cpu
    return total / (time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------ photos


def lfw_photos(root: Path) -> tuple[list[Path], tuple[Path, Path]]:
    """LFW_PHOTOS distinct DevTest photos, and the first genuine DevTest pair (for verify)."""
    from facestack.accuracy.dataset import LfwFolder

    folder = LfwFolder.open(root)
    assert folder.dev_test is not None, f"{root} has no pairsDevTest.txt"
    refs = folder.dev_test.images()
    step = max(1, len(refs) // LFW_PHOTOS)
    pair = next(p for p in folder.dev_test.pairs if p.same)
    return [folder.path(r) for r in refs[::step][:LFW_PHOTOS]], (folder.path(pair.first), folder.path(pair.second))


def twelve_megapixel(name: str = "obama.jpg") -> bytes:
    """A 3024 x 4032 (12.2 MP) JPEG at quality 92 from a registry portrait, with mild sensor-like noise so it
    encodes to a phone photo's size (a plain upscale compresses far better than a real photo)."""
    image = cv2.imdecode(np.frombuffer(photo_bytes(name), np.uint8), cv2.IMREAD_COLOR)
    big = cv2.resize(image, (3024, 4032), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    big += np.random.default_rng(0).normal(0, 4, big.shape).astype(np.int16)
    ok, data = cv2.imencode(".jpg", np.clip(big, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return data.tobytes()


# ---------------------------------------------------------------------------------------------- in process


class TimedModels(InProcessModels):
    """InProcessModels that add up the milliseconds spent in session.run (the model compute)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model_ms = 0.0

    def detect(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = super().detect(batch)
        self.model_ms += (time.perf_counter() - start) * 1000
        return out

    def embed(self, embedder: str, crops: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = super().embed(embedder, crops)
        self.model_ms += (time.perf_counter() - start) * 1000
        return out


def in_process(repository: Path, decode_min_long_side: int | None = None) -> tuple[FacePipeline, TimedModels]:
    """The served config's pipeline (optionally with another decode_min_long_side) on in-process sessions."""
    served = pipeline_parameters(repository)
    if decode_min_long_side is not None:
        served = replace(served, decode_min_long_side=decode_min_long_side)
    specs, _ = embedder_specs(repository, served.embedders)
    models = TimedModels(repository, specs, THREADS, served.detector_model)
    return FacePipeline(models.detect, models.embed, specs, served), models


def ceiling(pipeline: FacePipeline, photos: list[bytes], seconds: float) -> dict:
    """p50 of one photo per call, and the best images/s of 1-2 threads x 1-8 photos per call."""
    samples = timed(lambda n: pipeline.run([photos[n % len(photos)]], [Options()]), seconds)
    rates, meter = {}, CpuMeter(time.process_time)  # this process: the pipeline and its onnxruntime threads
    for callers in (1, 2):
        for batch in (1, 2, 4, 8):
            def call(i: int, n: int, b: int = batch) -> object:
                chunk = [photos[(i * 7 + n * b + k) % len(photos)] for k in range(b)]
                return pipeline.run(chunk, [Options()] * b)
            rates[f"{callers}x{batch}"] = round(throughput(call, callers, seconds, batch, meter) * batch, 1)
    return {**percentiles(samples), "throughput_ips": max(rates.values()), "by_callers_x_batch": rates,
            "images_per_cpu_s": meter.per_cpu_second()}


def model_compute_ms(pipeline: FacePipeline, models: TimedModels, photos: list[bytes], runs: int = 40) -> float:
    """Median milliseconds of session.run (detector + embedder) when the pipeline processes `photos` in one call."""
    samples = []
    pipeline.run(photos, [Options()] * len(photos))
    for _ in range(runs):
        models.model_ms = 0.0
        pipeline.run(photos, [Options()] * len(photos))
        samples.append(models.model_ms)
    return round(statistics.median(samples), 2)


def decode_ms(data: bytes, min_long_side: int, runs: int = 10) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        decode_reduced(data, pipeline_parameters().max_pixels, min_long_side=min_long_side)
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 2)


# ---------------------------------------------------------------------------------------------- Triton


def triton(server: TritonServer, photos: list[bytes], seconds: float, embedder: str = "sface") -> dict:
    """p50 at one client, best images/s of 1-8 clients, and images per CPU-second of the server's processes
    (tritonserver and its python stubs; the benchmark's own gRPC clients are not counted)."""
    clients = [grpcclient.InferenceServerClient(server.grpc_url) for _ in range(8)]
    assert server.pid is not None
    meter = CpuMeter(lambda pgid=server.pid: group_cpu_seconds(pgid))
    try:
        def call(i: int, n: int) -> object:
            return pipeline_client.infer(clients[i], photos[(i * 7 + n) % len(photos)], embedder=embedder)

        samples = timed(lambda n: call(0, n), seconds)
        rates = {c: round(throughput(call, c, seconds, 1, meter), 1) for c in (1, 2, 4, 8)}
    finally:
        for c in clients:
            c.close()
    return {**percentiles(samples), "throughput_ips": max(rates.values()), "by_concurrency": rates,
            "images_per_cpu_s": meter.per_cpu_second()}


def pipeline_stats(url: str) -> tuple[int, int, int]:
    """face_pipeline's (requests, executions, summed request nanoseconds) from Triton's statistics."""
    with grpcclient.InferenceServerClient(url) as c:
        stats = c.get_inference_statistics(pipeline_client.MODEL, as_json=True)["model_stats"][0]
    success = stats["inference_stats"]["success"]
    return int(success.get("count", 0)), int(stats.get("execution_count", 0)), int(success.get("ns", 0))


def verify_end_to_end(triton_url: str, pair: tuple[bytes, bytes], seconds: float, pipeline: FacePipeline,
                      models: TimedModels) -> dict:
    """POST /v1/verify (probe + reference) through the gateway process at concurrency 1, alternating call by
    call with the in-process model compute of the same two photos (`pipeline.run` of the pair, only the
    session.run time counted), so both sides see the same load on a shared machine. Also whether verify's two
    face_pipeline calls overlap: Triton's summed request time per verify vs the gateway's wall time with a
    call in flight (Server-Timing), and how many executions the two requests took."""
    from benchmarks.gateway import KEY, server_timing
    from localstack.gateway import GatewayProcess

    files = {"probe": ("probe.jpg", pair[0], "image/jpeg"), "reference": ("reference.jpg", pair[1], "image/jpeg")}
    latency, triton_wall, compute = [], [], []
    with tempfile.TemporaryDirectory(prefix="facestack-bench-") as data_dir:
        gateway = GatewayProcess(Path(data_dir), triton_url, api_key=KEY).start(300, ready=True)
        try:
            with gateway.client(KEY) as http:
                for _ in range(3):  # warm-up
                    server_timing(http.post("/v1/verify", files=files))
                    pipeline.run(list(pair), [Options()] * 2)
                before = pipeline_stats(triton_url)
                deadline = time.perf_counter() + seconds
                while time.perf_counter() < deadline or len(latency) < 20:
                    models.model_ms = 0.0
                    pipeline.run(list(pair), [Options()] * 2)
                    compute.append(models.model_ms)
                    start = time.perf_counter()
                    triton_ms, _total, _queue = server_timing(http.post("/v1/verify", files=files))
                    latency.append((time.perf_counter() - start) * 1000)
                    triton_wall.append(triton_ms)
                after = pipeline_stats(triton_url)
        finally:
            gateway.stop()
    requests, executions, ns = (b - a for a, b in zip(before, after, strict=True))
    return {**percentiles(latency), "model_compute_p50_ms": round(statistics.median(compute), 2),
            "p50_over_model_compute": round(statistics.median(latency) / statistics.median(compute), 2),
            "gateway_overhead_p50_ms": round(statistics.median(np.subtract(latency, triton_wall)), 2),
            "triton_wall_mean_ms": round(statistics.fmean(triton_wall), 2),
            "triton_request_ms_per_verify": round(ns / 1e6 / max(requests / 2, 1), 2),
            "images_per_execution": round(requests / max(executions, 1), 2)}


def peer(paths: list[Path], seconds: float) -> dict:
    """face_recognition 1.3.0 on one core, in its own process; {"skipped": why} when not installed."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.peer", "--seconds", str(seconds), *map(str, paths)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode:
        return {"skipped": (proc.stderr.strip().splitlines() or ["failed"])[-1] + " (run `make peer`)"}
    return json.loads(proc.stdout)


# ---------------------------------------------------------------------------------------------- run


def run(seconds: float, lfw: Path, out: Path, with_peer: bool = True) -> dict:
    repository = REPO_ROOT / "model_repository"
    lfw_paths, pair_paths = lfw_photos(lfw)
    sets = {"lfw": [p.read_bytes() for p in lfw_paths], "12mp": [twelve_megapixel()]}
    pair = (pair_paths[0].read_bytes(), pair_paths[1].read_bytes())
    results: dict = {"photos": {"lfw": f"{len(lfw_paths)} DevTest photos, 250x250",
                                "12mp": f"3024x4032 JPEG from obama.jpg, {len(sets['12mp'][0]) / 1e6:.1f} MB",
                                "verify_pair": [p.name for p in pair_paths]}}

    print("==> in process (the ceiling)", flush=True)
    pipeline, models = in_process(repository)
    results["in_process"] = {name: ceiling(pipeline, photos, seconds) for name, photos in sets.items()}
    results["model_compute_ms"] = {"lfw_one_photo": model_compute_ms(pipeline, models, sets["lfw"][:1]),
                                   "verify_pair": model_compute_ms(pipeline, models, list(pair))}
    full, _ = in_process(repository, decode_min_long_side=0)
    big = sets["12mp"][0]
    results["12mp_reduced_decoding"] = {
        "decode_ms": {"full": decode_ms(big, 0), "reduced": decode_ms(big, pipeline.decode_min_long_side)},
        "pipeline_p50_ms": {"full": percentiles(timed(lambda _n: full.run([big], [Options()]), seconds))["p50_ms"],
                            "reduced": results["in_process"]["12mp"]["p50_ms"]}}

    for config in ("", "composed"):
        label = config or "in_process_models"
        print(f"==> Triton, face_pipeline config {label}", flush=True)
        with TritonServer(config_name=config) as server:
            entry = {name: triton(server, photos, seconds) for name, photos in sets.items()}
            if not config:
                entry["lfw_dlib"] = triton(server, sets["lfw"], seconds, embedder="dlib")
                print("==> verify through the gateway", flush=True)
                results["verify"] = verify_end_to_end(server.grpc_url, pair, seconds, pipeline, models)
            results[f"triton_{label}"] = entry

    if with_peer:
        print("==> face_recognition 1.3.0 on one core", flush=True)
        results["peer"] = peer(lfw_paths, seconds)

    results["bars"] = bars(results)
    results["meta"] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                       "machine": platform.processor() or platform.machine(), "onnxruntime_threads": THREADS,
                       "seconds_per_point": seconds, "load_average_after": [round(v, 2) for v in os.getloadavg()],
                       "command": f"python -m benchmarks.pipeline --seconds {seconds:g}"}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def bars(r: dict) -> dict:
    cpus = os.cpu_count() or 1
    t, c = r["triton_in_process_models"], r["in_process"]
    out = {f"throughput_ratio_{k}": round(t[k]["throughput_ips"] / c[k]["throughput_ips"], 3) for k in c}
    out |= {f"cpu_efficiency_ratio_{k}": round(t[k]["images_per_cpu_s"] / c[k]["images_per_cpu_s"], 3) for k in c}
    out["verify_p50_over_model_compute"] = r["verify"]["p50_over_model_compute"]
    peer = r.get("peer", {}).get("throughput", {})
    if peer:
        for embedder, key in (("sface", "lfw"), ("dlib", "lfw_dlib")):
            out[f"per_core_vs_peer_{embedder}"] = round(t[key]["throughput_ips"] / cpus / peer["images_per_s"], 2)
            out[f"per_cpu_s_vs_peer_{embedder}"] = round(t[key]["images_per_cpu_s"] / peer["images_per_cpu_s"], 2)
    return out


def print_table(r: dict) -> None:
    print(f"\n{'pipeline, images':<48}{'p50 ms':>9}{'p99 ms':>9}{'images/s':>10}{'per CPU-s':>11}")
    rows = [("in process (ceiling)", r["in_process"]), ("Triton, CPU config (models in process)",
                                                        r["triton_in_process_models"]),
            ("Triton, composed config (BLS hops)", r["triton_composed"])]
    for label, entry in rows:
        for name, e in entry.items():
            print(f"{label + ', ' + name:<48}{e['p50_ms']:>9.2f}{e['p99_ms']:>9.2f}{e['throughput_ips']:>10.1f}"
                  f"{e['images_per_cpu_s']:>11.1f}")
    v, m = r["verify"], r["model_compute_ms"]
    print(f"\nverify end to end, concurrency 1: p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms "
          f"(gateway overhead p50 {v['gateway_overhead_p50_ms']:.1f} ms); model compute of the pair in process, "
          f"call by call in between: p50 {v['model_compute_p50_ms']:.1f} ms ({v['p50_over_model_compute']:.2f} x); "
          f"earlier, alone: {m['verify_pair']:.1f} ms (one LFW photo {m['lfw_one_photo']:.1f} ms)")
    print(f"  its two face_pipeline calls: {v['triton_request_ms_per_verify']:.1f} ms of Triton request time in "
          f"{v['triton_wall_mean_ms']:.1f} ms of wall time (mean), "
          f"{v['images_per_execution']:.2f} images per execution")
    d = r["12mp_reduced_decoding"]
    print(f"12 MP photo: decode {d['decode_ms']['full']:.0f} -> {d['decode_ms']['reduced']:.0f} ms, pipeline p50 "
          f"{d['pipeline_p50_ms']['full']:.0f} -> {d['pipeline_p50_ms']['reduced']:.0f} ms (full -> reduced decoding)")
    p = r.get("peer", {})
    if "throughput" in p:
        print(f"face_recognition 1.3.0, one core: {p['throughput']['images_per_s']:.1f} images/s, "
              f"{p['throughput']['images_per_cpu_s']:.1f} per CPU-second")
    elif p:
        print(f"face_recognition: {p.get('skipped')}")
    print("\nbars:", json.dumps(r["bars"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per point")
    parser.add_argument("--lfw", type=Path, default=LFW_DEFAULT, help="LFW View 1 folder (pairsDevTest.txt)")
    parser.add_argument("--no-peer", action="store_true", help="skip face_recognition")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "bench" / "pipeline.json")
    args = parser.parse_args()
    if not (args.lfw / "pairsDevTest.txt").is_file():
        parser.error(f"no LFW View 1 at {args.lfw} (pairsDevTest.txt): pass --lfw DIR (make bench LFW=DIR)")
    print_table(run(args.seconds, args.lfw, args.out, with_peer=not args.no_peer))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
