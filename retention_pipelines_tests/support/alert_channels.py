"""Alert channels played on loopback by real HTTP servers: the JSON webhook, Slack's Web API and
PagerDuty's Events API v2 (AlertReceiver), and a channel that hangs (SilentServer)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

from retention_pipelines_tests.support.servers import serve_in_a_thread

# The variables that configure an alert channel: a test clears them, so that its caller's shell adds none.
ALERT_VARIABLES = ["RETENTION_ALERT_WEBHOOK_URL", "RETENTION_SLACK_TOKEN", "RETENTION_SLACK_CHANNEL",
                   "RETENTION_SLACK_API_URL", "RETENTION_PAGERDUTY_ROUTING_KEY", "RETENTION_PAGERDUTY_EVENTS_URL"]

WEBHOOK_PATH = "/alerts"
SLACK_PATH = "/api/chat.postMessage"
EVENTS_PATH = "/v2/enqueue"


class AlertReceiver:
    """An HTTP server on loopback that plays every alert channel, by path:

    - POST /alerts (or /alerts/<token>): a JSON webhook; its bodies are kept in `received`;
    - POST /api/chat.postMessage: Slack's Web API; (JSON body, Authorization header) kept in
      `slack`; answers {"ok": true}, or {"ok": false, "error": slack_error} when that is set;
    - POST /v2/enqueue: PagerDuty's Events API v2; the events are kept in `pagerduty`, answered
      202 {"status": "success", "dedup_key": …}.
    """

    def __init__(self, slack_error: str | None = None):
        received = self.received = []
        slack = self.slack = []
        pagerduty = self.pagerduty = []
        requests = self.requests = []  # (method, path) of every request, in order
        self.slack_error = slack_error
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = self.path.split("?")[0]
                requests.append(("POST", path))
                if path == WEBHOOK_PATH or path.startswith(WEBHOOK_PATH + "/"):  # a token may follow
                    received.append(json.loads(raw))
                    self.send_response(204)
                    self.end_headers()
                elif path == SLACK_PATH:
                    slack.append((json.loads(raw), self.headers.get("Authorization")))
                    answer = {"ok": True, "channel": "C0123", "ts": f"{time.time():.6f}"}
                    if receiver.slack_error:
                        answer = {"ok": False, "error": receiver.slack_error}
                    self._json(200, answer)
                elif path.rstrip("/") == EVENTS_PATH:
                    event = json.loads(raw)
                    pagerduty.append(event)
                    self._json(202, {"status": "success", "message": "Event processed",
                                     "dedup_key": event.get("dedup_key")})
                else:
                    self._json(404, {"error": f"no such path {path}"})

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = serve_in_a_thread(Handler)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def url(self) -> str:
        """The JSON webhook's URL."""
        return self.base + WEBHOOK_PATH

    @property
    def slack_api_url(self) -> str:
        return self.base + "/api/"

    @property
    def events_url(self) -> str:
        return self.base + EVENTS_PATH

    def stop(self) -> None:
        self.server.shutdown()  # returns once serve_forever has
        self.server.server_close()


class SilentServer:
    """Accepts connections and never answers: a channel that hangs. stop() closes them all, so
    that the clients still waiting give up."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0), backlog=32)
        self.socket.settimeout(0.1)
        self.connections: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(connection)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for connection in self.connections:
            connection.close()
        self.socket.close()
