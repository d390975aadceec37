"""Templates, galleries and subjects in Milvus (a Milvus Lite file by default, a Milvus server in production).

Collections:
- `facestack_templates_<model>_v<version>`: one per embedder model and version, so templates of different
  models are never compared. face_id (primary key), tenant (partition key), gallery, subject, created,
  vector (COSINE, HNSW). Only templates: never a face image.
- `facestack_galleries`, `facestack_subjects`: the records, keyed by a digest of (tenant, gallery[, subject]).
  Milvus needs a vector field in every collection, so these carry a 2-d placeholder.

Tenant isolation lives here: every filter starts with the caller's tenant and every record key includes
it; ids are quoted with `quote()` (field notes: filter templates fail in Lite, and an unescaped quote in
an id is an injection).

Writes are upserts keyed by ids the gateway generates, so pymilvus' retry of a write whose answer was
lost cannot duplicate a row. Every write runs in one thread holding one lock (field notes: concurrent
writers to Milvus Lite lose acknowledged rows after kill -9). A multi-step change (enrol: check the
subject, write; erase: templates, subjects, record) holds the lock throughout, so an erasure and an
enrolment never interleave in one process.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from gateway.admission import AdmissionPool
from gateway.errors import ApiError
from gateway.metrics import Metrics
from gateway.timing import record

log = logging.getLogger("gateway")
# pymilvus logs every failed RPC with a traceback at ERROR; the store reports failures itself, once.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

T = TypeVar("T")
GALLERIES = "facestack_galleries"
SUBJECTS = "facestack_subjects"
TEMPLATE_PREFIX = "facestack_templates_"
ID_BYTES = 512  # ids are up to 128 characters; VARCHAR lengths count UTF-8 bytes
MAX_QUERY_WINDOW = 16384  # Milvus caps offset + limit of a query or search
_PLACEHOLDER = [0.0, 0.0]


def quote(value: str) -> str:
    """A Milvus filter string literal for any user-supplied value (backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _not_loaded(exc: MilvusException) -> bool:
    # Milvus' ErrCollectionNotLoaded is code 101 ("collection not loaded" / "in state 'released'").
    message = (getattr(exc, "message", "") or str(exc)).lower()
    return getattr(exc, "code", None) == 101 or "not loaded" in message or "state 'released'" in message


def record_key(*parts: str) -> str:
    # Ids contain no control characters, so \x1f separates them unambiguously.
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def template_collection(model: str, version: str) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in f"{model}_v{version}")
    return TEMPLATE_PREFIX + safe


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Hit:
    subject: str
    face_id: str
    similarity: float


def _must_be_missing(lookup: Callable[[], object], missing_code: str, conflict: ApiError) -> None:
    """Create-if-absent: returns when `lookup` raises `missing_code`; any other error (e.g. the parent gallery is
    missing) propagates; if the record exists, raises `conflict`."""
    try:
        lookup()
    except ApiError as exc:
        if exc.code == missing_code:
            return
        raise
    raise conflict


