"""Templates, galleries and subjects in Milvus (a Milvus Lite file by default, a Milvus server in production).

Collections:
- `facestack_templates_<model>_v<version>`: one per embedder model and version, so templates of different
  models are never compared. face_id (primary key), tenant (partition key), gallery, subject, generation,
  created, model, vector (COSINE, HNSW). Only templates: never a face image.
- `facestack_galleries`, `facestack_subjects`: the records. Milvus needs a vector field in every collection,
  so these carry a 2-d placeholder. No partition key there (lookups are by key or primary key).

Records have generations. Creating a gallery or a subject writes a row with a fresh random `generation`;
its primary key is a digest of (tenant, gallery[, subject], generation) and `key` a digest of (tenant,
gallery[, subject]). A template carries the generation of the subject it was enrolled for. A template
whose subject row (same generation) does not exist is an orphan: search and verify ignore it, so a late
write of a subject that was erased, or erased and created again, can never be returned.

Writes never upsert into the partition-key collection (Milvus 2.3.5 routes such upserts to the wrong
partition, and a tenant filter then never finds them): templates are inserted with new ids. Changing a
subject's name/metadata upserts its row in `facestack_subjects`, which has no partition key.

Across gateway replicas there is no lock, so every check-then-write is followed by a check after the write
(Strong reads, which see every write acknowledged before them):
- create gallery/subject: insert a new generation, then read all rows of the key; if another generation
  is there, delete ours and retry (the earlier creator wins; if both see each other both back off).
- enrol: read the subject's generation, insert templates, read it again; if the subject (that generation)
  is gone, delete what was inserted and answer subject_not_found.
- erase: delete the record first (so concurrent enrolments fail their check after the write), then the
  templates; wait out the Bounded staleness window (`bounded_staleness_s`, Milvus' common.gracefulTime);
  delete templates once more (a late enrolment's rows) and count what remains. Only then is the receipt
  issued: from that moment no read on any replica (all reads are Bounded or stronger) sees the subject.

Reads are Bounded (staleness at most `bounded_staleness_s`), or Session for a collection this process began
writing within that window (so a replica reads its own writes; never weaker than Bounded). On Milvus Lite
(one process, read-your-writes) consistency levels change nothing, and every write runs under one lock
(field notes: concurrent writers to Milvus Lite lose acknowledged rows after kill -9).

Tenant isolation lives here: every filter starts with the caller's tenant and every record key includes
it; ids are quoted with `quote()` (field notes: filter templates fail in Lite, and an unescaped quote in
an id is an injection).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
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
PAGE_CHUNK = MAX_QUERY_WINDOW // 4  # rows one key-range read of a list returns at most
CREATE_ATTEMPTS = 6  # create gallery/subject: tries when another replica creates the same id at the same time
# Template vector index (FACESTACK_MILVUS_INDEX). FLAT, the default: exact search, recall 1 by construction; at
# 1M templates on the 2-core dev VM's Milvus 2.3.5 server p50/p99 24/40-46 ms (docs/benchmarks.md). HNSW: sub-linear,
# for galleries well past that per query node, but SFace templates are nearly isotropic in 128 dimensions, hard
# for a graph index: at 100k, ef 512 found only 94 % of the exact top 10. Lite scans whatever the index.
INDEX_PARAMS = {"FLAT": {}, "HNSW": {"M": 16, "efConstruction": 200}}
INDEXES = tuple(INDEX_PARAMS)
# HNSW search ef: max(MIN_EF, hits asked for): at 100k templates ef 64 found the mated subject first for 85 % of
# probes, ef 256 for 94 %, ef 512 for 95 % (make bench-milvus); 256 is the latency/accuracy compromise.
MIN_EF = 256
_PLACEHOLDER = [0.0, 0.0]


def quote(value: str) -> str:
    """A Milvus filter string literal for any user-supplied value (backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _not_loaded(exc: MilvusException) -> bool:
    # Milvus' ErrCollectionNotLoaded is code 101 ("collection not loaded" / "in state 'released'").
    message = (getattr(exc, "message", "") or str(exc)).lower()
    return getattr(exc, "code", None) == 101 or "not loaded" in message or "state 'released'" in message


KEY_DIGITS = 32  # record keys: 16-byte blake2b digests in hex


def record_key(*parts: str) -> str:
    # Ids contain no control characters, so \x1f separates them unambiguously.
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def template_collection(model: str, version: str) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in f"{model}_v{version}")
    return TEMPLATE_PREFIX + safe


