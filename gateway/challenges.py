"""Liveness challenges kept in Milvus, so that every gateway replica sees them and each is used once.

Collections (the keyed-record layout of gateway/idempotency.py: pk, created, record JSON):
- `facestack_liveness_challenges`: the issued challenge (tenant, actions, nonce digest, deadline) under
  a digest of (tenant, id), and after its frames were judged the result (decision, and for `live` the first
  frame's embedding and model, so that a verify bound to it can check it is the same person) under a digest
  of (tenant, id, "result").
- `facestack_liveness_claims`: single-use claims (Store.claim_once): one key for the frames submission, one
  for the verify that consumes a passed challenge.

Two replicas racing on one challenge (the same frames sent twice at the same instant): at most one judges
it; both may be refused (`challenge_used`, 409), never both judged. Any attempt, won or lost, uses the
challenge up. Records and claims are purged after FACESTACK_GATEWAY_LIVENESS_RESULT_TTL_S.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

import numpy as np

from gateway.errors import ApiError
from gateway.store import Store, now_ms, record_key

CHALLENGES = "facestack_liveness_challenges"
CLAIMS = "facestack_liveness_claims"
PURGE_EVERY_S = 3600.0


def _nonce_digest(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


@dataclass(frozen=True)
class Challenge:
    id: str
    tenant: str
    actions: list[str]
    issued_ms: int
    deadline_ms: int
    nonce: str = ""  # only when just issued: it is stored as a digest


@dataclass(frozen=True)
class Result:
    decision: str
    reason: str
    judged_ms: int
    model: str | None  # "face_embedder:1" for a live result
    embedding: np.ndarray | None


class Challenges:
    def __init__(self, store: Store, *, deadline_s: float, result_ttl_s: float) -> None:
        self.store = store
        self.deadline_ms = int(deadline_s * 1000)
        self.result_ttl_ms = int(result_ttl_s * 1000)
        self._purged = time.monotonic()

    async def issue(self, tenant: str, actions: list[str]) -> Challenge:
        now = now_ms()
        challenge = Challenge(uuid.uuid4().hex, tenant, actions, now, now + self.deadline_ms,
                              secrets.token_urlsafe(16))
        await self.store.put_record(CHALLENGES, record_key(tenant, challenge.id), {
            "tenant": tenant, "actions": actions, "issued": now, "deadline": challenge.deadline_ms,
            "nonce": _nonce_digest(challenge.nonce)})
        if time.monotonic() - self._purged > PURGE_EVERY_S:
            self._purged = time.monotonic()
            before = now - self.deadline_ms - self.result_ttl_ms
            await self.store.purge_records(CHALLENGES, before)
            await self.store.purge_records(CLAIMS, before)
        return challenge

    async def get(self, tenant: str, challenge_id: str, nonce: str) -> Challenge:
        """The challenge, if this tenant issued it and the nonce is its own; else challenge_not_found (the
        same answer for a wrong nonce: an id alone, seen in a log, is not enough to answer a challenge)."""
        found = await self.store.get_record(CHALLENGES, record_key(tenant, challenge_id))
        record = found["record"] if found else None
        if not record or record.get("tenant") != tenant or not hmac.compare_digest(
                record.get("nonce", ""), _nonce_digest(nonce)):
            raise ApiError("challenge_not_found", f"no challenge {challenge_id!r} with this nonce for this API "
                           "key's tenant")
        return Challenge(challenge_id, tenant, list(record["actions"]), int(record["issued"]),
                         int(record["deadline"]))

    async def claim(self, tenant: str, challenge_id: str, purpose: str) -> bool:
        """Use the challenge for `purpose` ("frames" or "verify") once: True the first time."""
        return await self.store.claim_once(CLAIMS, record_key(tenant, challenge_id, purpose))

    async def keep_result(self, challenge: Challenge, decision: str, reason: str, model: str | None = None,
                          embedding: np.ndarray | None = None) -> None:
        record = {"tenant": challenge.tenant, "decision": decision, "reason": reason, "judged": now_ms()}
        if embedding is not None:
            record.update(model=model, embedding=[round(float(v), 6) for v in embedding])
        await self.store.put_record(CHALLENGES, record_key(challenge.tenant, challenge.id, "result"), record)

    async def result(self, tenant: str, challenge_id: str) -> Result | None:
        """The judged result, while it is fresh enough to bind a verify; None if unknown, unjudged or stale."""
        found = await self.store.get_record(CHALLENGES, record_key(tenant, challenge_id, "result"))
        record = found["record"] if found else None
        if not record or record.get("tenant") != tenant or now_ms() - int(record["judged"]) > self.result_ttl_ms:
            return None
        embedding = np.asarray(record["embedding"], np.float32) if record.get("embedding") else None
        return Result(record["decision"], record["reason"], int(record["judged"]), record.get("model"), embedding)

    async def bind(self, tenant: str, challenge_id: str, model: str, embedding: np.ndarray,
                   threshold: float) -> dict:
        """Verify's `liveness_challenge`: the challenge passed, is fresh, binds one verify only, and its person
        is the probe's (cosine to its first frame >= the identity threshold). Anything else: liveness_failed."""
        def failed(why: str) -> ApiError:
            return ApiError("liveness_failed", f"liveness challenge {challenge_id!r}: {why}", check="challenge",
                            challenge_id=challenge_id)

        result = await self.result(tenant, challenge_id)
        if result is None:
            raise failed("unknown, not answered, or its result has expired")
        if result.decision != "live" or result.embedding is None:
            raise failed(f"did not pass ({result.decision}: {result.reason})")
        if result.model != model:
            raise failed(f"judged with {result.model}, whose embeddings cannot be compared with {model}'s")
        similarity = float(np.clip(np.dot(embedding, result.embedding), -1.0, 1.0))
        if similarity < threshold:
            raise failed(f"the probe is not the person who passed it (similarity {similarity:.3f} < {threshold:g})")
        if not await self.claim(tenant, challenge_id, "verify"):
            raise failed("already used by another verify")
        return {"status": "passed", "challenge_id": challenge_id, "similarity": round(similarity, 6),
                "threshold": threshold}
