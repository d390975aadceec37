"""Images through the real Triton `face_pipeline` (gRPC asyncio, a few requests in flight), with a cache.

Every face the pipeline finds is kept (boxes, scores, landmarks, embeddings), so the choice of face is made
afterwards (`ImageFaces.choose`). The cache is one append-only JSON-lines file per embedder under
`.cache/accuracy/`, keyed by the image's sha256; its file name carries a fingerprint of what produces the
numbers (the exported detector and embedder, the pipeline code and its Triton config), so a re-export or a
pipeline change starts a new cache instead of mixing results. A run that is interrupted keeps every image it
finished. With `--triton-url` the server is someone else's: the fingerprint then describes the local
repository, which the caller asserts the server runs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facestack.pipeline import choice, quality
from facestack.settings import REPO_ROOT, get_settings
from facestack.triton.contract import MODEL, Analysis, build_request, image_error, parse_result
from facestack.triton.model_config import pipeline_parameters

DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "accuracy"
MAX_FACES = 16
FACE_CHOICES = choice.RULES


@dataclass(frozen=True)
class ImageFaces(Analysis):
    """What the pipeline returned for one image (facestack.triton.contract.Analysis), or an error code."""

    quality: np.ndarray | None = None  # [F, len(quality.FIELDS)]; None in records written before it existed
    error: str | None = None  # e.g. "invalid_image: ..." (the image could not be processed at all)

    def choose(self, rule: str = "centre") -> int | None:
        """Index of the face to use (facestack.pipeline.choice, the gateway's rule), or None (failure to enrol:
        no face found or the image failed). LFW's labelled face is the centred one, so `centre` is the
        reference the other rules are measured against."""
        if self.error or len(self) == 0:
            return None
        return choice.choose(self.boxes, self.image_size, rule)[0]

    def embedding(self, rule: str = "centre") -> np.ndarray | None:
        face = self.choose(rule)
        return None if face is None else self.embeddings[face]

    # --- cache records -------------------------------------------------------------------------------------
    def to_record(self) -> dict:
        def b64(array: np.ndarray) -> str:
            return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode()

        return {"faces": len(self), "image_size": list(self.image_size), "error": self.error,
                "boxes": b64(self.boxes), "scores": b64(self.scores), "landmarks": b64(self.landmarks),
                "embeddings": b64(self.embeddings),
                "quality": None if self.quality is None else b64(self.quality)}

    @classmethod
    def from_record(cls, record: dict) -> ImageFaces:
        n = int(record["faces"])

        def arr(key: str, *shape: int) -> np.ndarray:
            return np.frombuffer(base64.b64decode(record[key]), dtype="<f4").astype(np.float32).reshape(n, *shape)

        return cls(arr("boxes", 4), arr("scores"), arr("landmarks", 5, 2), arr("embeddings", -1) if n else
                   np.zeros((0, 128), np.float32), tuple(record["image_size"]),
                   quality=arr("quality", len(quality.FIELDS)) if record.get("quality") is not None else None,
                   error=record.get("error"))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(embedder: str, repository: Path | None = None) -> dict:
    """What decides the pipeline's output for one embedder: model files, pipeline code, pipeline config."""
    repository = Path(repository or get_settings().model_repository)
    served = pipeline_parameters(repository, "")  # the config the local launcher serves
    if embedder not in served.embedders:
        raise ValueError(f"unknown embedder {embedder!r}; choose one of {sorted(served.embedders)}")
    models = {}
    for model in (served.detector_model, served.embedders[embedder]):
        manifests = sorted((repository / model).glob("*/manifest.json"), key=lambda p: int(p.parent.name))
        if not manifests:
            raise FileNotFoundError(f"no exported {model} under {repository} (run `python -m export`)")
        manifest = json.loads(manifests[-1].read_text())
        models[model] = {"version": manifests[-1].parent.name, "sha256": manifest["output"]["sha256"],
                         "alignment": manifest.get("alignment")}
    code = hashlib.sha256()
    triton = REPO_ROOT / "facestack" / "triton"
    for path in sorted((REPO_ROOT / "facestack" / "pipeline").glob("*.py")) + [
            triton / "backend.py", triton / "model_config.py", repository / MODEL / "config.pbtxt"]:
        code.update(path.name.encode() + b"\0" + path.read_bytes())
    parts = {"embedder": embedder, "embedder_model": served.embedders[embedder], "models": models,
             "pipeline": code.hexdigest(), "max_faces": MAX_FACES}
    parts["id"] = _sha256(json.dumps(parts, sort_keys=True).encode())[:16]
    return parts


class EmbeddingCache:
    """Append-only JSON lines: {"sha256", "path", "result"}; a torn last line (a killed run) is ignored."""

    def __init__(self, path: Path, meta: dict | None = None) -> None:
        self.path = Path(path)
        self.records: dict[str, ImageFaces] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if "sha256" in entry:
                    self.records[entry["sha256"]] = ImageFaces.from_record(entry["result"])
        elif meta is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"meta": meta}, sort_keys=True) + "\n")

    def get(self, sha256: str) -> ImageFaces | None:
        return self.records.get(sha256)

    def put(self, sha256: str, path: str, faces: ImageFaces) -> None:
        self.records[sha256] = faces
        with self.path.open("a") as out:
            out.write(json.dumps({"sha256": sha256, "path": path, "result": faces.to_record()}) + "\n")


