"""Alerts: real HTTP servers on loopback play the JSON webhook, Slack's Web API and PagerDuty's
Events API v2; a silent server (accepts, never answers) plays a channel that hangs."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time

import pytest

from retention_pipelines.logs import ROOT, configure_logging, get_logger
from retention_pipelines.stores import StoreUnavailable
from retention_pipelines.stores.notifier import (
    Alert,
    LogNotifier,
    Notifiers,
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
    notifier,
)
from retention_pipelines.stores.settings import ConfigurationError, load_settings
from retention_pipelines_tests.support.alert_channels import (
    ALERT_VARIABLES,
    EVENTS_PATH,
    WEBHOOK_PATH,
    AlertReceiver,
    SilentServer,
)
from retention_pipelines_tests.support.servers import free_port

ROUTING_KEY = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12"
SLACK_TOKEN = "xoxb-test-9f8e7d6c5b4a-never-printed"
PERSON = "someone.private@example.com"


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.stop()




@pytest.fixture(autouse=True)
def no_alert_variables(monkeypatch):
    """No alert channel configured by the caller's shell."""
    for name in ALERT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def json_log():
    """The package's JSON log lines, into a string; the logger's handlers and level put back after."""
    root = logging.getLogger(ROOT)
    saved_handlers, saved_level = list(root.handlers), root.level
    root.handlers = []
    stream = io.StringIO()
    configure_logging(default_level="INFO", stream=stream)
    yield stream
    root.handlers, root.level = saved_handlers, saved_level


def lag_alert(event: str = "opened", level: int = 1, summary: str = "lag 6h") -> Alert:
    return Alert("quiz_responses", "retention_lag", event, summary, {"lag_seconds": 21600.0}, level)


def slack(receiver: AlertReceiver, channel: str = "#retention-alerts", **kwargs) -> SlackNotifier:
    return SlackNotifier(SLACK_TOKEN, channel, receiver.slack_api_url, **kwargs)


def pagerduty(receiver: AlertReceiver, **kwargs) -> PagerDutyNotifier:
    return PagerDutyNotifier(ROUTING_KEY, receiver.events_url, **kwargs)


def alert_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "retention_pipelines.alerts"]


# The alert itself --------------------------------------------------------------------------------
def test_an_alert_names_its_incident_and_its_level():
    opened, escalated = lag_alert(), lag_alert("escalated", 2, f"lag 3h; mentioned {PERSON}")
    assert opened.dedup_key == escalated.dedup_key == "retention/quiz_responses/retention_lag"
    assert Alert("meal_plans", "retention_lag", "opened", "x").dedup_key != opened.dedup_key
    assert "(level" not in opened.text
    assert "(level 2)" in escalated.text and PERSON not in escalated.text
    payload = escalated.payload()
    assert payload["level"] == 2 and payload["event"] == "escalated"
    assert PERSON not in json.dumps(payload)


# Webhook -----------------------------------------------------------------------------------------
def test_the_webhook_posts_the_alert_as_json_without_personal_data(receiver):
    WebhookNotifier(receiver.url).send(Alert("quiz_responses", "retention_lag", "opened",
                                             f"lag 6h; mentioned {PERSON}", {"lag_seconds": 21600.0}))
    [body] = receiver.received
    assert body["domain"] == "quiz_responses" and body["event"] == "opened" and body["details"]["lag_seconds"] == 21600
    assert body["level"] == 1
    assert "@" not in json.dumps(body)
    assert body["text"].startswith("[retention] quiz_responses:")
    assert receiver.slack == [] and receiver.pagerduty == []


# Slack -------------------------------------------------------------------------------------------
def test_slack_gets_the_alert_text_in_the_configured_channel_with_the_bot_token(receiver):
    slack(receiver, "#retention-alerts").send(lag_alert("escalated", 2, f"lag 3h; mentioned {PERSON}"))
    [(body, authorization)] = receiver.slack
    assert body["channel"] == "#retention-alerts"
    assert authorization == f"Bearer {SLACK_TOKEN}"
    assert body["text"].startswith("[retention] quiz_responses: retention_lag escalated (level 2): lag 3h")
    assert PERSON not in json.dumps(body) and "<redacted e-mail>" in body["text"]
    assert receiver.received == [] and receiver.pagerduty == []