def now_ms() -> int:
    return int(time.time() * 1000)


def new_generation() -> str:
    return uuid.uuid4().hex


def is_cursor(value: str) -> bool:
    """A list cursor is a record's primary key: 32 lower-case hex digits."""
    return len(value) == KEY_DIGITS and all(c in "0123456789abcdef" for c in value)


@dataclass(frozen=True)
class Hit:
    subject: str
    face_id: str
    similarity: float


def _pick(rows: list[dict]) -> dict:
    """The record among rows of one key: normally one; two generations only while creators race."""
    return dict(min(rows, key=lambda r: (r["created"], r["generation"])))


class Store:
    def __init__(self, uri: str, token: str = "", *, timeout: float, workers: int, metrics: Metrics,
                 retry_after: int, queue: int = 32, bounded_staleness_s: float = 5.0,
                 min_ef: int = MIN_EF, index: str = "FLAT") -> None:
        if index not in INDEXES:
            raise ValueError(f"unknown Milvus index {index!r}; one of {', '.join(INDEXES)}")
        self.index = index  # for template collections this process creates; an existing one keeps its own
        self.uri = uri
        self.lite = uri.endswith(".db")
        self.token = token
        self.timeout = timeout
        self.metrics = metrics
        self.retry_after = retry_after
        # Milvus Lite reads its own writes at once; a server's Bounded reads lag at most common.gracefulTime.
        self.staleness_s = 0.0 if self.lite else bounded_staleness_s
        self.min_ef = min_ef  # HNSW search breadth: ef = max(min_ef, hits asked for)
        self._pool = AdmissionPool(workers, queue, retry_after=retry_after, metrics=metrics)  # bounded, sheds: 503
        self._write_lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._client: MilvusClient | None = None
        self._known: set[str] = set()  # collections created and loaded by this process
        self._index_of: dict[str, str] = {}  # template collection -> its vector index type
        self._written: dict[str, float] = {}  # collection -> monotonic time of this process' last write

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
        else:
            fields = {f["name"] for f in client.describe_collection(name, timeout=self.timeout)["fields"]}
            if "generation" not in fields:
                raise RuntimeError(f"Milvus collection {name} was created by an older facestack (no generation "
                                   "field); export and re-enrol, or point MILVUS_URI at a new database")
        client.load_collection(name, timeout=max(self.timeout, 120.0))  # a reopened Lite file replays its WAL
        self._known.add(name)

    def _schema(self, client: MilvusClient, name: str, dim: int) -> tuple[Any, Any]:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        index = client.prepare_index_params()
        templates = name.startswith(TEMPLATE_PREFIX)
        schema.add_field("face_id" if templates else "pk", DataType.VARCHAR, is_primary=True, max_length=64)
        if not templates:
            schema.add_field("key", DataType.VARCHAR, max_length=64)
        schema.add_field("tenant", DataType.VARCHAR, max_length=ID_BYTES, is_partition_key=templates)
        schema.add_field("gallery", DataType.VARCHAR, max_length=ID_BYTES)
        if name != GALLERIES:
            schema.add_field("subject", DataType.VARCHAR, max_length=ID_BYTES)
        schema.add_field("generation", DataType.VARCHAR, max_length=64)
        schema.add_field("created", DataType.INT64)
        if templates:
            schema.add_field("model", DataType.VARCHAR, max_length=128)  # e.g. face_embedder:1
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            index.add_index("vector", index_type=self.index, metric_type="COSINE", params=INDEX_PARAMS[self.index])
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
                    if write and self.lite:
                        with self._write_lock:
                            return fn(client)
                    return fn(client)
                except MilvusException as exc:
                    # A restarted Milvus may come back with collections released (Milvus Lite's server
                    # always does): forget what was loaded, load again, and retry once. Writes re-run their
                    # checks; they fail on released collections before writing anything.
                    if attempt == 2 or not _not_loaded(exc):
                        raise
                    log.warning("milvus: collections not loaded (Milvus restarted?); loading them again")
                    self._known.clear()
            raise AssertionError("unreachable")

        started = time.perf_counter()
        outcome = "error"
        loop = asyncio.get_running_loop()
        # Lite writes run without a client deadline (see _wt): this wait bounds the request, not the write.
        budget = self.timeout * (6 if write else 2) + 1
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

    def _level(self, collection: str) -> str:
        """Session within the staleness window after this process began writing the collection (its guarantee,
        that write's timestamp, is then no older than Bounded's, and it includes the write), else Bounded.
        Either way a read sees every write older than the window: what erasure receipts rely on."""
        began = self._written.get(collection)
        return "Session" if began is not None and time.monotonic() - began < self.staleness_s else "Bounded"

    def _writing(self, *collections: str) -> None:
        """Called before a write: its timestamp is then no older than the time noted here."""
        now = time.monotonic()
        for name in collections:
            self._written[name] = now

    def _insert(self, c: MilvusClient, name: str, rows: list[dict]) -> None:
        self._writing(name)
        c.insert(name, rows, timeout=self._wt)

    def _delete(self, c: MilvusClient, name: str, **where: Any) -> None:
        self._writing(name)
        c.delete(name, timeout=self._wt, **where)

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

    async def _settle(self) -> None:
        """Waits out the Bounded staleness window after an erasure (0 on Lite)."""
        if self.staleness_s:
            await asyncio.sleep(self.staleness_s)

    # ---- records (galleries and subjects) --------------------------------------------------------

    def _records(self, c: MilvusClient, collection: str, key: str, fields: list[str], level: str) -> list[dict]:
        rows = c.query(collection, filter=f"key == {quote(key)}", output_fields=["pk", "generation", *fields],
                       limit=MAX_QUERY_WINDOW, timeout=self.timeout, consistency_level=level)
        return [dict(r) for r in rows]

    def _create(self, c: MilvusClient, collection: str, row: dict, ident: tuple[str, ...], fields: list[str],
                conflict: ApiError, still_valid: Callable[[], object] | None = None) -> dict:
        """Create-if-absent without a lock: insert a new generation, keep it only if no other generation of the
        key is there afterwards (Strong reads). `still_valid` re-checks the parent after the write."""
        key = row["key"]
        for attempt in range(CREATE_ATTEMPTS):
            if self._records(c, collection, key, fields, "Strong"):
                raise conflict
            generation = new_generation()
            mine = {**row, "pk": record_key(*ident, generation), "generation": generation}
            self._insert(c, collection, [mine])
            others = [r for r in self._records(c, collection, key, fields, "Strong") if r["generation"] != generation]
            parent_gone = None
            if not others and still_valid is not None:
                try:
                    still_valid()
                except ApiError as exc:
                    parent_gone = exc
            if not others and parent_gone is None:
                return mine
            self._delete(c, collection, ids=[mine["pk"]])
            if parent_gone is not None:
                raise parent_gone
            # both saw each other: back off (exponential, full jitter, so the next tries rarely align), re-check
            time.sleep(random.uniform(0, 0.4) * 2**attempt)
        raise ApiError("backend_unavailable", "another request is creating the same id; retry",
                       retry_after=1)  # not a conflict: neither copy was kept

    # ---- galleries -------------------------------------------------------------------------------

    _GALLERY_FIELDS = ["tenant", "gallery", "embedder", "metadata", "created"]

    def _get_gallery(self, c: MilvusClient, tenant: str, gallery: str, level: str | None = None) -> dict:
        rows = self._records(c, GALLERIES, record_key(tenant, gallery), self._GALLERY_FIELDS,
                             level or self._level(GALLERIES))
        rows = [r for r in rows if r["tenant"] == tenant and r["gallery"] == gallery]
        if not rows:
            raise ApiError("gallery_not_found", f"gallery {gallery!r} does not exist", gallery_id=gallery)
        return _pick(rows)

    async def get_gallery(self, tenant: str, gallery: str) -> dict:
        return await self._run("get_gallery", lambda c: self._get_gallery(c, tenant, gallery))

    async def create_gallery(self, tenant: str, gallery: str, embedder: str, metadata: dict) -> dict:
        row = {"key": record_key(tenant, gallery), "tenant": tenant, "gallery": gallery, "embedder": embedder,
               "metadata": metadata, "created": now_ms(), "v": _PLACEHOLDER}
        conflict = ApiError("conflict", f"gallery {gallery!r} already exists", gallery_id=gallery)
        return await self._run("create_gallery", lambda c: self._create(
            c, GALLERIES, row, (tenant, gallery), self._GALLERY_FIELDS, conflict), write=True)

    def _page(self, c: MilvusClient, collection: str, flt: str, fields: list[str], limit: int, offset: int,
              after: str | None) -> list[dict]:
        """One page in primary-key order: from `after` (a cursor: the last key of the previous page) or `offset`
        (at most MAX_QUERY_WINDOW deep: the first offset + limit rows, sliced)."""
        if after is not None:
            return self._page_after(c, collection, flt, fields, limit, after)
        rows: list[dict] = []  # an offset page: walk key-ordered chunks from the first key, then slice
        while len(rows) < offset + limit:
            want = min(offset + limit - len(rows), PAGE_CHUNK)
            chunk = self._page_after(c, collection, flt, fields, want, rows[-1]["pk"] if rows else None)
            rows += chunk
            if len(chunk) < want:  # the end of the list
                break
        return rows[offset:offset + limit]

    def _page_after(self, c: MilvusClient, collection: str, flt: str, fields: list[str], limit: int,
                    after: str | None) -> list[dict]:
        """The first `limit` rows with a key above `after` (None: from the first key), in key order. A limited
        query is not enough: a Milvus 2.3 server does not return a segment's rows in key order (with or without
        its iterator flags), so such pages skipped rows past ~16k. Instead the page comes from a key range
        [after, upper) small enough to be read whole and sorted here; keys are uniform hex digests of
        KEY_DIGITS digits, so a range's width predicts how many rows it holds (about twice `limit`), and a count
        checks it before the read."""
        assert limit <= PAGE_CHUNK  # a range aimed at 2 * limit rows then always fits one read
        level = self._level(collection)
        base = flt if after is None else f"pk > {quote(after)} and ({flt})"
        top = 16 ** KEY_DIGITS
        start = 0 if after is None else int(after, 16)
        total = self._count(c, collection, base, level)
        width = max(1, (top - start) * min(1.0, 2 * limit / max(total, 1))) if total > MAX_QUERY_WINDOW else top
        for _ in range(64):
            upper = start + int(width)
            ranged = base if upper >= top else f"{base} and pk < {quote(format(upper, f'0{KEY_DIGITS}x'))}"
            n = total if upper >= top else self._count(c, collection, ranged, level)
            if n > MAX_QUERY_WINDOW:
                width /= 2
            elif n < limit and upper < top:
                width *= 2
            else:  # read the range whole; room above the count for rows written since (else: a smaller range)
                room = min(MAX_QUERY_WINDOW, n + max(16, n // 4))
                rows = c.query(collection, filter=ranged, output_fields=["pk", *fields], limit=room,
                               timeout=self.timeout, consistency_level=level)
                if len(rows) < room:
                    return sorted((dict(r) for r in rows), key=lambda r: r["pk"])[:limit]
                width /= 2
        raise ApiError("backend_unavailable", "Milvus: no key range of a listable size", retry_after=self.retry_after)

    async def list_galleries(self, tenant: str, limit: int, offset: int,
                             after: str | None = None) -> tuple[list[dict], int]:
        """A page of the tenant's galleries (each row's `pk` is the cursor for the next page) and their total."""
        flt = f"tenant == {quote(tenant)}"

        def read(c: MilvusClient) -> tuple[list[dict], int]:
            rows = self._page(c, GALLERIES, flt, self._GALLERY_FIELDS, limit, offset, after)
            return rows, self._count(c, GALLERIES, flt)

        return await self._run("list_galleries", read)

    def _count(self, c: MilvusClient, collection: str, flt: str, level: str | None = None) -> int:
        rows = c.query(collection, filter=flt, output_fields=["count(*)"], timeout=self.timeout,
                       consistency_level=level or self._level(collection))
        return int(rows[0]["count(*)"]) if rows else 0

    def _template_collections(self, c: MilvusClient) -> list[str]:
        names = [n for n in c.list_collections(timeout=self.timeout) if n.startswith(TEMPLATE_PREFIX)]
        for name in names:
            self._ensure(c, name)
        return names

    async def gallery_counts(self, tenant: str, gallery: str) -> tuple[int, int]:
        """(subjects, templates) of a gallery: Bounded counts (Session on the replica that just wrote)."""
        flt = f"tenant == {quote(tenant)} and gallery == {quote(gallery)}"

        def read(c: MilvusClient) -> tuple[int, int]:
            templates = sum(self._count(c, n, flt) for n in self._template_collections(c))
            return self._count(c, SUBJECTS, flt), templates

        return await self._run("count", read)

    def _erase_templates(self, c: MilvusClient, flt: str) -> int:
        """Deletes the templates matching `flt` in every template collection; returns how many there were."""
        deleted = 0
        for name in self._template_collections(c):
            count = self._count(c, name, flt, "Strong")
            if count:
                self._delete(c, name, filter=flt)
                deleted += count
        return deleted

    def _sweep(self, c: MilvusClient, flt: str, subjects: bool = False) -> int:
        """After the staleness wait: delete what late writers inserted; returns what remains (Strong)."""
        self._erase_templates(c, flt)
        if subjects and self._count(c, SUBJECTS, flt, "Strong"):
            self._delete(c, SUBJECTS, filter=flt)
        return sum(self._count(c, n, flt, "Strong") for n in self._template_collections(c))

    async def delete_gallery(self, tenant: str, gallery: str) -> tuple[int, int, int]:
        """Erase a gallery: the record first (concurrent writes then fail their check), then templates and
        subjects; after the staleness window, once more. Returns (subjects, templates, remaining templates)."""
        flt = f"tenant == {quote(tenant)} and gallery == {quote(gallery)}"

        def erase(c: MilvusClient) -> tuple[int, int]:
            self._get_gallery(c, tenant, gallery, "Strong")
            self._delete(c, GALLERIES, filter=f"key == {quote(record_key(tenant, gallery))}")
            templates = self._erase_templates(c, flt)
            subjects = self._count(c, SUBJECTS, flt, "Strong")
            if subjects:
                self._delete(c, SUBJECTS, filter=flt)
            return subjects, templates

        subjects, templates = await self._run("delete_gallery", erase, write=True)
        await self._settle()
        remaining = await self._run("delete_gallery", lambda c: self._sweep(c, flt, subjects=True), write=True)
        return subjects, templates, remaining

    # ---- subjects --------------------------------------------------------------------------------

    _SUBJECT_FIELDS = ["tenant", "gallery", "subject", "name", "metadata", "created", "updated"]

    def _get_subject(self, c: MilvusClient, tenant: str, gallery: str, subject: str,
                     level: str | None = None) -> dict:
        rows = self._records(c, SUBJECTS, record_key(tenant, gallery, subject), self._SUBJECT_FIELDS,
                             level or self._level(SUBJECTS))
        rows = [r for r in rows if r["tenant"] == tenant and r["gallery"] == gallery and r["subject"] == subject]
        if not rows:
            self._get_gallery(c, tenant, gallery, level)  # gallery_not_found takes precedence
            raise ApiError("subject_not_found", f"subject {subject!r} does not exist in gallery {gallery!r}",
                           gallery_id=gallery, subject_id=subject)
        return _pick(rows)

    async def get_subject(self, tenant: str, gallery: str, subject: str) -> dict:
        return await self._run("get_subject", lambda c: self._get_subject(c, tenant, gallery, subject))

    async def create_subject(self, tenant: str, gallery: str, subject: str, name: str | None,
                             metadata: dict) -> dict:
        created = now_ms()
        row = {"key": record_key(tenant, gallery, subject), "tenant": tenant, "gallery": gallery, "subject": subject,
               "name": name or "", "metadata": metadata, "created": created, "updated": created, "v": _PLACEHOLDER}
        conflict = ApiError("conflict", f"subject {subject!r} already exists in gallery {gallery!r}",
                            gallery_id=gallery, subject_id=subject)

        def write(c: MilvusClient) -> dict:
            parent = self._get_gallery(c, tenant, gallery, "Strong")

            def gallery_still_there() -> None:  # not erased (nor erased and created again) meanwhile
                if self._get_gallery(c, tenant, gallery, "Strong")["generation"] != parent["generation"]:
                    raise ApiError("gallery_not_found", f"gallery {gallery!r} does not exist", gallery_id=gallery)

            return self._create(c, SUBJECTS, row, (tenant, gallery, subject), self._SUBJECT_FIELDS, conflict,
                                 gallery_still_there)

        return await self._run("create_subject", write, write=True)

    async def update_subject(self, tenant: str, gallery: str, subject: str, changes: dict) -> dict:
        def write(c: MilvusClient) -> dict:
            row = self._get_subject(c, tenant, gallery, subject, "Strong")
            row.update(changes, updated=now_ms(), key=record_key(tenant, gallery, subject), v=_PLACEHOLDER)
            self._writing(SUBJECTS)
            c.upsert(SUBJECTS, [row], timeout=self._wt)  # same pk; this collection has no partition key
            return row

        return await self._run("update_subject", write, write=True)

    async def list_subjects(self, tenant: str, gallery: str, limit: int, offset: int,
                            after: str | None = None) -> tuple[list[dict], int]:
        """A page of the gallery's subjects in key order (each row's `pk` is the next page's cursor) and the total."""
        flt = f"tenant == {quote(tenant)} and gallery == {quote(gallery)}"

        def read(c: MilvusClient) -> tuple[list[dict], int]:
            self._get_gallery(c, tenant, gallery)
            rows = self._page(c, SUBJECTS, flt, self._SUBJECT_FIELDS, limit, offset, after)
            return rows, self._count(c, SUBJECTS, flt)

        return await self._run("list_subjects", read)

    async def delete_subject(self, tenant: str, gallery: str, subject: str) -> tuple[int, int]:
        """Erase a subject: its record first, then its templates; after the staleness window, once more.
        Returns (templates deleted, templates remaining)."""
        flt = self._subject_filter(tenant, gallery, subject)

        def erase(c: MilvusClient) -> int:
            self._get_subject(c, tenant, gallery, subject, "Strong")
            self._delete(c, SUBJECTS, filter=f"key == {quote(record_key(tenant, gallery, subject))}")
            return self._erase_templates(c, flt)

        templates = await self._run("delete_subject", erase, write=True)
        await self._settle()
        remaining = await self._run("delete_subject", lambda c: self._sweep(c, flt), write=True)
        return templates, remaining

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
            generation = self._get_subject(c, tenant, gallery, subject, "Strong")["generation"]
            self._ensure(c, name, dim=int(vectors.shape[1]))
            mine = f"{flt} and generation == {quote(generation)}"
            existing = self._count(c, name, mine, "Strong")
            if existing + len(vectors) > max_per_subject:
                raise ApiError("conflict", f"subject {subject!r} has {existing} faces; at most {max_per_subject} "
                               "are kept per subject", gallery_id=gallery, subject_id=subject)
            rows = [{"face_id": fid, "tenant": tenant, "gallery": gallery, "subject": subject,
                     "generation": generation, "created": created, "model": f"{model}:{version}",
                     "vector": vec.astype(np.float32).tolist()} for fid, vec in zip(face_ids, vectors, strict=True)]
            self._insert(c, name, rows)
            try:  # the check after the write: erased (or erased and created again) meanwhile?
                if self._get_subject(c, tenant, gallery, subject, "Strong")["generation"] != generation:
                    raise ApiError("subject_not_found", f"subject {subject!r} was erased during the enrolment",
                                   gallery_id=gallery, subject_id=subject)
            except ApiError:
                self._delete(c, name, filter=f"{flt} and face_id in [{', '.join(map(quote, face_ids))}]")
                raise
            return face_ids, created

        return await self._run("insert", write, write=True)

    async def list_faces(self, tenant: str, gallery: str, subject: str, limit: int,
                         offset: int) -> tuple[list[dict], int]:
        """A subject's faces (at most max_per_subject, so offsets suffice), oldest first."""
        flt = self._subject_filter(tenant, gallery, subject)

        def read(c: MilvusClient) -> tuple[list[dict], int]:
            generation = self._get_subject(c, tenant, gallery, subject)["generation"]
            mine = f"{flt} and generation == {quote(generation)}"
            rows: list[dict] = []
            for name in sorted(self._template_collections(c)):
                rows += [dict(r) for r in c.query(name, filter=mine, output_fields=["face_id", "created", "model"],
                                                  limit=MAX_QUERY_WINDOW, timeout=self.timeout,
                                                  consistency_level=self._level(name))]
            rows.sort(key=lambda r: (r["created"], r["face_id"]))
            return rows[offset:offset + limit], len(rows)

        return await self._run("list_faces", read)

    async def delete_face(self, tenant: str, gallery: str, subject: str, face_id: str) -> int:
        flt = f"{self._subject_filter(tenant, gallery, subject)} and face_id == {quote(face_id)}"

        def write(c: MilvusClient) -> int:
            self._get_subject(c, tenant, gallery, subject, "Strong")
            if not self._erase_templates(c, flt):
                raise ApiError("face_not_found", f"face {face_id!r} does not exist for subject {subject!r}",
                               face_id=face_id)
            return sum(self._count(c, n, flt, "Strong") for n in self._template_collections(c))

        remaining = await self._run("delete_face", write, write=True)
        await self._settle()
        return remaining

    async def subject_templates(self, tenant: str, gallery: str, subject: str, model: str,
                                version: str) -> np.ndarray:
        """1:1 by key: the subject's stored templates of this model (a filtered query, not a search)."""
        name = template_collection(model, version)
        flt = self._subject_filter(tenant, gallery, subject)

        def read(c: MilvusClient) -> np.ndarray:
            generation = self._get_subject(c, tenant, gallery, subject)["generation"]
            if name not in self._known and name not in self._template_collections(c):
                return np.zeros((0, 0), np.float32)
            rows = c.query(name, filter=f"{flt} and generation == {quote(generation)}", output_fields=["vector"],
                           limit=MAX_QUERY_WINDOW, timeout=self.timeout, consistency_level=self._level(name))
            return np.asarray([r["vector"] for r in rows], np.float32)

        return await self._run("get_templates", read)

    def _live(self, c: MilvusClient, tenant: str, gallery: str, hits: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (subject, generation) pairs have a subject record: a primary-key lookup."""
        pks = {record_key(tenant, gallery, s, g): (s, g) for s, g in hits}
        rows = c.get(SUBJECTS, ids=list(pks), output_fields=["pk"], timeout=self.timeout,
                     consistency_level=self._level(SUBJECTS))
        return {pks[r["pk"]] for r in rows if r["pk"] in pks}

    def _search_params(self, c: MilvusClient, collection: str, limit: int) -> dict:
        """The template index's search parameters: HNSW's ef (none for FLAT)."""
        if collection not in self._index_of:
            info = c.describe_index(collection, "vector", timeout=self.timeout) or {}
            self._index_of[collection] = str(info.get("index_type", self.index))
        return {"ef": max(self.min_ef, limit)} if self._index_of[collection] == "HNSW" else {}

    async def search(self, tenant: str, gallery: str, model: str, version: str, vector: np.ndarray, top_k: int,
                     max_per_subject: int) -> list[Hit]:
        """1:N: the top_k most similar distinct subjects of the gallery (Bounded consistency).

        Hits are templates, best first; the first top_k distinct subjects among the best L hits are the true
        top_k whenever L hits hold that many subjects. L starts at 2 * top_k (most subjects hold one or two
        templates; every extra hit costs on Milvus Lite) and widens up to top_k * max_per_subject, which
        always suffices. Orphan templates (no subject record of their generation) are dropped.
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
                found = c.search(name, data=data, filter=flt, limit=limit, output_fields=["subject", "generation"],
                                 anns_field="vector",
                                 search_params={"metric_type": "COSINE", "params": self._search_params(c, name, limit)},
                                 consistency_level=self._level(name), timeout=self.timeout)[0]
                best: dict[tuple[str, str], Hit] = {}
                for hit in found:
                    owner = (hit["entity"]["subject"], hit["entity"]["generation"])
                    if owner not in best:  # hits come best first
                        best[owner] = Hit(owner[0], str(hit.id), float(hit.distance))
                live = self._live(c, tenant, gallery, list(best)) if best else set()
                hits = [h for owner, h in best.items() if owner in live]
                if len(hits) >= top_k or len(found) < limit or limit >= widest:
                    return sorted(hits, key=lambda h: -h.similarity)[:top_k]
                limit = min(limit * 4, widest)

        return await self._run("search", read)

    # ---- benchmark support -----------------------------------------------------------------------

    def bulk_insert_sync(self, rows: list[dict], model: str, version: str, dim: int = 128) -> None:
        """Synthetic gallery rows for the benchmarks: templates plus a subject record for each new subject
        (same lock, same collections as enrolment). Rows need tenant, gallery, subject, face_id, vector."""
        client = self._connect()
        name = template_collection(model, version)
        subjects: dict[tuple[str, str, str], str] = {}
        for row in rows:
            owner = (row["tenant"], row["gallery"], row["subject"])
            row["generation"] = subjects.setdefault(owner, row.get("generation") or new_generation())
            row.setdefault("created", 0)
            row.setdefault("model", f"{model}:{version}")
        records = [{"pk": record_key(*owner, gen), "key": record_key(*owner), "tenant": owner[0], "gallery": owner[1],
                    "subject": owner[2], "generation": gen, "name": "", "metadata": {}, "created": 0, "updated": 0,
                    "v": _PLACEHOLDER} for owner, gen in subjects.items()]
        with self._write_lock:
            self._ensure(client, name, dim)
            self._writing(SUBJECTS, name)
            client.insert(SUBJECTS, records, timeout=self._wt)
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

    async def claim_once(self, collection: str, key: str) -> bool:
        """Single use without a lock (gateway/challenges.py): insert a claim row of our own under `key`, then read
        every claim of the key (Strong); the claim holds only if no other is there. Two claimants racing can
        both see each other and both lose; they can never both win (whichever inserted second reads the
        other's row). Claims are never deleted before they expire, so a lost race still uses the key up."""
        mine = f"{key}.{uuid.uuid4().hex[:16]}"
        row = {"pk": mine, "created": now_ms(), "record": {}, "v": _PLACEHOLDER}

        def write(c: MilvusClient) -> bool:
            self._ensure_records(c, collection)
            if c.query(collection, filter=f"pk like {quote(key + '.%')}", output_fields=["pk"], limit=1,
                       timeout=self.timeout, consistency_level="Strong"):
                return False  # claimed before: no need to add a row
            c.insert(collection, [row], timeout=self._wt)
            rows = c.query(collection, filter=f"pk like {quote(key + '.%')}", output_fields=["pk"], limit=16,
                           timeout=self.timeout, consistency_level="Strong")
            return [r["pk"] for r in rows] == [mine]

        return await self._run("claim_once", write, write=True)