def cache_path(embedder: str, cache_dir: Path | None = None, repository: Path | None = None) -> tuple[Path, dict]:
    fp = fingerprint(embedder, repository)
    return Path(cache_dir or DEFAULT_CACHE_DIR) / f"{embedder}-{fp['id']}.jsonl", fp


@dataclass
class EmbedStats:
    images: int = 0
    cached: int = 0
    computed: int = 0
    errors: int = 0
    seconds: float = 0.0  # wall time of the Triton calls (uncached images only)

    @property
    def images_per_second(self) -> float | None:
        return self.computed / self.seconds if self.computed and self.seconds > 0 else None


async def _run_requests(url: str, jobs: list[tuple[str, Path, bytes]], embedder: str, concurrency: int,
                        done: Callable[[str, Path, ImageFaces], None]) -> None:
    import tritonclient.grpc.aio as aioclient
    from tritonclient.utils import InferenceServerException


    queue: asyncio.Queue[tuple[str, Path, bytes]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    client = aioclient.InferenceServerClient(url)

    async def worker() -> None:
        while True:
            try:
                sha, path, data = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            inputs, outputs = build_request(aioclient, data, embedder=embedder, max_faces=MAX_FACES)
            try:
                result = parse_result(await client.infer(MODEL, inputs, outputs=outputs, client_timeout=300))
            except InferenceServerException as exc:
                message = exc.message() or str(exc)
                refused = image_error(message)
                if refused is None or refused[0] not in ("invalid_image", "image_too_large"):
                    raise  # the server or a model is broken: stop rather than score it as a failed image
                done(sha, path, ImageFaces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                           np.zeros((0, 5, 2), np.float32), np.zeros((0, 128), np.float32),
                                           (0, 0), error=message))
                continue
            done(sha, path, ImageFaces(result.boxes, result.scores, result.landmarks, result.embeddings,
                                       result.image_size, result.quality, result.model, result.version))

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()


def _load(paths: Sequence[Path]) -> list[tuple[Path, bytes, str]]:
    out = []
    for p in paths:
        data = Path(p).read_bytes()
        out.append((p, data, _sha256(data)))
    return out


def uncached(paths: Sequence[Path], embedder: str, cache_dir: Path | None = None,
             repository: Path | None = None) -> int:
    """How many of these images the cache lacks for this embedder (0: no Triton needed)."""
    path, _ = cache_path(embedder, cache_dir, repository)
    cache = EmbeddingCache(path)
    return sum(1 for _, _, sha in _load(paths) if cache.get(sha) is None)


def embed_images(paths: Sequence[Path], embedder: str, *, url: str | None = None, cache_dir: Path | None = None,
                 concurrency: int = 8, progress: Callable[[str], None] | None = print,
                 repository: Path | None = None) -> tuple[dict[Path, ImageFaces], EmbedStats]:
    """Faces of every image for one embedder, from the cache or through Triton.

    Without `url`, a local TritonServer (facestack.triton.launcher) is started only if some image is not cached.
    """
    path, meta = cache_path(embedder, cache_dir, repository)
    cache = EmbeddingCache(path, meta)
    stats = EmbedStats(images=len(paths))
    out: dict[Path, ImageFaces] = {}
    jobs = []
    for p, data, sha in _load(paths):
        hit = cache.get(sha)
        if hit is not None:
            out[p] = hit
            stats.cached += 1
        else:
            jobs.append((sha, p, data))
    if progress:
        progress(f"[{embedder}] {stats.cached} of {len(paths)} images cached in {path}; {len(jobs)} to run")
    if not jobs:
        stats.errors = sum(1 for f in out.values() if f.error)
        return out, stats

    started = time.perf_counter()
    last = [started]

    def done(sha: str, p: Path, faces: ImageFaces) -> None:
        cache.put(sha, str(p), faces)
        out[p] = faces
        stats.computed += 1
        now = time.perf_counter()
        if progress and (now - last[0] > 30 or stats.computed == len(jobs)):
            last[0] = now
            rate = stats.computed / (now - started)
            progress(f"[{embedder}] {stats.computed}/{len(jobs)} images, {rate:.1f} img/s, "
                     f"eta {(len(jobs) - stats.computed) / rate:.0f}s")

    server = None
    if url is None:
        from facestack.triton.launcher import TritonServer

        server = TritonServer(repository).start()
        url = server.grpc_url
        started = time.perf_counter()
    try:
        asyncio.run(_run_requests(url, jobs, embedder, concurrency, done))
    finally:
        if server is not None:
            server.stop()
    stats.seconds = time.perf_counter() - started
    stats.errors = sum(1 for f in out.values() if f.error)
    return out, stats
