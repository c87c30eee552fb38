"""Run metrics to a Prometheus Pushgateway (RETENTION_PUSHGATEWAY_URL), one group per domain."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from retention_pipelines.errors import StoreUnavailable
from retention_pipelines.redaction import display_url

JOB = "retention_pipelines"


def push_run_metrics(url: str, domain: str, acted_on: int, failed: int, duration_seconds: float,
                     lag_seconds: float, dry_run: bool) -> None:
    """Replace the domain's group with this run's figures (rows acted on, failures, duration, lag
    after the run). A dry run pushes nothing: it acted on nothing."""
    if dry_run:
        return
    registry = CollectorRegistry()
    for name, help_text, value in (
        ("retention_rows_acted_on", "Rows deleted or redacted by the domain's last run", acted_on),
        ("retention_rows_failed", "Rows left because their object could not be deleted", failed),
        ("retention_run_duration_seconds", "How long the last run's delete step took", duration_seconds),
        ("retention_lag_seconds", "Age of the oldest row past its deadline after the last run", lag_seconds),
    ):
        Gauge(name, help_text, registry=registry).set(value)
    Gauge("retention_last_run_timestamp_seconds", "When the last run finished", registry=registry).set_to_current_time()
    try:
        push_to_gateway(url, job=JOB, grouping_key={"domain": domain}, registry=registry, timeout=10)
    except OSError as exc:
        raise StoreUnavailable(f"pushgateway {display_url(url)} is unreachable: {exc}") from None