class Store:
    def __init__(self, uri: str, token: str = "", *, timeout: float, workers: int, metrics: Metrics,
                 retry_after: int, queue: int = 32) -> None:
        self.uri = uri
        self.lite = uri.endswith(".db")
        self.token = token
        self.timeout = timeout
        self.metrics = metrics
        self.retry_after = retry_after
        self._pool = AdmissionPool(workers, queue, retry_after=retry_after, metrics=metrics)  # bounded, sheds: 503
        self._write_lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._client: MilvusClient | None = None
        self._known: set[str] = set()  # collections created and loaded by this process

    # ---- plumbing --------------------------------------------------------------------------------

    def _connect(self) -> MilvusClient:
        with self._connect_lock:
            if self._client is None:
                if self.lite:
                    Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                client = MilvusClient(self.uri, token=self.token, timeout=self.timeout)
                try:
                    for name in (GALLERIES, SUBJECTS):
                        self._ensure(client, name)
                except BaseException:
                    client.close()
                    raise
                self._client = client
            elif not {GALLERIES, SUBJECTS} <= self._known:  # forgotten after a Milvus restart: load again
                for name in (GALLERIES, SUBJECTS):
                    self._ensure(self._client, name)
            return self._client

    def _ensure(self, client: MilvusClient, name: str, dim: int = 128) -> None:
        if name in self._known:
            return
        if not client.has_collection(name, timeout=self.timeout):
            schema, index = self._schema(client, name, dim)
            client.create_collection(name, schema=schema, index_params=index, timeout=self.timeout)
            if name.startswith(TEMPLATE_PREFIX) and not self.lite:  # Lite scans rows whatever the index
                self._scalar_indexes(client, name)
        client.load_collection(name, timeout=max(self.timeout, 120.0))  # a reopened Lite file replays its WAL
        self._known.add(name)

    @staticmethod
    def _schema(client: MilvusClient, name: str, dim: int) -> tuple[Any, Any]:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        index = client.prepare_index_params()
        key = "face_id" if name.startswith(TEMPLATE_PREFIX) else "pk"
        schema.add_field(key, DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("tenant", DataType.VARCHAR, max_length=ID_BYTES, is_partition_key=True)
        schema.add_field("gallery", DataType.VARCHAR, max_length=ID_BYTES)
        if name != GALLERIES:
            schema.add_field("subject", DataType.VARCHAR, max_length=ID_BYTES)
        schema.add_field("created", DataType.INT64)
        if name.startswith(TEMPLATE_PREFIX):
            schema.add_field("model", DataType.VARCHAR, max_length=128)  # e.g. face_embedder:1
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            # HNSW: sub-linear search on a server up to millions of templates (Lite scans whatever the index).
            index.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 200})
            return schema, index
        if name == GALLERIES:
            schema.add_field("embedder", DataType.VARCHAR, max_length=32)
        else:
            schema.add_field("name", DataType.VARCHAR, max_length=1024)
            schema.add_field("updated", DataType.INT64)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        index.add_index("v", index_type="FLAT", metric_type="L2")
        return schema, index

    def _scalar_indexes(self, client: MilvusClient, name: str) -> None:
        # Inverted indexes make the gallery/subject filters cheap on a server; Milvus 2.3 lacks them.
        for field in ("gallery", "subject"):
            try:
                params = client.prepare_index_params()
                params.add_index(field, index_type="INVERTED")
                client.create_index(name, params, timeout=self.timeout)
            except MilvusException as exc:
                log.info("no INVERTED index on %s.%s: %s", name, field, exc.message)

    def _translate(self, exc: BaseException) -> ApiError:
        code = getattr(exc, "code", None)
        message = getattr(exc, "message", None) or str(exc)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED or "timeout" in message.lower() or "deadline" in message.lower():
            return ApiError("timeout", f"Milvus did not answer within {self.timeout:g} s")
        log.warning("milvus error: %s", message)
        return ApiError("backend_unavailable", f"Milvus: {message[:200]}", retry_after=self.retry_after)

    async def _run(self, operation: str, fn: Callable[[MilvusClient], T], *, write: bool = False) -> T:
        def call() -> T:
            for attempt in (1, 2):
                client = self._connect()
                try:
                    if write:
                        with self._write_lock:
                            return fn(client)
                    return fn(client)
                except MilvusException as exc:
                    # A restarted Milvus may come back with collections released (Milvus Lite's server
                    # always does): forget what was loaded, load again, and retry once. Safe for writes
                    # too: they are upserts of gateway-generated ids and checks re-run.
                    if attempt == 2 or not _not_loaded(exc):
                        raise
                    log.warning("milvus: collections not loaded (Milvus restarted?); loading them again")
                    self._known.clear()
            raise AssertionError("unreachable")

        started = time.perf_counter()
        outcome = "error"
        loop = asyncio.get_running_loop()
        # Lite writes run without a client deadline (see _wt): this wait bounds the request, not the write.
        budget = self.timeout * (4 if write else 2) + 1
        try:
            pool = self._pool.lane(operation)  # health checks have their own lane
            result = await asyncio.wait_for(asyncio.shield(loop.run_in_executor(pool, call)), budget)
            outcome = "ok"
            return result
        except ApiError as exc:
            outcome = exc.code
            raise
        except TimeoutError:
            outcome = "timeout"
            raise ApiError("timeout", f"Milvus did not answer within {budget:g} s") from None
        except (MilvusException, grpc.RpcError) as exc:
            error = self._translate(exc)
            outcome = error.code
            raise error from None
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.milvus.labels(operation, outcome).observe(elapsed)
            record("milvus", started, started + elapsed)

    @property
    def _wt(self) -> float | None:
        """Client deadline for writes. None on Lite: a client-side timeout would leave the write running
        inside Lite while the lock is released and the next write starts, i.e. concurrent writers."""
        return None if self.lite else self.timeout

    async def start(self) -> None:
        try:
            await self._run("connect", lambda client: None)
        except ApiError as exc:  # serve anyway: /readyz reports it, calls retry the connection
            log.warning("milvus not reachable at start (%s): %s", self.uri, exc.detail)

    async def ping(self) -> bool:
        # A read, not has_collection: it fails on a released collection (and _run then loads it again).
        try:
            await self._run("ping", lambda c: c.get(GALLERIES, ids=["ping"], output_fields=["pk"],
                                                    timeout=min(self.timeout, 2.0)))
            return True
        except ApiError:
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=True)  # in-flight writes finish before the file closes
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.lite:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)  # Lite syncs its files at close

    # ---- galleries -------------------------------------------------------------------------------

    def _get_gallery(self, c: MilvusClient, tenant: str, gallery: str, consistency: str = "Session") -> dict:
        rows = c.get(GALLERIES, ids=[record_key(tenant, gallery)],
                     output_fields=["tenant", "gallery", "embedder", "metadata", "created"],
                     timeout=self.timeout, consistency_level=consistency)
        rows = [r for r in rows if r["tenant"] == tenant and r["gallery"] == gallery]
        if not rows:
            raise ApiError("gallery_not_found", f"gallery {gallery!r} does not exist", gallery_id=gallery)
        return dict(rows[0])

    async def get_gallery(self, tenant: str, gallery: str) -> dict:
        return await self._run("get_gallery", lambda c: self._get_gallery(c, tenant, gallery))

    async def create_gallery(self, tenant: str, gallery: str, embedder: str, metadata: dict) -> dict:
        row = {"pk": record_key(tenant, gallery), "tenant": tenant, "gallery": gallery, "embedder": embedder,
               "metadata": metadata, "created": now_ms(), "v": _PLACEHOLDER}

        def write(c: MilvusClient) -> dict:
            _must_be_missing(lambda: self._get_gallery(c, tenant, gallery, "Strong"), "gallery_not_found",
                             ApiError("conflict", f"gallery {gallery!r} already exists", gallery_id=gallery))
            c.upsert(GALLERIES, [row], timeout=self._wt)
            return row

        return await self._run("create_gallery", write, write=True)

    async def list_galleries(self, tenant: str, limit: int, offset: int) -> tuple[list[dict], int]:
        flt = f"tenant == {quote(tenant)}"

        def read(c: MilvusClient) -> tuple[list[dict], int]:
            total = self._count(c, GALLERIES, flt)
            rows = c.query(GALLERIES, filter=flt, output_fields=["gallery", "embedder", "metadata", "created"],
                           limit=limit, offset=offset, timeout=self.timeout, consistency_level="Session")
            return [dict(r) for r in rows], total

        return await self._run("list_galleries", read)

    def _count(self, c: MilvusClient, collection: str, flt: str) -> int:
        rows = c.query(collection, filter=flt, output_fields=["count(*)"], timeout=self.timeout,
                       consistency_level="Strong")
        return int(rows[0]["count(*)"]) if rows else 0

    def _template_collections(self, c: MilvusClient) -> list[str]:
        names = [n for n in c.list_collections(timeout=self.timeout) if n.startswith(TEMPLATE_PREFIX)]
        for name in names:
            self._ensure(c, name)
        return names

    async def gallery_counts(self, tenant: str, gallery: str) -> tuple[int, int]:
        flt = f"tenant == {quote(tenant)} and gallery == {quote(gallery)}"

        def read(c: MilvusClient) -> tuple[int, int]:
            templates = sum(self._count(c, n, flt) for n in self._template_collections(c))
            return self._count(c, SUBJECTS, flt), templates

        return await self._run("count", read)

    async def delete_gallery(self, tenant: str, gallery: str) -> tuple[int, int, int]:
        """Erase a gallery: templates first (so nothing matches any more), then subjects, then the record."""
        flt = f"tenant == {quote(tenant)} and gallery == {quote(gallery)}"

        def write(c: MilvusClient) -> tuple[int, int, int]:
            self._get_gallery(c, tenant, gallery, "Strong")
            templates = self._delete_where(c, flt)
            subjects = self._count(c, SUBJECTS, flt)
            if subjects:
                c.delete(SUBJECTS, filter=flt, timeout=self._wt)
            c.delete(GALLERIES, ids=[record_key(tenant, gallery)], timeout=self._wt)
            remaining = sum(self._count(c, n, flt) for n in self._template_collections(c))
            return subjects, templates, remaining

        return await self._run("delete_gallery", write, write=True)

    def _delete_where(self, c: MilvusClient, flt: str) -> int:
        deleted = 0
        for name in self._template_collections(c):
            count = self._count(c, name, flt)
            if count:
                c.delete(name, filter=flt, timeout=self._wt)
                deleted += count
        return deleted

    # ---- subjects --------------------------------------------------------------------------------

    _SUBJECT_FIELDS = ("tenant", "gallery", "subject", "name", "metadata", "created", "updated")

    def _get_subject(self, c: MilvusClient, tenant: str, gallery: str, subject: str,
                     consistency: str = "Session") -> dict:
        rows = c.get(SUBJECTS, ids=[record_key(tenant, gallery, subject)], output_fields=list(self._SUBJECT_FIELDS),
                     timeout=self.timeout, consistency_level=consistency)
        rows = [r for r in rows if r["tenant"] == tenant and r["gallery"] == gallery and r["subject"] == subject]
        if not rows:
            self._get_gallery(c, tenant, gallery, consistency)  # gallery_not_found takes precedence
            raise ApiError("subject_not_found", f"subject {subject!r} does not exist in gallery {gallery!r}",
                           gallery_id=gallery, subject_id=subject)
        return dict(rows[0])

    async def get_subject(self, tenant: str, gallery: str, subject: str) -> dict:
        return await self._run("get_subject", lambda c: self._get_subject(c, tenant, gallery, subject))

    async def create_subject(self, tenant: str, gallery: str, subject: str, name: str | None,
                             metadata: dict) -> dict:
        created = now_ms()
        row = {"pk": record_key(tenant, gallery, subject), "tenant": tenant, "gallery": gallery, "subject": subject,
               "name": name or "", "metadata": metadata, "created": created, "updated": created, "v": _PLACEHOLDER}

        def write(c: MilvusClient) -> dict:
            _must_be_missing(lambda: self._get_subject(c, tenant, gallery, subject, "Strong"), "subject_not_found",
                             ApiError("conflict", f"subject {subject!r} already exists in gallery {gallery!r}",
                                      gallery_id=gallery, subject_id=subject))
            c.upsert(SUBJECTS, [row], timeout=self._wt)
            return row

        return await self._run("create_subject", write, write=True)

    async def update_subject(self, tenant: str, gallery: str, subject: str, changes: dict) -> dict:
        def write(c: MilvusClient) -> dict:
            row = self._get_subject(c, tenant, gallery, subject, "Strong")
            row.update(changes, updated=now_ms(), pk=record_key(tenant, gallery, subject), v=_PLACEHOLDER)
            c.upsert(SUBJECTS, [row], timeout=self._wt)
            return row

        return await self._run("update_subject", write, write=True)

    async def list_subjects(self, tenant: str, gallery: str, limit: int, offset: int) -> tuple[list[dict], int]:
        flt = f"tenant == {quote(tenant)} and gallery == {quote(gallery)}"

        def read(c: MilvusClient) -> tuple[list[dict], int]:
            self._get_gallery(c, tenant, gallery)
            rows = c.query(SUBJECTS, filter=flt, output_fields=list(self._SUBJECT_FIELDS), limit=limit, offset=offset,
                           timeout=self.timeout, consistency_level="Session")
            return [dict(r) for r in rows], self._count(c, SUBJECTS, flt)

        return await self._run("list_subjects", read)

    async def delete_subject(self, tenant: str, gallery: str, subject: str) -> tuple[int, int]:
        flt = f"tenant == {quote(tenant)} and gallery == {quote(gallery)} and subject == {quote(subject)}"

        def write(c: MilvusClient) -> tuple[int, int]:
            self._get_subject(c, tenant, gallery, subject, "Strong")
            templates = self._delete_where(c, flt)
            c.delete(SUBJECTS, ids=[record_key(tenant, gallery, subject)], timeout=self._wt)
            remaining = sum(self._count(c, n, flt) for n in self._template_collections(c))
            return templates, remaining

        return await self._run("delete_subject", write, write=True)

    # ---- templates -------------------------------------------------------------------------------

    def _subject_filter(self, tenant: str, gallery: str, subject: str) -> str:
        return f"tenant == {quote(tenant)} and gallery == {quote(gallery)} and subject == {quote(subject)}"

    async def add_templates(self, tenant: str, gallery: str, subject: str, model: str, version: str,
                            vectors: np.ndarray, max_per_subject: int) -> tuple[list[str], int]:
        name = template_collection(model, version)
        face_ids = [uuid.uuid4().hex for _ in range(len(vectors))]
        created = now_ms()
        flt = self._subject_filter(tenant, gallery, subject)

        def write(c: MilvusClient) -> tuple[list[str], int]:
            self._get_subject(c, tenant, gallery, subject, "Strong")
            self._ensure(c, name, dim=int(vectors.shape[1]))
            existing = self._count(c, name, flt)
            if existing + len(vectors) > max_per_subject:
                raise ApiError("conflict", f"subject {subject!r} has {existing} faces; at most {max_per_subject} "
                               "are kept per subject", gallery_id=gallery, subject_id=subject)
            rows = [{"face_id": fid, "tenant": tenant, "gallery": gallery, "subject": subject, "created": created,
                     "model": f"{model}:{version}", "vector": vec.astype(np.float32).tolist()}
                    for fid, vec in zip(face_ids, vectors, strict=True)]
            c.upsert(name, rows, timeout=self._wt)
            return face_ids, created

        return await self._run("insert", write, write=True)

    async def list_faces(self, tenant: str, gallery: str, subject: str, limit: int,
                         offset: int) -> tuple[list[dict], int]:
        flt = self._subject_filter(tenant, gallery, subject)

        def read(c: MilvusClient) -> tuple[list[dict], int]:
            self._get_subject(c, tenant, gallery, subject)
            rows: list[dict] = []
            total = 0
            for name in sorted(self._template_collections(c)):
                found = c.query(name, filter=flt, output_fields=["face_id", "created", "model"], limit=MAX_QUERY_WINDOW,
                                timeout=self.timeout, consistency_level="Session")
                rows += [dict(r) for r in found]
                total += len(found)
            rows.sort(key=lambda r: (r["created"], r["face_id"]))
            return rows[offset:offset + limit], total

        return await self._run("list_faces", read)

    async def delete_face(self, tenant: str, gallery: str, subject: str, face_id: str) -> int:
        flt = f"{self._subject_filter(tenant, gallery, subject)} and face_id == {quote(face_id)}"

        def write(c: MilvusClient) -> int:
            self._get_subject(c, tenant, gallery, subject, "Strong")
            deleted = self._delete_where(c, flt)
            if not deleted:
                raise ApiError("face_not_found", f"face {face_id!r} does not exist for subject {subject!r}",
                               face_id=face_id)
            return sum(self._count(c, n, flt) for n in self._template_collections(c))

        return await self._run("delete_face", write, write=True)

    async def subject_templates(self, tenant: str, gallery: str, subject: str, model: str,
                                version: str) -> np.ndarray:
        """1:1 by key: the subject's stored templates of this model (a filtered query, not a search)."""
        name = template_collection(model, version)
        flt = self._subject_filter(tenant, gallery, subject)

        def read(c: MilvusClient) -> np.ndarray:
            self._get_subject(c, tenant, gallery, subject)
            if name not in self._known and name not in self._template_collections(c):
                return np.zeros((0, 0), np.float32)
            # Session: a verify right after an enrolment through this replica sees the new templates.
            rows = c.query(name, filter=flt, output_fields=["vector"], limit=MAX_QUERY_WINDOW, timeout=self.timeout,
                           consistency_level="Session")
            return np.asarray([r["vector"] for r in rows], np.float32)

        return await self._run("get_templates", read)

    async def search(self, tenant: str, gallery: str, model: str, version: str, vector: np.ndarray, top_k: int,
                     max_per_subject: int) -> list[Hit]:
        """1:N: the top_k most similar distinct subjects of the gallery (Bounded consistency).

        Hits are templates, best first; the first top_k distinct subjects among the best L hits are the true
        top_k whenever L hits hold that many subjects. L starts at 2 * top_k (most subjects hold one or two
        templates; every extra hit costs on Milvus Lite) and widens up to top_k * max_per_subject, which
        always suffices.
        """
        name = template_collection(model, version)
        widest = min(top_k * max_per_subject, MAX_QUERY_WINDOW)
        flt = f"tenant == {quote(tenant)} and gallery == {quote(gallery)}"
        data = [vector.astype(np.float32).tolist()]

        def read(c: MilvusClient) -> list[Hit]:
            if name not in self._known and name not in self._template_collections(c):
                return []
            limit = min(2 * top_k, widest)
            while True:
                found = c.search(name, data=data, filter=flt, limit=limit, output_fields=["subject"],
                                 anns_field="vector",
                                 search_params={"metric_type": "COSINE", "params": {"ef": max(64, limit)}},
                                 consistency_level="Bounded", timeout=self.timeout)[0]
                best: dict[str, Hit] = {}
                for hit in found:
                    subject = hit["entity"]["subject"]
                    if subject not in best:  # hits come best first
                        best[subject] = Hit(subject, str(hit.id), float(hit.distance))
                if len(best) >= top_k or len(found) < limit or limit >= widest:
                    return sorted(best.values(), key=lambda h: -h.similarity)[:top_k]
                limit = min(limit * 4, widest)

        return await self._run("search", read)

    # ---- benchmark support -----------------------------------------------------------------------

    def bulk_insert_sync(self, rows: list[dict], model: str, version: str, dim: int = 128) -> None:
        """Synthetic gallery rows for the benchmark (same lock, same collection as enrolment)."""
        client = self._connect()
        name = template_collection(model, version)
        with self._write_lock:
            self._ensure(client, name, dim)
            client.insert(name, rows, timeout=self._wt)


    # ---- keyed records of gateway modules (gateway/idempotency.py) -----------------------------------

    def _ensure_records(self, c: MilvusClient, name: str) -> None:
        """A collection of {pk, created, record (JSON)} rows: no partition key, so upsert is safe on 2.3.5."""
        if name in self._known:
            return
        if not c.has_collection(name, timeout=self.timeout):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("created", DataType.INT64)
            schema.add_field("record", DataType.JSON)
            schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
            index = c.prepare_index_params()
            index.add_index("v", index_type="FLAT", metric_type="L2")
            c.create_collection(name, schema=schema, index_params=index, timeout=self.timeout)
        c.load_collection(name, timeout=max(self.timeout, 120.0))
        self._known.add(name)

    async def get_record(self, collection: str, key: str) -> dict | None:
        def read(c: MilvusClient) -> dict | None:
            self._ensure_records(c, collection)
            rows = c.get(collection, ids=[key], output_fields=["created", "record"], timeout=self.timeout,
                         consistency_level="Strong")  # another replica's answer of a moment ago counts
            return dict(rows[0]) if rows else None

        return await self._run("get_record", read)

    async def put_record(self, collection: str, key: str, record: dict) -> None:
        row = {"pk": key, "created": now_ms(), "record": record, "v": _PLACEHOLDER}

        def write(c: MilvusClient) -> None:
            self._ensure_records(c, collection)
            c.upsert(collection, [row], timeout=self._wt)

        await self._run("put_record", write, write=True)

    async def purge_records(self, collection: str, before_ms: int) -> None:
        def write(c: MilvusClient) -> None:
            self._ensure_records(c, collection)
            c.delete(collection, filter=f"created < {int(before_ms)}", timeout=self._wt)

        await self._run("purge_records", write, write=True)
