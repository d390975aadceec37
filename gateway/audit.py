"""Append-only audit trail: one JSON line per decision, enrolment and erasure. Never an image or a template.

Each line carries `prev`, the SHA-256 of the line before it, so a removed or edited line breaks the chain
(`verify_chain` checks a file). The file is opened in append mode and each event is one write(), so lines
from concurrent requests never interleave; a kill -9 loses nothing that was written (page cache), a power
loss may lose the last lines (no fsync per event: it would cost milliseconds per request).

Nothing happens unaudited. If an append fails (disk full, file system read-only, the file gone bad), a
partly written line is cut off again, the chain stays intact, and `write` raises `audit_unavailable` (503
with Retry-After): the request fails. A change to stored data is announced first (`outcome: "started"`,
written before the store is touched), so a failing log stops the change before it happens; if the log
fails after the change, the "started" line records it and the request still fails.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import ApiError

log = logging.getLogger("gateway")
# Fields an event may carry; anything else is dropped, so a template can never slip in by accident.
FIELDS = ("operation", "tenant", "key_id", "gallery", "subject", "face_ids", "similarity", "threshold",
          "operating_point", "fpir", "templates", "decision", "model", "faces", "templates_deleted",
          "subjects_deleted", "receipt_id", "request_id", "outcome", "challenge_id", "reason", "actions", "pad_score",
          "liveness", "pose_source")
GENESIS = "0" * 64


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _last_line(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    return lines[-1].decode() if lines else None


class AuditLog:
    def __init__(self, target: str | Path, *, retry_after: int = 5) -> None:
        self._lock = threading.Lock()
        self.retry_after = retry_after
        self.path: Path | None = None
        if str(target) == "-":
            self._fd = 1  # stdout
            self._prev = GENESIS
        else:
            self.path = Path(target)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            last = _last_line(self.path) if not self.path.exists() or self.path.is_file() else None
            self._prev = hashlib.sha256(last.encode()).hexdigest() if last else GENESIS
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def write(self, operation: str, **fields: Any) -> dict[str, Any]:
        """Append one event; raises ApiError("audit_unavailable") when it cannot be written."""
        event = {"time": _now(), "operation": operation}
        event.update({k: v for k, v in fields.items() if k in FIELDS and v is not None})
        with self._lock:
            event["prev"] = self._prev
            line = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
            self._append((line + "\n").encode())
            self._prev = hashlib.sha256(line.encode()).hexdigest()
        return event

    def _append(self, data: bytes) -> None:
        size = self._size()
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write: {written} of {len(data)} bytes")
        except OSError as exc:
            if size is not None:  # cut a partial line off again, so the chain stays readable
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, size)
            log.error("audit log %s cannot be written (%s): the request fails", self.path or "stdout", exc)
            raise ApiError("audit_unavailable", "the audit log cannot be written, so the request fails; retry later",
                           retry_after=self.retry_after) from None

    def _size(self) -> int | None:
        try:
            return os.fstat(self._fd).st_size if self.path is not None else None
        except OSError:
            return None

    def close(self) -> None:
        if self.path is not None:
            os.close(self._fd)


def verify_chain(path: Path) -> int:
    """Number of events in an intact file; raises ValueError at the first broken link."""
    prev = GENESIS
    count = 0
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if json.loads(line).get("prev") != prev:
            raise ValueError(f"audit chain broken at line {n}")
        prev = hashlib.sha256(line.encode()).hexdigest()
        count += 1
    return count
