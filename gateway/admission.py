"""Admission control for the blocking Milvus client: a bounded thread pool that sheds load.

The store runs every pymilvus call in a worker thread. A plain ThreadPoolExecutor queues without limit,
and a request that gave up (its deadline passed) leaves its call running or waiting there: under a slow
Milvus the backlog outlives its requests and every later call, the readiness ping included, waits behind
it. `AdmissionPool` admits at most `workers + queue` calls; a call keeps its place until its thread has
finished (not until its request gave up), so abandoned work still counts against the bound. Beyond the
bound a call is refused at once with 503 `backend_unavailable` and Retry-After. Health checks get a lane
of their own (`lane`), so a saturated pool cannot make a pod look unready while Milvus itself answers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from gateway.errors import ApiError
from gateway.metrics import Metrics

T = TypeVar("T")
HEALTH_OPERATIONS = frozenset({"ping"})


class AdmissionPool(ThreadPoolExecutor):
    def __init__(self, workers: int, queue: int, *, retry_after: int, metrics: Metrics | None = None,
                 name: str = "milvus", health_lane: bool = True) -> None:
        super().__init__(max_workers=workers, thread_name_prefix=name)
        self.capacity = workers + max(queue, 0)
        self.retry_after = retry_after
        self.metrics = metrics
        self._lock = threading.Lock()
        self._admitted = 0
        self._health = AdmissionPool(1, 1, retry_after=retry_after, name=f"{name}-health",
                                     health_lane=False) if health_lane else None

    @property
    def admitted(self) -> int:
        """Calls running or waiting (including those whose request has already given up)."""
        return self._admitted

    def lane(self, operation: str) -> AdmissionPool:
        """The pool for this operation: health checks have their own one-thread lane."""
        return self._health if self._health is not None and operation in HEALTH_OPERATIONS else self

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            if self._admitted >= self.capacity:
                if self.metrics is not None:
                    self.metrics.rejected.labels("milvus_queue").inc()
                raise ApiError("backend_unavailable", f"Milvus is at capacity: {self._admitted} calls running or "
                               f"waiting (at most {self.capacity})", retry_after=self.retry_after)
            self._admitted += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)
        return future

    def _release(self, _: object = None) -> None:
        with self._lock:
            self._admitted -= 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._health is not None:
            self._health.shutdown(wait=wait, cancel_futures=cancel_futures)
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