def test_a_slack_refusal_is_named_with_slacks_error_code(receiver):
    receiver.slack_error = "channel_not_found"
    with pytest.raises(StoreUnavailable) as caught:
        slack(receiver, "#nowhere").send(lag_alert())
    message = str(caught.value)
    assert "Slack" in message and "channel_not_found" in message and "#nowhere" in message
    assert SLACK_TOKEN not in message
    assert len(receiver.slack) == 1  # a refusal is an answer: not retried


# PagerDuty ---------------------------------------------------------------------------------------
def test_pagerduty_triggers_escalates_and_resolves_one_incident(receiver):
    channel = pagerduty(receiver)
    channel.send(lag_alert("opened", 1, f"lag 1h30m; mentioned {PERSON}"))
    channel.send(lag_alert("escalated", 2, "lag 2h30m"))
    channel.send(lag_alert("closed", 1, "lag back under 1h"))

    opened, escalated, closed = receiver.pagerduty
    assert [e["event_action"] for e in receiver.pagerduty] == ["trigger", "trigger", "resolve"]
    assert {e["dedup_key"] for e in receiver.pagerduty} == {"retention/quiz_responses/retention_lag"}
    assert {e["routing_key"] for e in receiver.pagerduty} == {ROUTING_KEY}
    assert opened["payload"]["severity"] == "error" and escalated["payload"]["severity"] == "critical"
    assert opened["payload"]["component"] == "quiz_responses" and opened["payload"]["group"] == "retention_lag"
    assert opened["payload"]["custom_details"]["level"] == 1
    assert escalated["payload"]["custom_details"]["level"] == 2
    assert escalated["payload"]["custom_details"]["event"] == "escalated"
    assert "(level 2)" in escalated["payload"]["summary"]
    assert PERSON not in json.dumps(receiver.pagerduty)
    assert receiver.received == [] and receiver.slack == []


# Unreachable channels ----------------------------------------------------------------------------
def unreachable(kind: str) -> tuple:
    base = f"http://127.0.0.1:{free_port()}"
    if kind == "webhook":
        return WebhookNotifier(base + WEBHOOK_PATH, timeout=2, attempts=2), "alert webhook"
    if kind == "slack":
        return SlackNotifier(SLACK_TOKEN, "#retention-alerts", base + "/api/", attempts=2), "Slack"
    return PagerDutyNotifier(ROUTING_KEY, base + EVENTS_PATH, attempts=2), "PagerDuty"


@pytest.mark.parametrize("kind", ["webhook", "slack", "pagerduty"])
def test_an_unreachable_channel_is_named(kind):
    channel, name = unreachable(kind)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        channel.send(lag_alert())
    message = str(caught.value)
    assert name in message and "127.0.0.1" in message
    assert SLACK_TOKEN not in message and ROUTING_KEY not in message
    assert time.monotonic() - started < 30


# Fan-out ---------------------------------------------------------------------------------------
def test_every_channel_gets_every_alert(receiver):
    channels = Notifiers([slack(receiver), pagerduty(receiver), WebhookNotifier(receiver.url)], get_logger("alerts"))
    channels.send(lag_alert())
    channels.send(lag_alert("closed"))
    assert [body["event"] for body in receiver.received] == ["opened", "closed"]
    assert [body["text"].split(": ")[1] for body, _ in receiver.slack] == ["retention_lag opened",
                                                                         "retention_lag closed"]
    assert [e["event_action"] for e in receiver.pagerduty] == ["trigger", "resolve"]


