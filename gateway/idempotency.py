"""Idempotency-Key on writes: a retried enrolment, creation or erasure is answered, not done again.

A client whose write timed out or lost its connection cannot know whether it happened. It sends the
same `Idempotency-Key` header again: if the first attempt succeeded, the gateway returns the first
answer (status, body, Location) with `Idempotent-Replayed: true` and does nothing; the same key with a
different request (another body, path or method) is `409 idempotency_conflict`; a key whose first
attempt failed (any error) is free to be tried again, since nothing is remembered for it.

Answers are kept in Milvus (collection `facestack_idempotency`, keyed by a digest of tenant and key), so
they survive a restart and every replica sees them; they are replayed for
FACESTACK_GATEWAY_IDEMPOTENCY_TTL_S seconds and purged after that. Keys are scoped by tenant.

Concurrent attempts with one key are serialised within a replica (the second waits, then replays).
Two replicas receiving the same key at the same instant can both do the work (Milvus has no
compare-and-set); a client retries after a timeout, when the first attempt has finished.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gateway.errors import ApiError
from gateway.store import Store, now_ms, record_key

log = logging.getLogger("gateway")
COLLECTION = "facestack_idempotency"
HEADER = "Idempotency-Key"
KEY_RULE = "1-255 visible ASCII characters"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
MAX_RECORD_BYTES = 60_000  # below Milvus' 64 KiB JSON field; a larger answer is not kept (logged)
PURGE_EVERY_S = 3600.0


def fingerprint(method: str, path: str, parts: tuple[bytes, ...]) -> str:
    digest = hashlib.sha256(f"{method} {path}".encode())
    for part in parts:  # length-prefixed, so parts cannot run into each other
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass
class Claim:
    """What a write route does with its key: return `replay` when set, else do the work and `keep` the answer."""

    replay: JSONResponse | None = None
    answer: dict[str, Any] | None = field(default=None, repr=False)

    def keep(self, status: int, model: type[BaseModel], body: dict, headers: dict[str, str] | None = None) -> None:
        self.answer = {"status": status, "body": model.model_validate(body).model_dump(mode="json"),
                       "headers": headers or {}}


class Idempotency:
    def __init__(self, store: Store, ttl_s: int) -> None:
        self.store = store
        self.ttl_ms = ttl_s * 1000
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # key digest -> (lock, holders and waiters)
        self._purged = time.monotonic()

    @asynccontextmanager
    async def claim(self, request: Request, tenant: str, *parts: bytes) -> AsyncIterator[Claim]:
        """`async with idempotency.claim(request, tenant, body parts...) as claim:` around a write. Without the
        header this does nothing. The parts are what identifies the request beyond method and path (the
        parsed body: not its raw bytes, which differ between two multipart encodings of the same request)."""
        key = request.headers.get(HEADER)
        if key is None:
            yield Claim()
            return
        if not _KEY.match(key):
            raise ApiError("validation_error", f"the {HEADER} header must be {KEY_RULE}")
        digest = record_key(tenant, key)
        expected = fingerprint(request.method, request.url.path, parts)
        async with self._lock(digest):
            found = await self.store.get_record(COLLECTION, digest)
            record = found["record"] if found and found["created"] >= now_ms() - self.ttl_ms else None
            if record is not None and record.get("tenant") == tenant:
                if record["fingerprint"] != expected:
                    raise ApiError("idempotency_conflict", f"this {HEADER} was used with a different request "
                                   f"({record['method']} {record['path']}); use a new key for a new request")
                answer = record["answer"]
                yield Claim(replay=JSONResponse(answer["body"], status_code=answer["status"],
                                                headers={**answer["headers"], "Idempotent-Replayed": "true"}))
                return
            claim = Claim()
            yield claim
            if claim.answer is not None:
                await self._remember(digest, {"tenant": tenant, "fingerprint": expected, "method": request.method,
                                              "path": request.url.path, "answer": claim.answer})

    async def _remember(self, digest: str, record: dict[str, Any]) -> None:
        # The work is done and answered: a failure to remember it is logged, not turned into an error.
        if len(json.dumps(record)) > MAX_RECORD_BYTES:
            log.warning("idempotency: answer for %s %s too large to keep", record["method"], record["path"])
            return
        try:
            await self.store.put_record(COLLECTION, digest, record)
            if time.monotonic() - self._purged > PURGE_EVERY_S:
                self._purged = time.monotonic()
                await self.store.purge_records(COLLECTION, now_ms() - self.ttl_ms)
        except ApiError as exc:
            log.warning("idempotency: could not keep the answer of %s %s: %s", record["method"], record["path"],
                        exc.detail)

    @asynccontextmanager
    async def _lock(self, digest: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(digest, (asyncio.Lock(), 0))
        self._locks[digest] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[digest]
            if users == 1:
                del self._locks[digest]
            else:
                self._locks[digest] = (lock, users - 1)


def claim(request: Request, tenant: str, *parts: bytes) -> Any:
    """The app's Idempotency.claim (see above)."""
    return request.app.state.idempotency.claim(request, tenant, *parts)
