"""Gateway benchmark (not a test): verify and identify through HTTP against the real Triton and Milvus Lite.

    python -m benchmarks.gateway                       # everything, ~5 minutes on 2 cores
    python -m benchmarks.gateway --seconds 10 --sizes 1000 10000 --out /tmp/bench.json

Measures, each level for --seconds after a warm-up:
1. Triton's own face_pipeline throughput and latency (direct gRPC, one image per call): the ceiling.
2. POST /v1/verify (two images) and /v1/identify (one image, 1k-template gallery) at concurrency 1, 4, 16:
   latency p50/p99, throughput, and the gateway overhead = end-to-end latency minus Triton's time (the
   `triton` entry of the Server-Timing header: wall time with a face_pipeline call in flight).
3. /v1/identify latency against galleries of 1k, 10k and 100k templates (synthetic unit vectors plus the
   probe's real enrolment), each in a fresh Milvus Lite file, at concurrency 1.

The gateway runs as its own process (`python -m uvicorn gateway.app:app`, as in production); the load
generator (httpx, asyncio) shares the machine. Results: a table on stdout and JSON (--out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc.aio as grpcaio

from facestack.artifacts import photo_bytes
from facestack.settings import REPO_ROOT
from facestack.triton.contract import MODEL, build_request, parse_result
from facestack.triton.launcher import TritonServer
from gateway.auth import new_key
from gateway.metrics import Metrics
from gateway.store import Store, template_collection
from localstack.gateway import GatewayProcess

KEY = new_key()  # FACESTACK_API_KEY must be strong (gateway.auth.check_env_key)
_TRITON_DUR = re.compile(r"triton;dur=([0-9.]+)")
_TOTAL_DUR = re.compile(r"total;dur=([0-9.]+)")
_QUEUE_DUR = re.compile(r"queue;dur=([0-9.]+)")


@dataclass
class Level:
    name: str
    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    images_per_request: int = 1
    latency_ms: list[float] = field(default_factory=list, repr=False)
    overhead_ms: list[float] = field(default_factory=list, repr=False)  # client end-to-end - triton
    server_overhead_ms: list[float] = field(default_factory=list, repr=False)  # gateway total - triton
    queue_ms: list[float] = field(default_factory=list, repr=False)  # waiting for a Triton slot (bulkhead)
    gallery_size: int | None = None

    def summary(self) -> dict:
        def pct(values: list[float], q: float) -> float | None:
            return round(float(np.percentile(values, q)), 2) if values else None

        return {"name": self.name, "concurrency": self.concurrency, "gallery_size": self.gallery_size,
                "requests": self.requests, "errors": self.errors,
                "throughput_rps": round(self.requests / self.seconds, 2) if self.seconds else 0.0,
                "images_per_s": round(self.requests * self.images_per_request / self.seconds, 2) if self.seconds else 0,
                "p50_ms": pct(self.latency_ms, 50), "p99_ms": pct(self.latency_ms, 99),
                "overhead_p50_ms": pct(self.overhead_ms, 50), "overhead_p99_ms": pct(self.overhead_ms, 99),
                "server_overhead_p50_ms": pct(self.server_overhead_ms, 50),
                "queue_p50_ms": pct(self.queue_ms, 50)}


async def drive(level: Level, call, seconds: float, warmup: float) -> Level:
    """`level.concurrency` workers call `call()` back to back; only calls started after the warm-up count."""
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    async def worker() -> None:
        while (now := time.perf_counter()) < stop_at:
            try:
                timings = await call()
                ok = True
            except Exception:
                timings, ok = None, False
            elapsed = (time.perf_counter() - now) * 1000
            if now < measure_from:
                continue
            if not ok:
                level.errors += 1
                continue
            level.requests += 1
            level.latency_ms.append(elapsed)
            if timings:
                triton_ms, total_ms, queue_ms = timings
                level.overhead_ms.append(elapsed - triton_ms)
                level.server_overhead_ms.append(total_ms - triton_ms)
                level.queue_ms.append(queue_ms)

    await asyncio.gather(*(worker() for _ in range(level.concurrency)))
    level.seconds = seconds
    return level


def server_timing(response: httpx.Response) -> tuple[float, float, float]:
    """(triton, total, queue) milliseconds from the gateway's Server-Timing header."""
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
    header = response.headers.get("server-timing", "")
    queue = _QUEUE_DUR.search(header)
    return (float(_TRITON_DUR.search(header).group(1)), float(_TOTAL_DUR.search(header).group(1)),
            float(queue.group(1)) if queue else 0.0)


