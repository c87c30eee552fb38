"""Alerts to people: Slack, PagerDuty and/or a JSON webhook, whichever are configured; with none,
a structured log line.

A breach alerts when it opens, when it escalates and when it closes, never on every tick (the
sensors call this only on those transitions). An alert carries domains, kinds, counts and
durations: never personal data. Each configured channel has its circuit breaker (stores/breaker.py):
a channel that failed several alerts in a row is skipped, and the alert logged, until it is probed again.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from retention_pipelines.errors import StoreUnavailable
from retention_pipelines.redaction import display_url, without_personal_data
from retention_pipelines.stores.breaker import Breakers, CircuitOpen, ServiceBreaker
from retention_pipelines.stores.breaker import log as breaker_log

OPENED, ESCALATED, CLOSED = "opened", "escalated", "closed"


@dataclass(frozen=True)
class Alert:
    domain: str
    kind: str  # retention_lag, run_duration, run_failures, …
    event: str  # opened, escalated, closed
    summary: str
    details: dict = field(default_factory=dict)
    level: int = 1  # 1 when a breach opens; each escalation adds one
    subject: str = ""  # what within the domain and kind, when there can be several (a queue item's id)

    @property
    def dedup_key(self) -> str:
        """One incident per domain, kind (and subject): its escalations update it, its close resolves it."""
        return "/".join(["retention", self.domain, self.kind] + ([self.subject] if self.subject else []))

    @property
    def text(self) -> str:
        level = f" (level {self.level})" if self.event == ESCALATED else ""
        return f"[retention] {self.domain}: {self.kind} {self.event}{level}: {without_personal_data(self.summary)}"

    def payload(self) -> dict:
        body = asdict(self)
        body["summary"] = without_personal_data(self.summary)
        body["text"] = self.text  # what chat webhooks display
        return body


class Notifier(ABC):
    name: str

    @property
    def service(self) -> str:
        """The channel and where it posts, as messages show it (no credential): its breaker's name."""
        return self.name

    @abstractmethod
    def send(self, alert: Alert) -> None:
        """Deliver the alert or raise StoreUnavailable naming the service."""


class LogNotifier(Notifier):
    """No alerting service configured: one JSON log line per alert, for the log pipeline to pick up.

    The logger is the caller's (logs.get_logger("alerts")): the logging setup, which builds on the
    stores, masks personal data in it and adds the run and domain in force."""

    name = "log"

    def __init__(self, log: logging.Logger):
        self.log = log

    def send(self, alert: Alert) -> None:
        self.log.warning(alert.text, extra={"domain": alert.domain, "alert": alert.payload()})


def _transient(exc: BaseException) -> bool:
    """Network trouble and server errors are tried again; a refusal (HTTP 4xx) would be refused again."""
    return isinstance(exc, OSError) and not (isinstance(exc, urllib.error.HTTPError) and exc.code < 500)


def _retrying(attempts: int, transient=_transient):
    return retry(retry=retry_if_exception(transient), stop=stop_after_attempt(attempts),
                 wait=wait_exponential(multiplier=0.2, max=5), reraise=True)


def _post_json(url: str, body: dict, timeout: float, attempts: int) -> None:
    """One JSON POST, retried on network errors. Plain urllib: one POST needs no HTTP client
    library; tenacity retries transient failures."""
    data = json.dumps(body, sort_keys=True).encode()

    @_retrying(attempts)
    def post() -> None:
        request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()

    post()


class WebhookNotifier(Notifier):
    """POSTs the alert as JSON (a generic webhook, or a Slack incoming webhook, which shows `text`)."""

    name = "alert webhook"

    def __init__(self, url: str, timeout: float = 10.0, attempts: int = 3):
        self.url, self.timeout, self.attempts = url, timeout, attempts

    @property
    def service(self) -> str:
        return f"alert webhook {display_url(self.url)}"

    def send(self, alert: Alert) -> None:
        try:
            _post_json(self.url, alert.payload(), self.timeout, self.attempts)
        except OSError as exc:
            raise StoreUnavailable(f"alert webhook {display_url(self.url)} is unreachable: {exc}") from None


class SlackNotifier(Notifier):
    """Posts the alert's text to a Slack channel through dagster-slack's client (a bot token with
    chat:write). `api_url` is for Slack's other API hosts (GovSlack) and for tests on loopback."""

    name = "Slack"

    def __init__(self, token: str, channel: str, api_url: str | None = None, attempts: int = 3):
        from dagster_slack import SlackResource

        self.client = SlackResource(token=token).get_client()
        if api_url:
            self.client.base_url = api_url.rstrip("/") + "/"
        self.channel, self.attempts = channel, attempts

    @property
    def service(self) -> str:
        return f"Slack ({display_url(self.client.base_url)})"

    def send(self, alert: Alert) -> None:
        from slack_sdk.errors import SlackApiError, SlackClientError

        post = _retrying(self.attempts, lambda exc: isinstance(exc, OSError))(self.client.chat_postMessage)
        try:
            post(channel=self.channel, text=alert.text)
        except SlackApiError as exc:  # Slack answered and refused: a wrong token or channel
            raise StoreUnavailable(f"Slack refused the alert for channel {self.channel}: "
                                   f"{exc.response.get('error', 'error')}") from None
        except (OSError, SlackClientError) as exc:
            raise StoreUnavailable(f"Slack ({display_url(self.client.base_url)}) is unreachable: {exc}") from None


