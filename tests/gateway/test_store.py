"""The store against both real backends: Milvus Lite and the real Milvus 2.3.5 server (from the wheel).

What they pin down:
- tenant-scoped reads find what was written (on 2.3.5 a tenant filter never found upserted rows);
- two stores on one server (two gateway replicas) cannot both create the same gallery or subject;
- orphan templates (no subject record of their generation) are never returned by search or verify;
- lists page past Milvus' 16,384 offset cap with cursors, without gaps or repeats;
- kill -9 of the server loses no acknowledged enrolment.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pymilvus import MilvusClient

from gateway.errors import ApiError
from gateway.metrics import Metrics
from gateway.store import MAX_QUERY_WINDOW, Store, template_collection
from localstack.milvus_server import MilvusServer

from .conftest import SERVER_STALENESS_S, SERVER_TIME_TICK_MS, unique

MODEL, VERSION = "face_embedder", "1"


def unit(rng: np.random.Generator, n: int, dim: int = 128) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def open_store(uri: str, timeout: float = 30) -> Store:
    return Store(uri, timeout=timeout, workers=4, metrics=Metrics(), retry_after=1,
                 bounded_staleness_s=SERVER_STALENESS_S)


@pytest.fixture(params=["lite", "server"])
def backend(request, tmp_path) -> str:
    """A Milvus URI: a fresh Lite file, or the session's server (tests use their own tenant there)."""
    if request.param == "lite":
        return str(tmp_path / "m.db")
    return request.getfixturevalue("milvus_server").uri


@pytest.fixture
def store(backend) -> Iterator[Store]:
    s = open_store(backend)
    yield s
    s.close()


def run(coro):
    return asyncio.run(coro)


def test_reads_find_every_write_scoped_by_tenant(store) -> None:
    """The issue's bug: on 2.3.5 rows upserted into the partition-key collection were never found by tenant."""
    tenant, rng = unique("t"), np.random.default_rng(0)
    vectors = unit(rng, 3)

    async def scenario() -> None:
        await store.create_gallery(tenant, "g", "sface", {"k": 1})
        await store.create_subject(tenant, "g", "alice", "Alice", {})
        await store.create_subject(tenant, "g", "bob", None, {})
        ids, _ = await store.add_templates(tenant, "g", "alice", MODEL, VERSION, vectors[:2], 8)
        await store.add_templates(tenant, "g", "bob", MODEL, VERSION, vectors[2:], 8)
        assert await store.gallery_counts(tenant, "g") == (2, 3)
        rows, total = await store.list_subjects(tenant, "g", 10, 0)
        assert total == 2 and sorted(r["subject"] for r in rows) == ["alice", "bob"]
        faces, total = await store.list_faces(tenant, "g", "alice", 10, 0)
        assert total == 2 and {f["face_id"] for f in faces} == set(ids)
        hits = await store.search(tenant, "g", MODEL, VERSION, vectors[0], 2, 8)
        assert [h.subject for h in hits] == ["alice", "bob"] and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
        assert len(await store.subject_templates(tenant, "g", "alice", MODEL, VERSION)) == 2
        changed = await store.update_subject(tenant, "g", "alice", {"name": "Alice B."})
        assert changed["name"] == "Alice B." and (await store.get_subject(tenant, "g", "alice"))["name"] == "Alice B."
        assert (await store.list_subjects(tenant, "g", 10, 0))[1] == 2  # the update added no row
        assert await store.search(unique("other"), "g", MODEL, VERSION, vectors[0], 2, 8) == []
        with pytest.raises(ApiError, match="already exists"):
            await store.create_subject(tenant, "g", "alice", None, {})
        templates, remaining = await store.delete_subject(tenant, "g", "alice")
        assert (templates, remaining) == (2, 0)
        assert [h.subject for h in await store.search(tenant, "g", MODEL, VERSION, vectors[0], 2, 8)] == ["bob"]
        with pytest.raises(ApiError) as err:
            await store.subject_templates(tenant, "g", "alice", MODEL, VERSION)
        assert err.value.code == "subject_not_found"
        # the same id again is a new subject: the old templates never come back
        await store.create_subject(tenant, "g", "alice", None, {})
        assert len(await store.subject_templates(tenant, "g", "alice", MODEL, VERSION)) == 0
        assert await store.delete_gallery(tenant, "g") == (2, 1, 0)
        with pytest.raises(ApiError) as err:
            await store.get_gallery(tenant, "g")
        assert err.value.code == "gallery_not_found"

    run(scenario())


def test_orphan_templates_are_never_returned(store) -> None:
    """A template written for an erased subject (a late enrolment on another replica) is ignored."""
    tenant, rng = unique("t"), np.random.default_rng(1)
    vectors = unit(rng, 2)

    async def scenario() -> None:
        await store.create_gallery(tenant, "g", "sface", {})
        await store.create_subject(tenant, "g", "alice", None, {})
        await store.add_templates(tenant, "g", "alice", MODEL, VERSION, vectors[:1], 8)
        # a template of a generation that has no record (what a racing enrolment leaves for an instant)
        orphan = {"face_id": "f" * 32, "tenant": tenant, "gallery": "g", "subject": "alice", "generation": "old",
                  "created": 0, "model": f"{MODEL}:{VERSION}", "vector": vectors[1].tolist()}
        store._insert(store._connect(), template_collection(MODEL, VERSION), [orphan])
        hits = await store.search(tenant, "g", MODEL, VERSION, vectors[1], 5, 8)
        assert [h.subject for h in hits] == ["alice"] and hits[0].face_id != "f" * 32
        assert len(await store.subject_templates(tenant, "g", "alice", MODEL, VERSION)) == 1
        assert (await store.list_faces(tenant, "g", "alice", 10, 0))[1] == 1

    run(scenario())


