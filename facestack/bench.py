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
from tritonclient.utils import np_to_triton_dtype

from export.artifacts import REPO_ROOT, photo_bytes
from facestack.pipeline import detection
from facestack.pipeline.faces import EmbedderSpec, FacePipeline, Options
from facestack.pipeline.runtime import onnx_session
from facestack.triton import client as pipeline_client
from facestack.triton.launcher import PIPELINE_MODEL as PIPELINE
from facestack.triton.launcher import TritonServer

IMAGES = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")  # KYC-like portraits
# model -> (input shape, dtype): the detector takes uint8 pixels (cast in its graph), the embedders float32.
MODEL_INPUTS = {"face_detector": ((3, 640, 640), np.uint8), "face_embedder": ((3, 112, 112), np.float32),
                "face_embedder_dlib": ((3, 150, 150), np.float32)}
THREADS = 2


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2), "n": len(ordered)}


def timed(fn: Callable[[], object], seconds: float, min_runs: int = 20, warm_up: bool = True) -> list[float]:
    if warm_up:
        fn()
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


def in_process_pipeline(repository: Path) -> tuple[FacePipeline, dict, dict[str, list[float]]]:
    """The FacePipeline with in-process onnxruntime sessions instead of Triton models; the third value collects
    the milliseconds of each detector and embedder call (for the overhead breakdown)."""
    sessions = {m: onnx_session(repository / m / "1" / "model.onnx", THREADS) for m in MODEL_INPUTS}
    specs = []
    for name, model in (("sface", "face_embedder"), ("dlib", "face_embedder_dlib")):
        manifest = json.loads((repository / model / "1" / "manifest.json").read_text())
        specs.append(EmbedderSpec(name, model, np.asarray(manifest["alignment"]["template"]),
                                  manifest["alignment"]["size"][0], manifest["embedding"]["dim"]))
    by_name = {s.name: s.model for s in specs}
    calls: dict[str, list[float]] = {m: [] for m in MODEL_INPUTS}

    def detect(batch: np.ndarray) -> dict[str, np.ndarray]:
        names = list(detection.OUTPUT_NAMES)
        start = time.perf_counter()
        outputs = sessions["face_detector"].run(names, {"input": batch})
        calls["face_detector"].append((time.perf_counter() - start) * 1000)
        return dict(zip(names, outputs, strict=True))

    def embed(name: str, crops: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        vectors = sessions[by_name[name]].run(["embedding"], {"input": crops})[0]
        calls[by_name[name]].append((time.perf_counter() - start) * 1000)
        return vectors

    return FacePipeline(detect, embed, specs), sessions, calls


def triton_successes(client: grpcclient.InferenceServerClient) -> dict[str, tuple[int, int]]:
    """Per model: (successful requests, their total nanoseconds in Triton), from Triton's statistics."""
    stats = client.get_inference_statistics(as_json=True)["model_stats"]
    return {m["name"]: (int(m["inference_stats"]["success"].get("count", 0)),
                        int(m["inference_stats"]["success"].get("ns", 0))) for m in stats}


def breakdown(local_ms: list[float], local_calls: dict[str, list[float]], remote_ms: list[float],
              before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[dict]:
    """Where Triton's extra time per image goes at batch 1 (means, one face per image): each composing model's
    request time in Triton vs the same session.run in process; the BLS glue plus its calls' hops (the pipeline
    model's request time minus its composing models') vs the same glue in process; and what lies outside the
    pipeline model (client, gRPC, Triton's front end)."""
    def triton_ms_per_image(model: str) -> float:
        return (after[model][1] - before[model][1]) / max(images, 1) / 1e6

    images = after[PIPELINE][0] - before[PIPELINE][0]
    # Per image, whatever the number of calls per image (an image without a face makes no embedder call).
    local = {m: sum(v) / len(local_ms) for m, v in local_calls.items()}
    pipeline = triton_ms_per_image(PIPELINE)
    remote = {m: triton_ms_per_image(m) for m in local_calls}
    rows = [(m, local[m], remote[m]) for m in local_calls if local[m] or remote[m]]
    glue_local = statistics.fmean(local_ms) - sum(local.values())
    rows.append(("pipeline glue + BLS hops", glue_local, pipeline - sum(remote.values())))
    rows.append(("client + gRPC + front end", 0.0, statistics.fmean(remote_ms) - pipeline))
    rows.append(("total (mean)", statistics.fmean(local_ms), statistics.fmean(remote_ms)))
    return [{"part": part, "in_process_ms": round(a, 2), "triton_ms": round(b, 2), "extra_ms": round(b - a, 2)}
            for part, a, b in rows]


def model_input(model: str, batch: int, seed: int) -> np.ndarray:
    shape, dtype = MODEL_INPUTS[model]
    return (np.random.default_rng(seed).random((batch, *shape)) * 255).astype(dtype)


def run(seconds: float, out: Path) -> dict:
    repository = REPO_ROOT / "model_repository"
    images = [photo_bytes(n) for n in IMAGES]
    results: dict = {"models": {}, "pipeline": {}}

    pipeline, sessions, local_calls = in_process_pipeline(repository)
    counter = iter(range(10**9))

    def local_one() -> object:
        return pipeline.run([images[next(counter) % len(images)]], [Options()])

    local_one()
    for v in local_calls.values():
        v.clear()
    local_samples = timed(local_one, seconds, warm_up=False)
    local_calls_at_batch_1 = {m: list(v) for m, v in local_calls.items()}
    # The ceiling: the best of 1 or 2 callers (the glue is single-threaded Python, the cores are two) and of
    # batches of 1, 4, 8 images per call; the Triton side gets 1-8 concurrent clients.
    local_best, ceiling = 0.0, {}
    for callers in (1, 2):
        for batch in (1, 4, 8):
            chunk = [images[i % len(images)] for i in range(batch)]
            rate = throughput(lambda _i, c=chunk: pipeline.run(c, [Options()] * len(c)), callers, seconds) * batch
            ceiling[f"{callers}x{batch}"] = round(rate, 1)
            local_best = max(local_best, rate)
    results["pipeline"]["in_process"] = {**_percentiles(local_samples), "throughput_ips": round(local_best, 1),
                                         "throughput_by_callers_x_batch": ceiling}

    for model in MODEL_INPUTS:
        session, x1 = sessions[model], model_input(model, 1, 0)
        results["models"][model] = {"in_process": _percentiles(timed(lambda s=session, x=x1: s.run(None, {"input": x}),
                                                                     seconds / 2))}
        best = 0.0
        for batch in (1, 8, 16):
            xb = model_input(model, batch, 1)
            best = max(best, throughput(lambda _i, s=session, x=xb: s.run(None, {"input": x}), 1, seconds / 2) * batch)
        results["models"][model]["in_process"]["throughput_ips"] = round(best, 1)

    with TritonServer() as server:
        clients = [grpcclient.InferenceServerClient(server.grpc_url) for _ in range(16)]

        def triton_one(i: int = 0) -> object:
            return pipeline_client.infer(clients[i], images[next(counter) % len(images)])

        triton_one()
        before = triton_successes(clients[0])
        remote_samples = timed(triton_one, seconds, warm_up=False)
        after = triton_successes(clients[0])
        best, by_conc = 0.0, {}
        for concurrency in (1, 2, 4, 8):
            by_conc[concurrency] = round(throughput(triton_one, concurrency, seconds), 1)
            best = max(best, by_conc[concurrency])
        results["pipeline"]["triton"] = {**_percentiles(remote_samples), "throughput_ips": best,
                                         "throughput_by_concurrency": by_conc}
        results["pipeline"]["breakdown"] = breakdown(local_samples, local_calls_at_batch_1, remote_samples,
                                                     before, after)

        for model in MODEL_INPUTS:
            def model_call(i: int, batch: int, m: str = model) -> object:
                x = model_input(m, batch, i)
                tensor = grpcclient.InferInput("input", list(x.shape), np_to_triton_dtype(x.dtype))
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
                       "load_average_after": [round(v, 2) for v in os.getloadavg()],
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
    print(f"\n{'where an image spends its time (batch 1)':<30}{'in-process':>12}{'Triton':>10}{'extra':>9}")
    for row in results["pipeline"]["breakdown"]:
        print(f"{row['part']:<30}{row['in_process_ms']:>12.2f}{row['triton_ms']:>10.2f}{row['extra_ms']:>9.2f}")
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