@pytest.mark.parametrize("down", ["webhook", "slack", "pagerduty"])
def test_one_channel_down_the_others_still_deliver_and_the_alert_is_logged(receiver, down, caplog, json_log):
    working = {"webhook": WebhookNotifier(receiver.url), "slack": slack(receiver), "pagerduty": pagerduty(receiver)}
    broken, name = unreachable(down)
    working[down] = broken
    with caplog.at_level(logging.WARNING, logger="retention_pipelines.alerts"):
        with pytest.raises(StoreUnavailable) as caught:
            Notifiers(list(working.values()), get_logger("alerts"), timeout=20).send(
                lag_alert(summary=f"lag 6h; {PERSON}"))
    message = str(caught.value)
    assert name in message
    for other in {"webhook": "alert webhook", "slack": "Slack", "pagerduty": "PagerDuty"}.values():
        if other != name:
            assert other not in message, message

    assert len(receiver.received) == (0 if down == "webhook" else 1)
    assert len(receiver.slack) == (0 if down == "slack" else 1)
    assert len(receiver.pagerduty) == (0 if down == "pagerduty" else 1)

    [record] = alert_records(caplog)
    assert isinstance(record.alert, dict)
    assert record.alert["domain"] == "quiz_responses" and record.alert["event"] == "opened"
    assert record.alert["kind"] == "retention_lag"
    # The same record, as the JSON line the log pipeline picks up.
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    [line] = [line for line in lines if line["logger"] == "retention_pipelines.alerts"]
    assert line["level"] == "WARNING" and line["domain"] == "quiz_responses"
    assert line["alert"]["event"] == "opened" and line["alert"]["kind"] == "retention_lag"
    assert PERSON not in json_log.getvalue()


def test_a_channel_that_hangs_does_not_hold_the_alert_past_the_timeout(receiver, silent, caplog):
    hanging = WebhookNotifier(silent.base + WEBHOOK_PATH)  # 10 s per attempt, 3 attempts
    channels = Notifiers([hanging, slack(receiver), pagerduty(receiver)], get_logger("alerts"), timeout=1)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="retention_pipelines.alerts"):
        with pytest.raises(StoreUnavailable, match=r"alert webhook did not answer within 1 s"):
            channels.send(lag_alert())
    assert time.monotonic() - started < 1 + 5
    assert len(receiver.slack) == 1 and len(receiver.pagerduty) == 1
    [record] = alert_records(caplog)
    assert record.alert["event"] == "opened"


def test_channels_that_hang_are_waited_for_side_by_side_not_one_after_another(silent):
    """`timeout` bounds the whole fan-out: three hanging channels must not take three timeouts."""
    timeout = 3
    channels = Notifiers([WebhookNotifier(silent.base + WEBHOOK_PATH),
                          SlackNotifier(SLACK_TOKEN, "#retention-alerts", silent.base + "/api/"),
                          PagerDutyNotifier(ROUTING_KEY, silent.base + EVENTS_PATH)],
                         get_logger("alerts"), timeout=timeout)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        channels.send(lag_alert())
    elapsed = time.monotonic() - started
    for name in ("alert webhook", "Slack", "PagerDuty"):
        assert f"{name} did not answer within {timeout} s" in str(caught.value)
    assert elapsed < timeout + 5, f"the fan-out took {elapsed:.1f} s with a {timeout} s timeout"


HANGING_PAGERDUTY = """
import sys, time
from retention_pipelines.logs import get_logger
from retention_pipelines.stores import StoreUnavailable
from retention_pipelines.stores.notifier import Alert, Notifiers, PagerDutyNotifier
channels = Notifiers([PagerDutyNotifier("R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12", sys.argv[1])], get_logger("alerts"),
                     timeout=1)
try:
    channels.send(Alert("quiz_responses", "retention_lag", "opened", "lag 6h"))
except StoreUnavailable as exc:
    print("sent:", exc, flush=True)
"""