def test_lists_page_past_the_offset_cap_with_cursors(store) -> None:
    """On the server past the 16,384 cap; on Lite (a Python scan per page, ~2 min at that size) 3,000 rows
    show the same cursor code pages without gaps or repeats."""
    tenant, rng = unique("t"), np.random.default_rng(2)
    n = 3000 if store.lite else MAX_QUERY_WINDOW + 700
    names = [f"s{i:06d}" for i in rng.permutation(n)]

    async def scenario() -> None:
        await store.create_gallery(tenant, "g", "sface", {})
        vectors = unit(rng, n, 8)
        for start in range(0, n, 5000):
            rows = [{"face_id": f"f{i}", "tenant": tenant, "gallery": "g", "subject": names[i], "vector": v.tolist()}
                    for i, v in zip(range(start, min(start + 5000, n)), vectors[start:start + 5000], strict=False)]
            await asyncio.to_thread(store.bulk_insert_sync, rows, "tiny", "1", 8)
        seen: list[str] = []
        cursor, pages = None, 0
        while True:
            rows, total = await store.list_subjects(tenant, "g", 1000, 0, cursor)
            assert total == n
            seen += [r["subject"] for r in rows]
            pages += 1
            if len(rows) < 1000:
                break
            cursor = rows[-1]["pk"]
        assert len(seen) == n and set(seen) == set(names) and pages == n // 1000 + 1
        first, _ = await store.list_subjects(tenant, "g", 5, 0)
        second, _ = await store.list_subjects(tenant, "g", 5, 5)
        assert [r["pk"] for r in first + second] == sorted(r["pk"] for r in first + second)
        by_cursor, _ = await store.list_subjects(tenant, "g", 5, 0, first[-1]["pk"])
        assert [r["pk"] for r in by_cursor] == [r["pk"] for r in second]  # offsets and cursors agree

    run(scenario())


def test_two_replicas_cannot_both_create(milvus_server) -> None:
    """Two stores (two gateway replicas) on one server create the same ids at the same instant: one wins."""
    tenant = unique("t")
    stores = [open_store(milvus_server.uri) for _ in range(2)]
    try:
        async def both(make: Callable[[Store], object]) -> list[str]:
            outcomes = await asyncio.gather(*(make(s) for s in stores), return_exceptions=True)
            return sorted("ok" if isinstance(o, dict) else getattr(o, "code", repr(o)) for o in outcomes)

        async def scenario() -> None:
            for i in range(6):
                gallery = f"g{i}"
                assert await both(lambda s, g=gallery: s.create_gallery(tenant, g, "sface", {})) == ["conflict", "ok"]
                assert await both(lambda s, g=gallery: s.create_subject(tenant, g, "x", None, {})) == \
                    ["conflict", "ok"]
                assert (await stores[0].list_subjects(tenant, gallery, 10, 0))[1] == 1

        run(scenario())
    finally:
        for s in stores:
            s.close()


def test_kill_9_of_the_server_loses_no_acknowledged_enrolment(tmp_path: Path) -> None:
    """Enrolments run concurrently; the server is killed mid-stream, restarted, and every acknowledged
    template is read back (Strong)."""
    server = MilvusServer(tmp_path / "milvus", graceful_ms=1000, time_tick_ms=SERVER_TIME_TICK_MS).start()
    acknowledged: list[str] = []
    lock = threading.Lock()
    try:
        store = open_store(server.uri, timeout=5)
        rng = np.random.default_rng(3)

        async def setup() -> None:
            await store.create_gallery("t", "g", "sface", {})
            for i in range(8):
                await store.create_subject("t", "g", f"s{i}", None, {})

        run(setup())
        stop = threading.Event()

        def enrol_loop(worker: int) -> None:
            async def loop() -> None:
                i = 0
                while not stop.is_set():
                    subject = f"s{(worker + i) % 8}"
                    try:
                        ids, _ = await store.add_templates("t", "g", subject, MODEL, VERSION, unit(rng, 1), 10_000)
                    except ApiError:
                        await asyncio.sleep(0.1)  # the server is down: not acknowledged
                        continue
                    with lock:
                        acknowledged.extend(ids)
                    i += 1

            asyncio.run(loop())

        threads = [threading.Thread(target=enrol_loop, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()  # mid-stream: enrolments are in flight
        stop.set()
        for t in threads:
            t.join(120)
        store.close()
        assert len(acknowledged) >= 40
        server.start()
        client = MilvusClient(server.uri, timeout=30)
        name = template_collection(MODEL, VERSION)
        client.load_collection(name, timeout=120)
        found = set()
        for start in range(0, len(acknowledged), 500):
            batch = acknowledged[start:start + 500]
            found |= {r["face_id"] for r in client.get(name, ids=batch, output_fields=["face_id"],
                                                         consistency_level="Strong", timeout=30)}
        client.close()
        assert set(acknowledged) <= found, f"lost {len(set(acknowledged) - found)} of {len(acknowledged)}"
    finally:
        server.stop()
