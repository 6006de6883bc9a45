"""What `GET /metrics` reports, in Prometheus' text format (prometheus_client, on a registry of
the service's own): requests by endpoint and status, latency per endpoint and per pipeline stage,
the queue, the scenes held and the process's memory."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: from a cached-text query (ms) to a proposer run on a big photo (tens of s on a CPU).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU, fds
        self.requests = Counter("zsris_requests", "HTTP requests answered",
                                ("endpoint", "status"), registry=self.registry)
        self.latency = Histogram("zsris_request_seconds", "Time to answer a request",
                                 ("endpoint",), buckets=BUCKETS, registry=self.registry)
        self.stages = Histogram("zsris_stage_seconds", "Time of each pipeline stage",
                                ("stage",), buckets=BUCKETS, registry=self.registry)
        self.queued = Gauge("zsris_queue_depth", "Requests waiting for a worker",
                            registry=self.registry)
        self.running = Gauge("zsris_requests_running", "Requests on a worker",
                             registry=self.registry)
        self.rejected = Counter("zsris_rejected_busy", "Requests refused with 503: queue full",
                                registry=self.registry)
        self.scenes = Gauge("zsris_scenes", "Scenes held", registry=self.registry)
        self.scene_bytes = Gauge("zsris_scene_bytes", "Bytes the scenes hold",
                                 registry=self.registry)

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stages.labels(stage).observe(ms / 1e3)

    def text(self) -> bytes:
        return generate_latest(self.registry)
