"""Prometheus metrics (one registry per app, so tests and several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets from 1 ms to 30 s: CPU inference sits at tens to hundreds of ms.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 1.5, 2.5, 5.0,
            10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("facestack_http_requests_total", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("facestack_http_request_duration_seconds", "HTTP request latency",
                                 ["route", "method"], buckets=_BUCKETS, registry=r)
        self.triton = Histogram("facestack_triton_request_duration_seconds", "face_pipeline call latency "
                                "(queue wait excluded)", ["outcome"], buckets=_BUCKETS, registry=r)
        self.triton_inflight = Gauge("facestack_triton_inflight", "face_pipeline calls in flight", registry=r)
        self.triton_waiting = Gauge("facestack_triton_waiting", "face_pipeline calls waiting for a slot", registry=r)
        self.triton_endpoints = Gauge("facestack_triton_endpoints", "Triton addresses the gRPC channel spreads calls "
                                      "over (its target's last name resolution)", registry=r)
        self.milvus = Histogram("facestack_milvus_request_duration_seconds", "Milvus operation latency",
                                ["operation", "outcome"], buckets=_BUCKETS, registry=r)
        self.faces = Histogram("facestack_faces_per_image", "faces found per image", ["route"],
                               buckets=(0, 1, 2, 3, 5, 8, 13, 21, 34, 64), registry=r)
        self.decisions = Counter("facestack_decisions_total", "verify and identify decisions by outcome",
                                 ["operation", "decision"], registry=r)
        self.rejected = Counter("facestack_rejected_total", "requests refused by load shedding", ["reason"],
                                registry=r)