class PagerDutyNotifier(Notifier):
    """PagerDuty's Events API v2: a breach that opens triggers an incident, its escalations
    re-trigger it (same dedup key) at critical severity, and its close resolves it.

    Not through dagster-pagerduty: it posts through pypd (last released 2018), which sets no
    request timeout (a PagerDuty that accepts and never answers holds the sensor's thread for
    ever) and whose endpoint is one process-wide class attribute (EU accounts need another). The
    Events API is one JSON POST, sent like the webhook's."""

    name = "PagerDuty"
    EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

    def __init__(self, routing_key: str, events_url: str | None = None, timeout: float = 10.0, attempts: int = 3):
        self.routing_key, self.url = routing_key, events_url or self.EVENTS_URL
        self.timeout, self.attempts = timeout, attempts

    @property
    def service(self) -> str:
        return f"PagerDuty ({display_url(self.url)})"

    def event(self, alert: Alert) -> dict:
        body = {"routing_key": self.routing_key, "dedup_key": alert.dedup_key,
                "event_action": "resolve" if alert.event == CLOSED else "trigger"}
        if alert.event != CLOSED:
            body["payload"] = {
                "summary": alert.text[:1024], "source": "retention_pipelines", "component": alert.domain,
                "group": alert.kind, "severity": "critical" if alert.event == ESCALATED else "error",
                "custom_details": {**alert.details, "level": alert.level, "event": alert.event},
            }
        return body

    def send(self, alert: Alert) -> None:
        try:
            _post_json(self.url, self.event(alert), self.timeout, self.attempts)
        except urllib.error.HTTPError as exc:  # PagerDuty answered and refused (a wrong routing key)
            raise StoreUnavailable(f"PagerDuty ({display_url(self.url)}) refused the alert: HTTP {exc.code}") from None
        except OSError as exc:
            raise StoreUnavailable(f"PagerDuty ({display_url(self.url)}) is unreachable: {exc}") from None


class Notifiers(Notifier):
    """Every configured channel gets every alert, side by side and each within `timeout`: a
    channel that is down or hangs is named, and the others still deliver. An alert that reaches
    no one is still logged (on `log`): it must not be lost silently.

    With `breakers`, each channel is called through its service's breaker, around its retries (a
    send that failed after them is one failure); while a breaker is open its channel is skipped."""

    name = "alerts"

    def __init__(self, channels: list[Notifier], log: logging.Logger, timeout: float = 30.0,
                 breakers: Callable[[str], ServiceBreaker] | None = None):
        self.channels, self.fallback, self.timeout, self.breakers = channels, LogNotifier(log), timeout, breakers

    def _deliver(self, channel: Notifier, alert: Alert) -> None:
        if self.breakers is None:
            return channel.send(alert)
        try:
            self.breakers(channel.service).call(channel.send, alert)
        except CircuitOpen as exc:
            breaker_log.warning(f"alert channel {channel.name} skipped while its circuit is open "
                                f"({alert.domain} {alert.kind} {alert.event}): {exc}",
                                extra={"domain": alert.domain, "breaker": channel.service})
            raise

    def send(self, alert: Alert) -> None:
        pool = ThreadPoolExecutor(max_workers=len(self.channels), thread_name_prefix="alert")
        sending = {pool.submit(self._deliver, channel, alert): channel for channel in self.channels}
        wait(sending, timeout=self.timeout)  # one deadline for all of them, not one each
        pool.shutdown(wait=False)  # a hung channel must not hold the sensor
        failures = []
        for future, channel in sending.items():
            if not future.done():
                failures.append(f"{channel.name} did not answer within {self.timeout:g} s")
            elif isinstance(future.exception(), StoreUnavailable):
                failures.append(str(future.exception()))
            elif future.exception() is not None:
                raise future.exception()
        if failures:
            self.fallback.send(alert)
            raise StoreUnavailable("; ".join(failures))


def notifier(settings, log: logging.Logger) -> Notifier:
    """The channels configured by RETENTION_* variables (see README); none: a line on `log`."""
    channels: list[Notifier] = []
    if settings.slack_token:
        channels.append(SlackNotifier(settings.slack_token.get_secret_value(), settings.slack_channel,
                                      settings.slack_api_url))
    if settings.pagerduty_routing_key:
        channels.append(PagerDutyNotifier(settings.pagerduty_routing_key.get_secret_value(),
                                          settings.pagerduty_events_url))
    if settings.alert_webhook_url:
        channels.append(WebhookNotifier(settings.alert_webhook_url))
    return Notifiers(channels, log, breakers=Breakers.from_settings(settings)) if channels else LogNotifier(log)
