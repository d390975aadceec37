"""`make bench-milvus`: identify at scale on the real Milvus 2.3.5 server (localstack/milvus_server.py).

One gallery grows to each size in `--sizes` (default 100k and 1M templates, one template per subject), with:
- real templates: SFace embeddings of LFW View 1 (../shared/datasets/lfw-view1, through the real Triton
  pipeline, cached in .cache/accuracy). The first probes/2 identities with two or more images enrol their
  first image; their second image is a mated probe. The first probes/2 identities with one image are
  non-mated probes (never enrolled);
- filler: synthetic identities drawn from a Gaussian fitted to the real templates (their mean and
  covariance), normalised, each its own subject: spread over the sphere as SFace templates are (off-centre,
  anisotropic), not uniformly. Real SFace templates are themselves nearly isotropic (participation ratio
  about 99 of 128 dimensions on 600 LFW templates), so the top 10 of a non-mated probe are near-ties in the
  tail of the impostor scores: the hardest case for an approximate index, and the realistic one.
Rows go in through Store.bulk_insert_sync (the store's collections, subject records and index), then the
server seals them (flush) and builds the index; searches are Store.search, the code identify runs (`--index`:
FLAT, the store's default, or HNSW with an ef sweep; Bounded consistency, tenant + gallery filter, orphan
check), at concurrency 1 and 8.
Recall@10: the 10 subjects found against exact cosine search (numpy over every vector), for every probe.
Memory: the server's resident set (its process group) after the index is loaded.

Prints a table and writes docs/bench/milvus.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from facestack.settings import REPO_ROOT
from gateway.metrics import Metrics
from gateway.store import INDEX_PARAMS, INDEXES, MIN_EF, Store, template_collection
from localstack.milvus_server import MilvusServer

EF_SWEEP = (64, 128, 256, 512)  # concurrency 1 at each; concurrency 8 at the store's own ef (MIN_EF)

TENANT, GALLERY, MODEL, VERSION = "bench", "bench", "face_embedder", "1"
BATCH = 10_000
TOP_K = 10
LFW = REPO_ROOT.parent / "shared" / "datasets" / "lfw-view1"


def lfw_embeddings(lfw: Path, pairs: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[np.ndarray]]:
    """(enrolled: identity -> template, mated probes: identity -> probe, non-mated probes): the first `pairs`
    identities with two or more images (first image enrolled, second the probe) and the first `pairs` with one."""
    from facestack.accuracy.dataset import LfwFolder, by_identity
    from facestack.accuracy.embed import embed_images

    folder = LfwFolder.open(lfw)
    identities = by_identity(folder.images())
    several = [refs[:2] for refs in identities.values() if len(refs) >= 2][:pairs]
    single = [refs[:1] for refs in identities.values() if len(refs) == 1][:pairs]
    faces, _ = embed_images([folder.path(r) for refs in several + single for r in refs], "sface")

    def vector(ref) -> np.ndarray | None:
        v = faces[folder.path(ref)].embedding("centre")
        return None if v is None else v / np.linalg.norm(v)

    enrolled, mated, non_mated = {}, {}, []
    for first, second in several:
        a, b = vector(first), vector(second)
        if a is not None and b is not None:
            enrolled[first.name], mated[first.name] = a, b
    non_mated = [v for (ref,) in single if (v := vector(ref)) is not None]
    return enrolled, mated, non_mated


def filler(rng: np.random.Generator, n: int, real: np.ndarray) -> np.ndarray:
    """Synthetic templates: a Gaussian fitted to the real ones, normalised (see the module docstring)."""
    out = rng.multivariate_normal(real.mean(axis=0), np.cov(real, rowvar=False), size=n).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def rss_bytes(pid: int) -> int:
    """Resident set of a process and its process group's members (the server is one process here)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ProcessLookupError):
            continue
    return total


