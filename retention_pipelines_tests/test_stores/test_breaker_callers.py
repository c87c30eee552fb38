"""What goes through a circuit breaker: the alert channels (around their retries) and the
Pushgateway, on real servers — a real HTTP server that fails and counts the requests it gets, a
closed loopback port, the real Pushgateway, breakers' state in a real Redis."""

from __future__ import annotations

import logging
import time
import urllib.request

import pytest

from retention_pipelines.logs import get_logger
from retention_pipelines.stores import StoreUnavailable
from retention_pipelines.stores.breaker import Breakers
from retention_pipelines.stores.metrics import push_through_breaker
from retention_pipelines.stores.notifier import Alert, Notifiers, SlackNotifier, WebhookNotifier, notifier
from retention_pipelines.stores.settings import load_settings
from retention_pipelines_tests.support.alert_channels import ALERT_VARIABLES, AlertReceiver
from retention_pipelines_tests.support.failing_service import FailingService
from retention_pipelines_tests.support.servers import free_port

BREAKER_LOGGER = "retention_pipelines.breaker"
TOKEN = "T0KEN9f8e7d6c5b4aT0KEN9f8e7d6c"
PERSON = "someone.private@example.com"
CLEARED = [*ALERT_VARIABLES, "RETENTION_REDIS_URL", "RETENTION_BREAKER_FAILURES", "RETENTION_BREAKER_RESET_SECONDS"]


@pytest.fixture(autouse=True)
def no_alert_variables(monkeypatch):
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def failing():
    service = FailingService()
    yield service
    service.stop()


def lag_alert(event: str = "opened") -> Alert:
    return Alert("quiz_responses", "retention_lag", event, f"lag 6h; {PERSON}", {"lag_seconds": 21600.0})


def breaker_lines(caplog, starting: str) -> list[str]:
    """The breakers' warning lines that start so (not their debug lines)."""
    return [r.getMessage() for r in caplog.records if r.name == BREAKER_LOGGER and r.levelno >= logging.WARNING
            and r.getMessage().startswith(starting)]


def alert_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "retention_pipelines.alerts"]


# Alert channels ----------------------------------------------------------------------------------
def test_a_failing_channel_is_skipped_once_its_breaker_opens_and_the_others_still_deliver(
        redis_url, failing, caplog):
    """Each send is tried 3 times (tenacity) and counts as one failure: after 2 sends, 6 requests,
    the breaker opens and the channel gets none; the alert is logged instead, Slack still gets it."""
    receiver = AlertReceiver()
    try:
        webhook = WebhookNotifier(f"{failing.url}/hooks/{TOKEN}", timeout=5, attempts=3)
        slack = SlackNotifier("xoxb-test-never-printed", "#retention-alerts", receiver.slack_api_url)
        channels = Notifiers([webhook, slack], get_logger("alerts"), timeout=20,
                             breakers=Breakers(redis_url, 2, 60))
        failures = []
        with caplog.at_level(logging.DEBUG):
            for _ in range(4):
                with pytest.raises(StoreUnavailable) as caught:
                    channels.send(lag_alert())
                failures.append(str(caught.value))
        assert failing.requests == 6, "a send through the breaker is retried inside it, 3 requests a send"
        assert len(receiver.slack) == 4
        assert all("is unreachable" in failure for failure in failures[:2]), failures
        assert all("circuit open after 2 failures in a row" in failure for failure in failures[2:]), failures
        assert len(alert_lines(caplog)) == 4  # every alert that missed a channel is logged
        [opened] = breaker_lines(caplog, "circuit breaker of alert webhook")
        assert "opened after 2 failures in a row" in opened and "HTTP Error 500" in opened
        skipped = breaker_lines(caplog, "alert channel alert webhook skipped while its circuit is open")
        assert len(skipped) == 2
        for text in [*failures, opened, *skipped, caplog.text]:
            assert TOKEN not in text and PERSON not in text, text
    finally:
        receiver.stop()


def test_the_next_tick_finds_the_channel_skipped(redis_url, monkeypatch, caplog):
    """A notifier is built anew for every sensor tick and CLI command: the breaker opened by one
    is open for the next (its state is in Redis), and it skips a channel that is down at once."""
    monkeypatch.setenv("RETENTION_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/alerts")
    monkeypatch.setenv("RETENTION_REDIS_URL", redis_url)
    monkeypatch.setenv("RETENTION_BREAKER_FAILURES", "1")
    with pytest.raises(StoreUnavailable, match="alert webhook http://127.0.0.1:[0-9]+/… is unreachable"):
        notifier(load_settings(), get_logger("alerts")).send(lag_alert())
    Breakers.forget_all()  # the next tick may be another process: only Redis remembers
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        with pytest.raises(StoreUnavailable, match="circuit open after 1 failure in a row"):
            notifier(load_settings(), get_logger("alerts")).send(lag_alert("closed"))
    assert time.monotonic() - started < 0.5  # no connection tried, no backoff waited
    assert [r.alert["event"] for r in alert_lines(caplog)] == ["opened", "closed"]  # each alert logged


def test_a_channel_whose_probe_succeeds_delivers_again(failing, caplog):
    """Without Redis (the demo) the breaker lives in the process; after its reset one alert is the
    probe, its success closes the breaker: one line for the opening, one for the closing."""
    webhook = WebhookNotifier(failing.url + "/alerts", timeout=5, attempts=1)
    channels = Notifiers([webhook], get_logger("alerts"), breakers=Breakers(None, 1, 1))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(StoreUnavailable, match="is unreachable"):
            channels.send(lag_alert())
        with pytest.raises(StoreUnavailable, match="circuit open"):
            channels.send(lag_alert())
        assert failing.requests == 1
        time.sleep(1.2)
        failing.status = 204
        channels.send(lag_alert("closed"))
        channels.send(lag_alert("opened"))
    assert failing.requests == 3
    assert len(breaker_lines(caplog, "circuit breaker of alert webhook")) == 2
    [closed] = [line for line in breaker_lines(caplog, "circuit breaker of alert webhook") if " closed" in line]
    assert "a probe succeeded" in closed


# Pushgateway -------------------------------------------------------------------------------------
def push(breakers: Breakers, url: str) -> bool:
    return push_through_breaker(breakers, url, "quiz_responses", 3, 0, 1.5, 0.0)


def test_a_pushgateway_that_fails_is_not_called_once_its_breaker_opens(redis_url, failing, caplog):
    breakers = Breakers(redis_url, 3, 60)
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            with pytest.raises(StoreUnavailable, match=r"pushgateway http://127\.0\.0\.1:\d+ is unreachable"):
                push(breakers, failing.url)
        assert failing.requests == 3
        assert push(breakers, failing.url) is False and push(breakers, failing.url) is False
    assert failing.requests == 3
    skipped = breaker_lines(caplog, "metrics of quiz_responses not pushed:")
    assert len(skipped) == 2 and "circuit open after 3 failures in a row" in skipped[0]
    assert len(breaker_lines(caplog, "circuit breaker of pushgateway")) == 1


def test_a_pushgateway_that_is_down_opens_its_breaker_and_a_working_one_is_pushed_to(redis_url, pushgateway):
    breakers = Breakers(redis_url, 1, 60)
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StoreUnavailable, match="is unreachable"):
        push(breakers, dead)
    assert push(breakers, dead) is False
    assert push(breakers, pushgateway.url) is True  # another service, another breaker
    with urllib.request.urlopen(f"{pushgateway.url}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    assert any(line.startswith("retention_rows_acted_on{") and 'domain="quiz_responses"' in line
               and line.endswith(" 3") for line in exposition.splitlines())
