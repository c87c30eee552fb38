"""`retention alerts test`: a test alert opened and closed on every configured channel (a real HTTP
receiver on loopback); a channel that is down is named and the exit code says so."""

from __future__ import annotations

from retention_pipelines_tests.support.servers import free_port


def test_the_test_alert_reaches_the_webhook_opened_then_closed(cli, receiver, monkeypatch):
    monkeypatch.setenv("RETENTION_ALERT_WEBHOOK_URL", receiver.url)
    outcome = cli("alerts", "test")
    assert outcome.code == 0, outcome.text
    assert outcome.out.strip() == "test alert opened and closed on alert webhook"
    assert [(a["kind"], a["event"]) for a in receiver.received] == [("alert_test", "opened"), ("alert_test", "closed")]


def test_a_channel_that_is_down_is_named(cli, monkeypatch):
    monkeypatch.setenv("RETENTION_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/alerts")
    outcome = cli("alerts", "test")
    assert outcome.code == 1 and "did not reach every channel" in outcome.err and "alert webhook" in outcome.err


def test_without_a_channel_it_says_so(cli, monkeypatch):
    monkeypatch.delenv("RETENTION_ALERT_WEBHOOK_URL", raising=False)
    outcome = cli("alerts", "test")
    assert outcome.code == 0 and "no alert channel is configured" in outcome.out
