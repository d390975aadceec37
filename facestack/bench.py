"""Pipeline benchmark: each model and the whole pipeline through the real Triton vs in-process onnxruntime.

    python -m facestack.bench [--seconds 10] [--out docs/bench/pipeline.json]

In-process onnxruntime on the same cores, running the very same FacePipeline code, is the ceiling;
Triton's numbers are compared against it. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from export.artifacts import REPO_ROOT, photo_bytes
from facestack.pipeline import detection
from facestack.pipeline.faces import EmbedderSpec, FacePipeline, Options
from facestack.pipeline.runtime import onnx_session
from facestack.triton import client as pipeline_client
from facestack.triton.launcher import TritonServer

IMAGES = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")  # KYC-like portraits
MODEL_INPUTS = {"face_detector": (3, 640, 640), "face_embedder": (3, 112, 112), "face_embedder_dlib": (3, 150, 150)}
THREADS = 2


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2), "n": len(ordered)}


def timed(fn: Callable[[], object], seconds: float, min_runs: int = 20) -> list[float]:
    fn()  # warm-up
    samples, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < min_runs:
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def throughput(fn: Callable[[int], object], concurrency: int, seconds: float) -> float:
    """Calls per second with `concurrency` threads each calling fn(thread index) in a loop."""
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> int:
        n = 0
        while time.perf_counter() < deadline:
            fn(i)
            n += 1
        return n

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        total = sum(pool.map(worker, range(concurrency)))
    return total / (time.perf_counter() - start)


def in_process_pipeline(repository: Path) -> tuple[FacePipeline, dict]:
    """The FacePipeline with in-process onnxruntime sessions instead of Triton models."""
    sessions = {m: onnx_session(repository / m / "1" / "model.onnx", THREADS) for m in MODEL_INPUTS}
    specs = []
    for name, model in (("sface", "face_embedder"), ("dlib", "face_embedder_dlib")):
        manifest = json.loads((repository / model / "1" / "manifest.json").read_text())
        specs.append(EmbedderSpec(name, model, np.asarray(manifest["alignment"]["template"]),
                                  manifest["alignment"]["size"][0], manifest["embedding"]["dim"]))
    by_name = {s.name: s.model for s in specs}

    def detect(batch: np.ndarray) -> dict[str, np.ndarray]:
        names = list(detection.OUTPUT_NAMES)
        return dict(zip(names, sessions["face_detector"].run(names, {"input": batch}), strict=True))

    def embed(name: str, crops: np.ndarray) -> np.ndarray:
        return sessions[by_name[name]].run(["embedding"], {"input": crops})[0]

    return FacePipeline(detect, embed, specs), sessions


def run(seconds: float, out: Path) -> dict:
    repository = REPO_ROOT / "model_repository"
    images = [photo_bytes(n) for n in IMAGES]
    rng = np.random.default_rng(0)
    results: dict = {"models": {}, "pipeline": {}}

    pipeline, sessions = in_process_pipeline(repository)
    counter = iter(range(10**9))

    def local_one() -> object:
        return pipeline.run([images[next(counter) % len(images)]], [Options()])

    local = _percentiles(timed(local_one, seconds))
    local_best = 0.0
    for batch in (1, 4, 8):
        chunk = [images[i % len(images)] for i in range(batch)]
        calls = throughput(lambda _i, c=chunk: pipeline.run(c, [Options()] * len(c)), 1, seconds)
        local_best = max(local_best, calls * batch)
    results["pipeline"]["in_process"] = {**local, "throughput_ips": round(local_best, 1)}

    for model, shape in MODEL_INPUTS.items():
        x1 = (rng.random((1, *shape)) * 255).astype(np.float32)
        session = sessions[model]
        results["models"][model] = {"in_process": _percentiles(timed(lambda s=session, x=x1: s.run(None, {"input": x}),
                                                                     seconds / 2))}
        best = 0.0
        for batch in (1, 8, 16):
            xb = (rng.random((batch, *shape)) * 255).astype(np.float32)
            best = max(best, throughput(lambda _i, s=session, x=xb: s.run(None, {"input": x}), 1, seconds / 2) * batch)
        results["models"][model]["in_process"]["throughput_ips"] = round(best, 1)

    with TritonServer() as server:
        clients = [grpcclient.InferenceServerClient(server.grpc_url) for _ in range(16)]

        def triton_one(i: int = 0) -> object:
            return pipeline_client.infer(clients[i], images[next(counter) % len(images)])

        remote = _percentiles(timed(triton_one, seconds))
        best, by_conc = 0.0, {}
        for concurrency in (1, 2, 4, 8):
            by_conc[concurrency] = round(throughput(triton_one, concurrency, seconds), 1)
            best = max(best, by_conc[concurrency])
        results["pipeline"]["triton"] = {**remote, "throughput_ips": best, "throughput_by_concurrency": by_conc}

        for model, shape in MODEL_INPUTS.items():
            def model_call(i: int, batch: int, m: str = model, s: tuple = shape) -> object:
                x = (np.random.default_rng(i).random((batch, *s)) * 255).astype(np.float32)
                tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                return clients[i].infer(m, [tensor])

            entry = _percentiles(timed(lambda mc=model_call: mc(0, 1), seconds / 2))
            best = 0.0
            for batch in (1, 8, 16):
                best = max(best, throughput(lambda i, mc=model_call, b=batch: mc(i, b), 2, seconds / 2) * batch)
            results["models"][model]["triton"] = {**entry, "throughput_ips": round(best, 1)}
        for c in clients:
            c.close()

    pipe = results["pipeline"]
    pipe["throughput_ratio"] = round(pipe["triton"]["throughput_ips"] / pipe["in_process"]["throughput_ips"], 3)
    pipe["glue_overhead_p50_ms"] = round(pipe["triton"]["p50_ms"] - pipe["in_process"]["p50_ms"], 2)
    results["meta"] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                       "machine": platform.processor() or platform.machine(), "images": list(IMAGES),
                       "onnxruntime_threads": THREADS, "seconds_per_point": seconds,
                       "command": f"python -m facestack.bench --seconds {seconds:g}"}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def print_table(results: dict) -> None:
    print(f"{'what':<22}{'where':<12}{'p50 ms':>9}{'p99 ms':>9}{'items/s':>10}")
    rows = [("pipeline (image)", results["pipeline"])] + [(m, r) for m, r in results["models"].items()]
    for name, entry in rows:
        for where in ("in_process", "triton"):
            r = entry[where]
            print(f"{name:<22}{where:<12}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['throughput_ips']:>10.1f}")
    p = results["pipeline"]
    print(f"\npipeline throughput through Triton = {p['throughput_ratio']:.0%} of in-process; "
          f"glue overhead p50 = {p['glue_overhead_p50_ms']:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per point")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "bench" / "pipeline.json")
    args = parser.parse_args()
    print_table(run(args.seconds, args.out))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
