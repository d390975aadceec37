"""Append-only audit trail: one JSON line per decision, enrolment and erasure. Never an image or a template.

Each line carries `prev`, the SHA-256 of the line before it, so a removed or edited line breaks the chain
(`verify_chain` checks a file). The file is opened in append mode and each event is one write(), so lines
from concurrent requests never interleave; a kill -9 loses nothing that was written (page cache), a power
loss may lose the last lines (no fsync per event: it would cost milliseconds per request).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

# Fields an event may carry; anything else is dropped, so a template can never slip in by accident.
FIELDS = ("operation", "tenant", "key_id", "gallery", "subject", "face_ids", "similarity", "threshold",
          "operating_point", "decision", "model", "faces", "templates_deleted", "subjects_deleted", "receipt_id",
          "request_id", "outcome")
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
    def __init__(self, target: str | Path) -> None:
        self._lock = threading.Lock()
        self.path: Path | None = None
        if str(target) == "-":
            self._file: TextIO = sys.stdout
            self._prev = GENESIS
        else:
            self.path = Path(target)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            last = _last_line(self.path)
            self._prev = hashlib.sha256(last.encode()).hexdigest() if last else GENESIS
            self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives with the app

    def write(self, operation: str, **fields: Any) -> dict[str, Any]:
        event = {"time": _now(), "operation": operation}
        event.update({k: v for k, v in fields.items() if k in FIELDS and v is not None})
        with self._lock:
            event["prev"] = self._prev
            line = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
            self._file.write(line + "\n")
            self._file.flush()
            self._prev = hashlib.sha256(line.encode()).hexdigest()
        return event

    def close(self) -> None:
        if self.path is not None:
            self._file.close()


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
