"""Alerts to people: a JSON webhook where one is configured, else a structured log line.

Breaches alert when they open and when they close, never on every tick (the sensors call this
only on those transitions). An alert carries domains, kinds, counts and durations: never
personal data.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from retention_pipelines.redaction import without_personal_data
from retention_pipelines.stores.database import StoreUnavailable

log = logging.getLogger("retention_pipelines.alerts")


@dataclass(frozen=True)
class Alert:
    domain: str
    kind: str  # retention_lag, run_duration, run_failures, …
    event: str  # opened, closed
    summary: str
    details: dict = field(default_factory=dict)

    def payload(self) -> dict:
        body = asdict(self)
        body["summary"] = without_personal_data(self.summary)
        body["text"] = f"[retention] {self.domain}: {body['summary']}"  # what chat webhooks display
        return body


class Notifier(ABC):
    @abstractmethod
    def send(self, alert: Alert) -> None: ...


class LogNotifier(Notifier):
    """No alerting service configured: one JSON log line per alert, for the log pipeline to pick up."""

    def send(self, alert: Alert) -> None:
        log.warning(json.dumps({"alert": alert.payload()}, sort_keys=True))


class WebhookNotifier(Notifier):
    """POSTs the alert as JSON (a generic webhook, or a Slack incoming webhook, which shows `text`).
    Plain urllib: one POST needs no HTTP client library; tenacity retries transient failures."""

    def __init__(self, url: str, timeout: float = 10.0, attempts: int = 3):
        self.url, self.timeout, self.attempts = url, timeout, attempts

    def send(self, alert: Alert) -> None:
        body = json.dumps(alert.payload(), sort_keys=True).encode()

        @retry(retry=retry_if_exception_type(OSError), stop=stop_after_attempt(self.attempts),
               wait=wait_exponential(multiplier=0.2, max=5), reraise=True)
        def post() -> None:
            request = urllib.request.Request(self.url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()

        try:
            post()
        except OSError as exc:
            # An alert that cannot be delivered is still logged: it must not be lost silently.
            LogNotifier().send(alert)
            raise StoreUnavailable(f"alert webhook {self.url.split('?')[0]} is unreachable: {exc}") from None


def notifier(webhook_url: str | None) -> Notifier:
    return WebhookNotifier(webhook_url) if webhook_url else LogNotifier()
