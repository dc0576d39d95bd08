"""The service's Prometheus metrics, served at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests", "HTTP requests by path, method and status",
                                ["path", "method", "status"], registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "HTTP request latency",
                                 ["path"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                          10, 30, 60))
        self.pending = Gauge("enhance_pending_requests",
                             "/enhance requests waiting or running", registry=self.registry)
        self.audio_seconds = Counter("enhance_audio_seconds",
                                     "Seconds of audio enhanced (per channel)",
                                     registry=self.registry)
        self.worker_restarts = Gauge("enhance_worker_restarts",
                                     "Worker processes replaced after dying",
                                     registry=self.registry)
        self.pool_sessions = Gauge("enhance_pool_sessions",
                                   "Sessions (requests or stream chunks) queued or running in "
                                   "the worker pools", registry=self.registry)
        self.active_streams = Gauge("enhance_active_streams", "Open /enhance/stream streams",
                                    registry=self.registry)
        self.stream_latency = Histogram(
            "enhance_stream_chunk_seconds", "Time from a stream chunk's arrival to its "
            "enhanced samples being sent", registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 1))
