"""Alerts: a real HTTP server on loopback receives the webhook's POSTs."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from retention_pipelines.stores import StoreUnavailable
from retention_pipelines.stores.notifier import Alert, LogNotifier, WebhookNotifier, notifier
from retention_pipelines_tests.servers import free_port


class AlertReceiver:
    """An HTTP server on loopback that keeps the JSON bodies POSTed to it."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/alerts"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = AlertReceiver()
    yield server
    server.stop()


def test_the_webhook_posts_the_alert_as_json_without_personal_data(receiver):
    WebhookNotifier(receiver.url).send(Alert("quiz_responses", "retention_lag", "opened",
                                             "lag 6h; mentioned someone@example.com", {"lag_seconds": 21600.0}))
    [body] = receiver.received
    assert body["domain"] == "quiz_responses" and body["event"] == "opened" and body["details"]["lag_seconds"] == 21600
    assert "@" not in json.dumps(body)
    assert body["text"].startswith("[retention] quiz_responses:")


def test_an_unreachable_webhook_is_named_and_the_alert_still_logged(caplog):
    url = f"http://127.0.0.1:{free_port()}/alerts"
    with caplog.at_level(logging.WARNING, logger="retention_pipelines.alerts"):
        with pytest.raises(StoreUnavailable, match="alert webhook"):
            WebhookNotifier(url, timeout=2, attempts=2).send(Alert("meal_plans", "run_failures", "opened", "3 failed"))
    assert any('"kind": "run_failures"' in record.getMessage() for record in caplog.records)


def test_without_a_webhook_alerts_are_json_log_lines(caplog):
    assert isinstance(notifier(None), LogNotifier)
    with caplog.at_level(logging.WARNING, logger="retention_pipelines.alerts"):
        notifier(None).send(Alert("email_blacklist", "run_duration", "closed", "back within its time"))
    [record] = [r for r in caplog.records if r.name == "retention_pipelines.alerts"]
    assert json.loads(record.getMessage())["alert"]["event"] == "closed"