def test_a_hanging_pagerduty_does_not_keep_the_process_from_ending(silent):
    """The thread left talking to a PagerDuty that never answers must give up in time: the
    process (a sensor's code server, the CLI) cannot end while it waits."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", HANGING_PAGERDUTY, silent.base + EVENTS_PATH],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"still running {time.monotonic() - started:.0f} s after a 1 s alert timeout: {output}")
    assert "PagerDuty did not answer within 1 s" in output


# Settings --------------------------------------------------------------------------------------
def test_the_channels_come_from_the_environment(receiver, monkeypatch):
    monkeypatch.setenv("RETENTION_SLACK_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("RETENTION_SLACK_CHANNEL", "#retention-alerts")
    monkeypatch.setenv("RETENTION_SLACK_API_URL", receiver.slack_api_url)
    monkeypatch.setenv("RETENTION_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.setenv("RETENTION_PAGERDUTY_EVENTS_URL", receiver.events_url)
    monkeypatch.setenv("RETENTION_ALERT_WEBHOOK_URL", receiver.url)
    channels = notifier(load_settings(), get_logger("alerts"))
    assert isinstance(channels, Notifiers)
    assert [type(c) for c in channels.channels] == [SlackNotifier, PagerDutyNotifier, WebhookNotifier]
    channels.send(lag_alert())
    [(body, authorization)] = receiver.slack
    assert body["channel"] == "#retention-alerts" and authorization == f"Bearer {SLACK_TOKEN}"
    [event] = receiver.pagerduty
    assert event["routing_key"] == ROUTING_KEY and event["event_action"] == "trigger"
    [webhook] = receiver.received
    assert webhook["event"] == "opened"


def test_only_slack_configured_gives_only_slack(receiver, monkeypatch):
    monkeypatch.setenv("RETENTION_SLACK_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("RETENTION_SLACK_CHANNEL", "#retention-alerts")
    monkeypatch.setenv("RETENTION_SLACK_API_URL", receiver.slack_api_url)
    channels = notifier(load_settings(), get_logger("alerts"))
    assert [type(c) for c in channels.channels] == [SlackNotifier]
    channels.send(lag_alert())
    assert len(receiver.slack) == 1 and receiver.pagerduty == [] and receiver.received == []


def test_only_pagerduty_configured_gives_only_pagerduty(receiver, monkeypatch):
    monkeypatch.setenv("RETENTION_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.setenv("RETENTION_PAGERDUTY_EVENTS_URL", receiver.events_url)
    channels = notifier(load_settings(), get_logger("alerts"))
    assert [type(c) for c in channels.channels] == [PagerDutyNotifier]
    channels.send(lag_alert("closed"))
    [event] = receiver.pagerduty
    assert event["event_action"] == "resolve"
    assert receiver.slack == [] and receiver.received == []


def test_without_a_channel_alerts_are_json_log_lines(caplog, json_log):
    channel = notifier(load_settings(), get_logger("alerts"))
    assert isinstance(channel, LogNotifier)
    with caplog.at_level(logging.WARNING, logger="retention_pipelines.alerts"):
        channel.send(Alert("email_blacklist", "run_duration", "closed", f"back within its time; {PERSON}"))
    [record] = alert_records(caplog)
    assert record.alert["event"] == "closed" and record.alert["domain"] == "email_blacklist"
    [line] = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert line["logger"] == "retention_pipelines.alerts" and line["alert"]["kind"] == "run_duration"
    assert line["message"].startswith("[retention] email_blacklist: run_duration closed")
    assert PERSON not in json_log.getvalue()


def test_a_slack_token_without_a_channel_is_refused_naming_the_variable_not_the_token(monkeypatch):
    monkeypatch.setenv("RETENTION_SLACK_TOKEN", SLACK_TOKEN)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "RETENTION_SLACK_CHANNEL" in message
    assert SLACK_TOKEN not in message and "9f8e7d6c5b4a" not in message


def test_a_slack_channel_without_a_token_sends_nothing_to_slack(monkeypatch):
    monkeypatch.setenv("RETENTION_SLACK_CHANNEL", "#retention-alerts")
    assert isinstance(notifier(load_settings(), get_logger("alerts")), LogNotifier)


def test_a_refusal_is_not_retried_and_is_named(receiver):
    """HTTP 4xx would be refused again: one request, and the error says it was refused."""
    pagerduty = PagerDutyNotifier(ROUTING_KEY, receiver.base + "/no/such/path", attempts=3)
    with pytest.raises(StoreUnavailable, match=r"PagerDuty .* refused the alert: HTTP 404"):
        pagerduty.send(Alert("quiz_responses", "retention_lag", "opened", "lag 6h"))
    assert receiver.requests == [("POST", "/no/such/path")]
