"""Run metrics to a Prometheus Pushgateway (RETENTION_PUSHGATEWAY_URL), one group per domain,
through the Pushgateway's circuit breaker (stores/breaker.py): a Pushgateway that is down is not
called by every run."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from retention_pipelines.errors import StoreUnavailable
from retention_pipelines.redaction import display_url
from retention_pipelines.stores.breaker import Breakers, CircuitOpen
from retention_pipelines.stores.breaker import log as breaker_log

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


def push_through_breaker(breakers: Breakers, url: str, domain: str, acted_on: int, failed: int,
                         duration_seconds: float, lag_seconds: float) -> bool:
    """push_run_metrics through the Pushgateway's breaker: True once pushed; False, with a warning
    line and without calling it, while the breaker is open; StoreUnavailable when the push fails."""
    try:
        breakers(f"pushgateway {display_url(url)}").call(push_run_metrics, url, domain, acted_on, failed,
                                                        duration_seconds, lag_seconds, False)
    except CircuitOpen as exc:
        breaker_log.warning(f"metrics of {domain} not pushed: {exc}", extra={"domain": domain})
        return False
    return True