def wait_indexed(store: Store, name: str, rows: int, timeout: float = 7200) -> float:
    """Flush (seal the segments), wait until the vector index covers every row, then release and load the
    collection so that every segment is searched through its HNSW index (until a query node swaps a segment's
    built index in, Milvus 2.3 searches it with its interim index, with far lower recall); returns the seconds."""
    started = time.perf_counter()
    client = store._connect()
    client.flush(name, timeout=600)
    while True:
        info = client.describe_index(name, "vector", timeout=60)
        if int(info.get("indexed_rows", 0)) >= rows and int(info.get("pending_index_rows", 0)) == 0:
            client.release_collection(name, timeout=600)
            client.load_collection(name, timeout=1800)
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"index not built within {timeout:.0f} s: {info}")
        time.sleep(2)


async def measure(store: Store, probes: np.ndarray, concurrency: int) -> tuple[list[float], list[list[str]]]:
    latencies: list[float] = [0.0] * len(probes)
    found: list[list[str]] = [[] for _ in probes]
    queue = list(range(len(probes)))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            started = time.perf_counter()
            hits = await store.search(TENANT, GALLERY, MODEL, VERSION, probes[i], TOP_K, 32)
            latencies[i] = (time.perf_counter() - started) * 1000
            found[i] = [h.subject for h in hits]

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, found


