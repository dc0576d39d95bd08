"""The service's Prometheus metrics, served at ``GET /metrics``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class JobFigures(Protocol):
    """What the jobs' metrics are read from at each scrape (``enhancer.jobs.store.JobStore``)."""

    def counts(self) -> dict[str, int]: ...
    def audio_waiting(self) -> float: ...
    def disk_used(self) -> int: ...


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
        self.job_duration = Histogram(
            "enhance_job_duration_seconds", "Time a job took to run, from its claim to its "
            "end", registry=self.registry,
            buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400))

    def watch_jobs(self, store: JobFigures) -> None:
        """Report the jobs' figures, read from ``store`` at each scrape."""
        self.registry.register(_JobsCollector(store))


class _JobsCollector(Collector):
    def __init__(self, store: JobFigures) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        counts = self.store.counts()
        by_status = GaugeMetricFamily("enhance_jobs", "Jobs by status", labels=["status"])
        for status, count in counts.items():
            by_status.add_metric([status], count)
        yield by_status
        yield GaugeMetricFamily("enhance_jobs_queue_length", "Jobs queued or running",
                                value=counts["queued"] + counts["running"])
        yield GaugeMetricFamily("enhance_jobs_audio_waiting_seconds",
                                "Seconds of audio in jobs not yet enhanced",
                                value=self.store.audio_waiting())
        yield GaugeMetricFamily("enhance_jobs_disk_bytes", "Disk the jobs' files take "
                                "(results estimated until written)",
                                value=self.store.disk_used())
