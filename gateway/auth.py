"""API keys: `X-API-Key` -> (key id, tenant, scopes). Keys are stored and compared only as hashes.

Keys come from FACESTACK_API_KEYS_FILE (JSON, e.g. a mounted Kubernetes Secret) and/or FACESTACK_API_KEY
(one all-scopes key for tenant "default"). Keys are 256-bit random tokens, so a plain SHA-256 is the
right hash (a slow password hash protects guessable secrets; these are not guessable). FACESTACK_API_KEY
must look like one: the gateway refuses to start with a short or low-entropy value (`weak_key_reason`).

The keys file is re-read when it changes (checked at most every FACESTACK_GATEWAY_KEYS_RELOAD_S seconds,
when a request arrives): a Kubernetes Secret mounted as a volume is updated in place, so a revoked key
stops working and a new one starts working without a restart. A file that fails to parse is logged and the
previous keys stay in force.

    python -m gateway.auth new --tenant acme --scopes verify,enrol   # mint a key and its file record
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from gateway.errors import ApiError
from gateway.schemas import ID_RULE, valid_id

log = logging.getLogger("gateway")
SCOPES = ("verify", "enrol", "admin")  # admin implies the others
DEFAULT_TENANT = "default"
MIN_KEY_LENGTH = 32
MIN_KEY_BITS = 96  # estimated from the key's own characters: 32 random hex digits give ~120


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "fs_" + secrets.token_urlsafe(32)


class KeyConfigError(ValueError):
    pass


def weak_key_reason(key: str) -> str | None:
    """Why `key` is too weak to be an all-scopes API key (too short, or too few bits of entropy by the
    Shannon estimate of its own characters: repeats and small alphabets score low), else None."""
    if len(key) < MIN_KEY_LENGTH:
        return f"it has {len(key)} characters; at least {MIN_KEY_LENGTH} are required"
    bits = -sum(n * math.log2(n / len(key)) for n in Counter(key).values())
    if bits < MIN_KEY_BITS:
        return f"its characters carry about {bits:.0f} bits of entropy; at least {MIN_KEY_BITS} are required"
    return None


def check_env_key(key: str) -> None:
    """Refuse a weak FACESTACK_API_KEY at start-up, saying how to make a good one."""
    if reason := weak_key_reason(key):
        raise KeyConfigError(f"FACESTACK_API_KEY is too weak: {reason}. Use a random key, e.g. "
                             "`python -m gateway.auth new --tenant default` or `openssl rand -base64 32`")


class KeyStore:
    def __init__(self, records: Iterable[tuple[str, Principal]] = ()) -> None:
        self._by_hash: dict[str, Principal] = {}
        for digest, principal in records:
            self.add(digest, principal)

    def add(self, digest: str, principal: Principal) -> None:
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise KeyConfigError(f"key {principal.key_id!r}: hash must be 'sha256:' + 64 hex digits")
        unknown = principal.scopes - set(SCOPES)
        if unknown or not principal.scopes:
            raise KeyConfigError(f"key {principal.key_id!r}: scopes must be a non-empty subset of {SCOPES}")
        if not valid_id(principal.tenant):
            raise KeyConfigError(f"key {principal.key_id!r}: tenant must be {ID_RULE}")
        self._by_hash[digest.lower()] = principal

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, key: str) -> Principal | None:
        # A dict lookup on the digest: timing reveals nothing about the key itself.
        return self._by_hash.get(hash_key(key))

    @classmethod
    def load(cls, *, api_key: str | None, keys_file: Path | None) -> KeyStore:
        store = cls()
        if keys_file is not None:
            try:
                raw = json.loads(Path(keys_file).read_text())
            except (OSError, ValueError) as exc:
                raise KeyConfigError(f"cannot read API keys file {keys_file}: {exc}") from exc
            entries = raw.get("keys", []) if isinstance(raw, dict) else raw
            for i, entry in enumerate(entries):
                try:
                    principal = Principal(str(entry["id"]), str(entry["tenant"]), frozenset(entry["scopes"]))
                    store.add(str(entry["hash"]), principal)
                except (KeyError, TypeError) as exc:
                    raise KeyConfigError(f"{keys_file}: entry {i} needs id, tenant, scopes, hash ({exc})") from exc
                except ValueError as exc:
                    raise KeyConfigError(f"{keys_file}: {exc}") from exc
        if api_key:
            store.add(hash_key(api_key), Principal("env", DEFAULT_TENANT, frozenset(SCOPES)))
        return store


class LiveKeys:
    """KeyStore.load(api_key, keys_file), loaded again when the file changes (its inode, size or mtime: a
    mounted Secret is swapped through a symlink, an edited file changes in place)."""

    def __init__(self, *, api_key: str | None, keys_file: Path | None, check_interval: float) -> None:
        self._api_key = api_key
        self._file = keys_file
        self._interval = check_interval
        self._stamp = self._file_stamp()
        self._store = KeyStore.load(api_key=api_key, keys_file=keys_file)
        self._checked = time.monotonic()

    def _file_stamp(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self._file) if self._file is not None else None
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) if st is not None else None

    def __len__(self) -> int:
        return len(self._store)

    def lookup(self, key: str) -> Principal | None:
        self.refresh()
        return self._store.lookup(key)

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._file is None or not force and (self._interval <= 0 or now - self._checked < self._interval):
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp  # a broken file is reported once, and read again when it changes again
        try:
            store = KeyStore.load(api_key=self._api_key, keys_file=self._file)
        except KeyConfigError as exc:
            log.error("API keys file changed but cannot be used; the previous keys stay in force: %s", exc)
            return
        if not len(store):
            log.error("API keys file changed and holds no keys; the previous keys stay in force")
            return
        self._store = store
        log.info("API keys reloaded from %s: %d key(s)", self._file, len(store))


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller's Principal, or 401, 429 (the key's rate limit) or 403.
    Runs before the body of an image request is read."""

    async def dependency(request: Request) -> Principal:  # async: a sync dependency costs a thread hop
        key = request.headers.get("x-api-key")
        principal = request.app.state.keys.lookup(key) if key else None
        if principal is None:
            raise ApiError("unauthorized", "send a valid API key in the X-API-Key header")
        request.state.principal = principal
        limiter = request.app.state.limiter
        wait = limiter.take((principal.tenant, principal.key_id))
        if wait:
            request.app.state.services.metrics.rejected.labels("key_rate_limit").inc()
            raise ApiError("rate_limited", f"this API key sent more than {limiter.rate:g} requests/s "
                           f"(burst {limiter.burst})", retry_after=limiter.retry_after(wait))
        if not principal.allows(scope):
            raise ApiError("forbidden", f"this operation needs the {scope!r} scope; the key has "
                           f"{sorted(principal.scopes)}")
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


# Route parameters: `principal: VerifyKey` etc.
VerifyKey = Annotated[Principal, Depends(require("verify"))]
EnrolKey = Annotated[Principal, Depends(require("enrol"))]
AdminKey = Annotated[Principal, Depends(require("admin"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.auth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="mint a key; prints the key once and the record for the keys file")
    new.add_argument("--tenant", required=True)
    new.add_argument("--scopes", default="verify,enrol", help=f"comma-separated subset of {SCOPES}")
    new.add_argument("--id", default=None, help="key id recorded in the audit log (default: random)")
    args = parser.parse_args(argv)
    key = new_key()
    record = {"id": args.id or f"key-{secrets.token_hex(4)}", "tenant": args.tenant,
              "scopes": [s for s in args.scopes.split(",") if s], "hash": hash_key(key)}
    KeyStore([(record["hash"], Principal(record["id"], record["tenant"], frozenset(record["scopes"])))])  # validates
    print(f"key (shown once, give it to the client): {key}", file=sys.stderr)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