async def triton_levels(url: str, image: bytes, levels: list[int], seconds: float, warmup: float) -> list[Level]:
    results = []
    async with grpcaio.InferenceServerClient(url) as client:
        for concurrency in levels:
            async def call() -> None:
                inputs, outputs = build_request(grpcaio, image)
                parse_result(await client.infer(MODEL, inputs, outputs=outputs))

            results.append(await drive(Level("triton face_pipeline (direct)", concurrency), call, seconds, warmup))
    return results


async def http_levels(url: str, name: str, levels: list[int], seconds: float, warmup: float, *,
                      files: dict, data: dict | None = None, images: int = 1,
                      gallery_size: int | None = None) -> list[Level]:
    results = []
    limits = httpx.Limits(max_connections=max(levels) + 4, max_keepalive_connections=max(levels) + 4)
    # Encoded once: the load generator's multipart encoding is not the gateway's cost.
    template = httpx.Request("POST", f"{url}{name}", files=files, data=data)
    body, content_type = template.read(), template.headers["content-type"]
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": KEY}, timeout=120, limits=limits) as client:
        for concurrency in levels:
            async def call() -> tuple[float, float, float]:
                return server_timing(await client.post(name, content=body, headers={"Content-Type": content_type}))

            level = Level(f"POST {name}", concurrency, images_per_request=images, gallery_size=gallery_size)
            results.append(await drive(level, call, seconds, warmup))
    return results


def embed(triton_url: str, image: bytes) -> tuple[np.ndarray, str, str]:
    import tritonclient.grpc as grpcclient

    from facestack.triton.contract import infer

    with grpcclient.InferenceServerClient(triton_url) as client:
        result = infer(client, image)
    model, _, version = result.embedder_model.partition(":")
    return result.embeddings[0], model, version


def fill_gallery(data_dir: Path, size: int, template: np.ndarray, model: str, version: str) -> float:
    """A gallery of `size` templates: the probe's real subject plus random unit vectors (one per subject)."""
    started = time.perf_counter()

    async def run() -> None:
        store = Store(str(data_dir / "milvus.db"), timeout=60, workers=2, metrics=Metrics(), retry_after=1)
        try:
            await store.create_gallery("default", "bench", "sface", {})
            await store.create_subject("default", "bench", "obama", None, {})
            await store.add_templates("default", "bench", "obama", model, version, template[None], 32)
            rng = np.random.default_rng(0)
            batch = 5000
            for offset in range(0, size - 1, batch):
                n = min(batch, size - 1 - offset)
                vectors = rng.standard_normal((n, template.shape[0])).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                rows = [{"face_id": f"syn{offset + i:07d}", "tenant": "default", "gallery": "bench",
                         "subject": f"synthetic-{offset + i}", "created": 0, "model": f"{model}:{version}",
                         "vector": v.tolist()} for i, v in enumerate(vectors)]
                await asyncio.to_thread(store.bulk_insert_sync, rows, model, version)
        finally:
            store.close()

    asyncio.run(run())
    assert template_collection(model, version)
    return time.perf_counter() - started


