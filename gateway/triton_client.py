"""The one call per image to Triton's `face_pipeline` (gRPC, asyncio), behind a bulkhead.

Transport only (channel, bulkhead, retry, errors as ApiError): the tensors, the request and the answer are
facestack.triton.contract's. The bulkhead bounds calls in flight (Triton's CPU is the bottleneck: more
concurrency only queues inside Triton) and the number waiting; past that the gateway answers 429 at once
instead of letting latency grow without bound.

Balancing over several Triton pods (docs/helm.md): the target may name several addresses (a headless
Service as `dns:///triton.ns.svc.cluster.local:8001`, or `ipv4:10.0.0.1:8001,10.0.0.2:8001`); the channel
spreads calls over all of them (`round_robin`) and skips an unreachable one. gRPC resolves DNS again only
when a connection breaks, so the channel is replaced every `channel_max_age` seconds (a fresh resolution:
new pods get traffic); calls in flight finish on the old one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from facestack.triton.contract import MODEL, Analysis, Served, build_request, image_error, parse_result
from gateway.errors import ApiError
from gateway.metrics import Metrics
from gateway.timing import record

log = logging.getLogger("gateway")

class Bulkhead:
    """At most `limit` holders; at most `queue` waiters; anyone beyond gets rate_limited (429)."""

    def __init__(self, limit: int, queue: int, retry_after: int, metrics: Metrics, wait_timeout: float) -> None:
        self._sem = asyncio.Semaphore(limit)
        self.wait_timeout = wait_timeout
        self.queue = queue
        self.retry_after = retry_after
        self.waiting = 0
        self._metrics = metrics

    async def acquire(self) -> None:
        if self._sem.locked() and self.waiting >= self.queue:
            self._metrics.rejected.labels("triton_queue_full").inc()
            raise ApiError("rate_limited", f"{self.waiting} requests are already waiting for the face pipeline",
                           retry_after=self.retry_after)
        if not self._sem.locked():  # fast path: a free slot, no task for wait_for to schedule
            await self._sem.acquire()
            self._metrics.triton_inflight.inc()
            return
        self.waiting += 1
        self._metrics.triton_waiting.inc()
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self._sem.acquire(), self.wait_timeout)
        except TimeoutError:
            raise ApiError("timeout", f"no face pipeline slot within {self.wait_timeout:g} s") from None
        finally:
            self.waiting -= 1
            self._metrics.triton_waiting.dec()
            record("queue", started, time.perf_counter())
        self._metrics.triton_inflight.inc()

    def release(self) -> None:
        self._sem.release()
        self._metrics.triton_inflight.dec()


def channel_args() -> list[tuple[str, int | str]]:
    """gRPC channel options: round_robin over every resolved address, large messages, keepalive, and a reconnect
    backoff capped at 2 s (gRPC's default grows to 120 s): a restarted Triton is back within a readiness period."""
    return [("grpc.lb_policy_name", "round_robin"),
            ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000)]


