"""A service that is down but answers: an HTTP server on loopback that answers every request with
`status` (500 until told otherwise) and counts the requests it got, to see what a circuit breaker
lets through."""

from __future__ import annotations

import threading
import urllib.request
from http.server import BaseHTTPRequestHandler

from retention_pipelines_tests.support.servers import serve_in_a_thread


class FailingService:
    def __init__(self, status: int = 500):
        self.status, self.requests = status, 0
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with service.lock:
                    service.requests += 1
                self.send_response(service.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *args):
                pass

        self.server = serve_in_a_thread(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def call(self) -> None:
        """One POST; urllib raises HTTPError (an OSError) on the 500."""
        request = urllib.request.Request(self.url + "/", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def stop(self) -> None:
        self.server.shutdown()  # returns once serve_forever has
        self.server.server_close()