def print_table(levels: list[dict]) -> None:
    head = (f"{'measurement':34} {'conc':>4} {'gallery':>8} {'n':>5} {'err':>3} {'req/s':>7} {'img/s':>7} "
            f"{'p50 ms':>8} {'p99 ms':>8} {'ovh p50':>8} {'ovh p99':>8} {'srv ovh':>8} {'queue':>7}")
    print(head)
    print("-" * len(head))
    for r in levels:
        def f(value) -> str:
            return "-" if value is None else f"{value}"

        print(f"{r['name']:34} {r['concurrency']:>4} {f(r['gallery_size']):>8} {r['requests']:>5} {r['errors']:>3} "
              f"{r['throughput_rps']:>7} {r['images_per_s']:>7} {f(r['p50_ms']):>8} {f(r['p99_ms']):>8} "
              f"{f(r['overhead_p50_ms']):>8} {f(r['overhead_p99_ms']):>8} {f(r['server_overhead_p50_ms']):>8} "
              f"{f(r['queue_p50_ms']):>7}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000], help="gallery sizes")
    parser.add_argument("--triton-url", help="use a running Triton (gRPC host:port) instead of starting one")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "gateway.json")
    args = parser.parse_args(argv)

    probe, reference = photo_bytes("obama2.jpg"), photo_bytes("obama.jpg")
    triton = None if args.triton_url else TritonServer().start()
    triton_url = args.triton_url or triton.grpc_url
    work = Path(tempfile.mkdtemp(prefix="facestack-bench-"))
    results: list[dict] = []
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "settings": vars(args) | {"out": str(args.out)}, "levels": results}
    try:
        template, model, version = embed(triton_url, reference)
        print(f"==> Triton's own pipeline ({args.seconds:g} s per level)", flush=True)
        for level in asyncio.run(triton_levels(triton_url, probe, sorted({*args.concurrency, 8}), args.seconds,
                                               args.warmup)):
            results.append(level.summary())

        print("==> gateway: verify and identify (gallery of 1,000 templates)", flush=True)
        data_dir = work / "main"
        data_dir.mkdir()
        fill_gallery(data_dir, 1000, template, model, version)
        gateway = GatewayProcess(data_dir, triton_url, api_key=KEY).start(300, ready=True)
        try:
            verify = asyncio.run(http_levels(gateway.url, "/v1/verify", args.concurrency, args.seconds, args.warmup,
                                             files={"probe": probe, "reference": reference}, images=2))
            identify = asyncio.run(http_levels(gateway.url, "/v1/identify", args.concurrency, args.seconds,
                                               args.warmup, files={"probe": probe}, data={"gallery": "bench"},
                                               gallery_size=1000))
        finally:
            gateway.stop()
        results += [level.summary() for level in verify + identify]

        for size in args.sizes:
            print(f"==> identify against {size:,} templates", flush=True)
            data_dir = work / f"gallery-{size}"
            data_dir.mkdir()
            fill_s = fill_gallery(data_dir, size, template, model, version)
            started = time.perf_counter()
            gateway = GatewayProcess(data_dir, triton_url, api_key=KEY).start(300, ready=True)
            ready_s = time.perf_counter() - started
            try:
                (level,) = asyncio.run(http_levels(gateway.url, "/v1/identify", [1], args.seconds, args.warmup,
                                                   files={"probe": probe}, data={"gallery": "bench"},
                                                   gallery_size=size))
            finally:
                gateway.stop()
            results.append(level.summary() | {"fill_s": round(fill_s, 1), "gateway_ready_s": round(ready_s, 1)})
    finally:
        if triton is not None:
            triton.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print_table(results)
    direct = max(r["images_per_s"] for r in results if r["name"].startswith("triton"))
    verify_peak = max(r["images_per_s"] for r in results if r["name"] == "POST /v1/verify")
    verify_c1 = next(r for r in results if r["name"] == "POST /v1/verify" and r["concurrency"] == 1)
    report["bars"] = {
        "gateway_overhead_p50_ms_verify_c1": verify_c1["overhead_p50_ms"],
        "verify_images_per_s_peak": verify_peak, "triton_images_per_s_peak": direct,
        "verify_throughput_vs_triton": round(verify_peak / direct, 3) if direct else None,
    }
    print(f"\nverify throughput through the gateway: {verify_peak} images/s = "
          f"{report['bars']['verify_throughput_vs_triton']:.1%} of Triton's own {direct} images/s")
    print(f"gateway overhead (verify, concurrency 1): p50 {verify_c1['overhead_p50_ms']} ms end to end, "
          f"{verify_c1['server_overhead_p50_ms']} ms inside the gateway")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
