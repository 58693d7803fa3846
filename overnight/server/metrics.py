"""Prometheus metrics, on a registry of their own (no process-global state).

    metrics = Metrics()
    metrics.job_finished("smollm2-135m", "succeeded", queued=0.2, engine=1.4, total=1.7)
    body, content_type = metrics.render(await store.count_by_state())
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .._models import Usage

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)


class Metrics:
    """Queue depth by state and model, job latencies, tokens and webhook deliveries."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.queue_depth = Gauge(
            "overnight_jobs", "Jobs by state and model", ["model", "state"], registry=self.registry
        )
        self.jobs_submitted = Counter(
            "overnight_jobs_submitted", "Jobs accepted", ["model"], registry=self.registry
        )
        self.jobs_finished = Counter(
            "overnight_jobs_finished", "Jobs that reached a final state", ["model", "state"], registry=self.registry
        )
        self.queue_seconds = Histogram(
            "overnight_job_queue_seconds", "Submission to first claim", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.engine_seconds = Histogram(
            "overnight_job_engine_seconds", "Time inside the engine", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.total_seconds = Histogram(
            "overnight_job_total_seconds", "Submission to final state", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.tokens = Counter(
            "overnight_tokens", "Tokens processed", ["model", "kind"], registry=self.registry
        )
        self.webhook_deliveries = Counter(
            "overnight_webhook_deliveries", "Webhook delivery attempts by outcome", ["outcome"],
            registry=self.registry,
        )

    def job_finished(
        self, model: str, state: str, *, queued: float | None, engine: float | None, total: float | None,
        usage: Usage | None = None,
    ) -> None:
        self.jobs_finished.labels(model, state).inc()
        if queued is not None:
            self.queue_seconds.labels(model).observe(queued)
        if engine is not None:
            self.engine_seconds.labels(model).observe(engine)
        if total is not None:
            self.total_seconds.labels(model).observe(total)
        if usage is not None:
            self.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
            self.tokens.labels(model, "completion").inc(usage.completion_tokens)

    def webhook_delivery(self, outcome: str) -> None:
        self.webhook_deliveries.labels(outcome).inc()

    def render(self, counts: dict[tuple[str, str], int]) -> tuple[bytes, str]:
        """Refresh the depth gauge from ``store.count_by_state()`` and expose everything."""
        self.queue_depth.clear()
        for (model, state), count in counts.items():
            self.queue_depth.labels(model, state).set(count)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