def exact_top(vectors: np.ndarray, subjects: list[str], probes: np.ndarray) -> list[list[str]]:
    out = []
    for start in range(0, len(probes), 64):
        scores = probes[start:start + 64] @ vectors.T
        top = np.argpartition(-scores, TOP_K, axis=1)[:, :TOP_K]
        for row, idx in zip(scores, top, strict=True):
            out.append([subjects[j] for j in idx[np.argsort(-row[idx])]])
    return out


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="gallery sizes (templates), comma-separated")
    parser.add_argument("--probes", type=int, default=600, help="probes per measurement (half mated)")
    parser.add_argument("--lfw", type=Path, default=LFW)
    parser.add_argument("--data-dir", type=Path, default=None, help="server data (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "bench" / "milvus.json")
    parser.add_argument("--index", choices=INDEXES, default="FLAT", help="template index (the store's default: FLAT)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rng = np.random.default_rng(0)

    print(f"==> LFW embeddings ({args.lfw})", flush=True)
    enrolled, mated, non_mated = lfw_embeddings(args.lfw, args.probes // 2)
    real_ids = sorted(enrolled)
    real = np.stack([enrolled[i] for i in real_ids]).astype(np.float32)
    mated_ids = sorted(mated)[: args.probes // 2]
    probes = np.stack([mated[i] for i in mated_ids] + non_mated[: args.probes - len(mated_ids)]).astype(np.float32)
    print(f"    {len(real)} enrolled identities, {len(mated_ids)} mated and {len(probes) - len(mated_ids)} "
          "non-mated probes", flush=True)

    data = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-milvus-"))
    results = []
    with MilvusServer(data / "server") as server:
        store = Store(server.uri, timeout=60, workers=8, metrics=Metrics(), retry_after=1, index=args.index)
        name = template_collection(MODEL, VERSION)
        vectors = np.zeros((0, real.shape[1]), np.float32)
        subjects: list[str] = []
        insert_s = 0.0
        try:
            asyncio.run(store.create_gallery(TENANT, GALLERY, "sface", {}))
            for size in sizes:
                print(f"==> filling to {size:,} templates", flush=True)
                add = real if not len(vectors) else np.zeros((0, real.shape[1]), np.float32)
                add_ids = real_ids if not len(vectors) else []
                more = filler(rng, size - len(vectors) - len(add), real)
                new = np.concatenate([add, more]).astype(np.float32)
                new_ids = list(add_ids) + [f"syn-{len(subjects) + len(add_ids) + i}" for i in range(len(more))]
                started = time.perf_counter()
                for start in range(0, len(new), BATCH):
                    rows = [{"face_id": f"f{len(subjects) + start + i:08d}", "tenant": TENANT, "gallery": GALLERY,
                             "subject": new_ids[start + i], "vector": v.tolist()}
                            for i, v in enumerate(new[start:start + BATCH])]
                    store.bulk_insert_sync(rows, MODEL, VERSION)
                insert_s += time.perf_counter() - started
                vectors = np.concatenate([vectors, new])
                subjects += new_ids
                rate = len(new) / (time.perf_counter() - started)
                print(f"    inserted {len(new):,} at {rate:,.0f} rows/s (templates + subject records); "
                      "building the index", flush=True)
                index_s = wait_indexed(store, name, len(vectors))
                print(f"    index built in {index_s:.0f} s", flush=True)
                store._written.clear()  # measure Bounded reads, as another replica would do them
                asyncio.run(measure(store, probes[:20], 1))  # warm-up
                exact = exact_top(vectors, subjects, probes)
                entry: dict = {"templates": len(vectors), "insert_rows_per_s": round(rate),
                               "index_build_s": round(index_s, 1), "server_rss_mb": round(rss_bytes(server.proc.pid)
                                                                                         / 2**20)}
                entry["runs"] = []
                sweep = EF_SWEEP if args.index == "HNSW" else (MIN_EF,)  # ef means nothing to FLAT
                for ef, concurrency in [(ef, 1) for ef in sweep] + [(MIN_EF, 8)]:
                    store.min_ef = ef
                    started = time.perf_counter()
                    lat, found = asyncio.run(measure(store, probes, concurrency))
                    wall = time.perf_counter() - started
                    recall = [len(set(f) & set(e)) / TOP_K for f, e in zip(found, exact, strict=True)]
                    m = len(mated_ids)
                    rank1 = np.mean([f[:1] == [i] for f, i in zip(found, mated_ids, strict=False)])
                    exact_rank1 = np.mean([e[:1] == [i] for e, i in zip(exact, mated_ids, strict=False)])
                    entry["runs"].append({"ef": ef if args.index == "HNSW" else None, "concurrency": concurrency,
                                          "p50_ms": pct(lat, 50),
                                          "p99_ms": pct(lat, 99), "searches_per_s": round(len(probes) / wall, 1),
                                          "recall_at_10": round(float(np.mean(recall)), 4),
                                          "recall_at_10_mated": round(float(np.mean(recall[:m])), 4),
                                          "recall_at_10_non_mated": round(float(np.mean(recall[m:])), 4),
                                          "mated_rank1": round(float(rank1), 4),
                                          "mated_rank1_exact": round(float(exact_rank1), 4),
                                          "loadavg_1m": round(os.getloadavg()[0], 2)})
                    print(json.dumps(entry["runs"][-1]), flush=True)
                store.min_ef = MIN_EF
                results.append(entry)
        finally:
            store.close()

    load = os.getloadavg()
    hnsw = args.index == "HNSW"
    report = {"command": "make bench-milvus", "server": "Milvus 2.3.5 standalone (PyPI milvus==2.3.5)",
              "index": {"type": args.index, "metric": "COSINE", **INDEX_PARAMS[args.index]},
              "search": {"store_ef": f"max({MIN_EF}, hits asked for, 2 * top_k at first)" if hnsw else None,
                         "ef_sweep": EF_SWEEP if hnsw else None,
                         "top_k": TOP_K, "consistency": "Bounded"},
              "probes": {"mated": len(mated_ids), "non_mated": len(probes) - len(mated_ids)},
              "real_templates": len(real), "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                       "loadavg_at_end": [round(x, 2) for x in load]},
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    head = f"{'templates':>10} {'insert/s':>9} {'index s':>8} {'RSS MB':>7} {'ef':>4} {'conc':>4} {'p50 ms':>7} " \
           f"{'p99 ms':>7} {'search/s':>8} {'recall@10':>9} {'mated':>6} {'non-m':>6} {'rank-1':>7} {'load':>5}"
    print(head)
    print("-" * len(head))
    for r in results:
        for m in r["runs"]:
            print(f"{r['templates']:>10,} {r['insert_rows_per_s']:>9,} {r['index_build_s']:>8} {r['server_rss_mb']:>7} "
                  f"{m['ef'] or '-':>4} {m['concurrency']:>4} {m['p50_ms']:>7} {m['p99_ms']:>7} "
                  f"{m['searches_per_s']:>8} "
                  f"{m['recall_at_10']:>9} {m['recall_at_10_mated']:>6} {m['recall_at_10_non_mated']:>6} "
                  f"{m['mated_rank1']:>7} {m['loadavg_1m']:>5}")
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
