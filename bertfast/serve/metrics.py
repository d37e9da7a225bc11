"""The server's Prometheus metrics, in a registry of its own (so that two apps in one process, as in
tests, never share counters)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: from a fast single-sentence reply on a GPU to a full 2,048-text request on a CPU.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TOKEN_BUCKETS = tuple(2**k for k in range(3, 18))  # 8 .. 131072 tokens per batch
_SIZE_BUCKETS = tuple(2**k for k in range(0, 13))  # 1 .. 4096 texts per batch


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bertfast_requests", "HTTP requests answered, by route and status code", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "bertfast_request_duration_seconds",
            "time from a request's arrival to its answer, by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "bertfast_requests_in_flight", "requests being answered now, by route", ["route"], registry=r
        )
        self.inputs = Counter("bertfast_inputs", "texts (or pairs) embedded or scored, by route", ["route"], registry=r)
        self.batch_tokens = Histogram(
            "bertfast_batch_tokens", "real tokens in one packed forward", buckets=_TOKEN_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "bertfast_batch_size", "texts (or pairs) in one packed forward", buckets=_SIZE_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("bertfast_queue_depth", "texts waiting for a batch", registry=r)
        self.queue_time = Histogram(
            "bertfast_queue_seconds",
            "time a text waits in the queue before its batch starts",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