def resolve_endpoints(target: str) -> list[str]:
    """The addresses a gRPC target names: `ipv4:`/`ipv6:` lists as given, `unix:` as one, and `dns:///host:port`
    or `host:port` by a DNS lookup (as the channel's resolver does). Empty when the name does not resolve."""
    scheme, _, rest = target.partition(":")
    if scheme in ("ipv4", "ipv6"):
        return [a for a in rest.split(",") if a]
    if scheme in ("unix", "unix-abstract"):
        return [target]
    if scheme == "dns":
        target = rest.lstrip("/").split("/", 1)[-1] if rest.startswith("//") else rest
    host, _, port = target.rpartition(":")
    host = host.strip("[]") or target
    try:
        infos = socket.getaddrinfo(host, port or None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({f"{info[4][0]}:{info[4][1]}" for info in infos})


class TritonPipeline:
    def __init__(self, url: str, *, timeout: float, concurrency: int, queue: int, retry_after: int,
                 backend_retry_after: int, metrics: Metrics, channel_max_age: float = 0.0) -> None:
        self.url = url
        self.timeout = timeout
        self.channel_max_age = channel_max_age
        self.backend_retry_after = backend_retry_after
        self.metrics = metrics
        self.bulkhead = Bulkhead(concurrency, queue, retry_after, metrics, timeout)
        self._client: grpcclient.InferenceServerClient | None = None
        self._served: Served | None = None  # learnt from the model config on first use
        self._tasks: set[asyncio.Task[None]] = set()
        self._retired: list[grpcclient.InferenceServerClient] = []  # replaced channels still finishing calls

    async def start(self) -> None:
        # Lazy channel: Triton may come up later.
        await self._open()
        if self.channel_max_age > 0:
            self._spawn(self._renew_channels())

    async def _open(self) -> None:
        """A new channel (a fresh name resolution), and the endpoints gauge from the same resolution."""
        endpoints = await asyncio.to_thread(resolve_endpoints, self.url)
        self.metrics.triton_endpoints.set(len(endpoints))
        old, self._client = self._client, grpcclient.InferenceServerClient(self.url, channel_args=channel_args())
        if old is not None:
            self._retired.append(old)
            self._spawn(self._close_later(old))

    async def _renew_channels(self) -> None:
        while True:
            await asyncio.sleep(self.channel_max_age)
            try:
                await self._open()
            except Exception:  # noqa: BLE001 - a failed renewal keeps the current channel
                log.exception("could not renew the Triton channel")

    async def _close_later(self, client: grpcclient.InferenceServerClient) -> None:
        await asyncio.sleep(self.timeout + 1)  # every call on it has met its deadline by then
        self._retired.remove(client)
        await client.close()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in [*self._retired, *([self._client] if self._client is not None else [])]:
            await client.close()
        self._retired.clear()
        self._client = None

    @property
    def client(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            raise ApiError("backend_unavailable", "the Triton client is not started",
                           retry_after=self.backend_retry_after)
        return self._client

    async def ready(self, timeout: float = 2.0) -> bool:
        try:
            return bool(await self.client.is_model_ready(MODEL, client_timeout=timeout))
        except (InferenceServerException, ApiError):
            return False

    async def _served_config(self) -> Served:
        if self._served is None:
            config = await self.client.get_model_config(MODEL, as_json=True, client_timeout=self.timeout)
            self._served = Served.from_config(config)
        return self._served

    def _error(self, exc: InferenceServerException) -> ApiError:
        status, message = exc.status() or "", exc.message() or str(exc)
        refused = image_error(message)
        if refused:
            code, detail = refused
            return ApiError({"invalid_argument": "validation_error"}.get(code, code), detail)
        if "DEADLINE_EXCEEDED" in status:
            return ApiError("timeout", f"the face pipeline did not answer within {self.timeout:g} s")
        if "RESOURCE_EXHAUSTED" in status:
            return ApiError("rate_limited", "the face pipeline's queue is full", retry_after=self.bulkhead.retry_after)
        log.warning("triton error %s: %s", status, message)
        return ApiError("backend_unavailable", f"face pipeline: {message[:200]}", retry_after=self.backend_retry_after)

    async def analyze(self, image: bytes, *, embedder: str, max_faces: int = 16, request_id: str = "") -> Analysis:
        """Detect, align and embed every face of one encoded image (largest first)."""
        await self.bulkhead.acquire()
        started = time.perf_counter()
        outcome = "error"
        try:
            for attempt in (1, 2):  # inference is idempotent: one retry when Triton is briefly unreachable
                try:
                    inputs, outputs = build_request(grpcclient, image, embedder=embedder, max_faces=max_faces,
                                                    served=await self._served_config())
                    result = await self.client.infer(MODEL, inputs, outputs=outputs, request_id=request_id,
                                                     client_timeout=self.timeout)
                    break
                except InferenceServerException as exc:
                    if attempt == 1 and "UNAVAILABLE" in (exc.status() or ""):
                        await asyncio.sleep(0.2)
                        continue
                    error = self._error(exc)
                    outcome = error.code
                    raise error from None
            outcome = "ok"
        finally:
            elapsed = time.perf_counter() - started
            self.bulkhead.release()
            self.metrics.triton.labels(outcome).observe(elapsed)
            record("triton", started, started + elapsed)
        return parse_result(result, embedder)
