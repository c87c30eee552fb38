"""What the fault tests share: the outcome an operator sees, the no-loss check, and
an outage of a real server's endpoint that keeps the server's state.

The outcome of a run is what Dagster shows: the engine's error turned into a Failure by
`operator_errors` (retention_pipelines/dagster_wiring/common.py), the same conversion every domain step uses.
"""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import dagster as dg

from retention_pipelines.dagster_wiring.common import operator_errors
from retention_pipelines.policies.model import Pacing
from retention_pipelines.redaction import EMAIL
from retention_pipelines_tests.support.servers import free_port

# The address bulk_insert_pg gives every row: it must not reach an operator's message.
ROW_EMAIL = "bulk@example.invalid"


def outcome(call) -> str | None:
    """None if `call()` succeeded, else the Failure's description an operator would read. An error
    that is not an operator error (a traceback) propagates and fails the test."""
    try:
        with operator_errors():
            call()
    except dg.Failure as failure:
        return failure.description
    return None


def clear_failure(message: str | None, *names: str) -> bool:
    """Whether a failure's message is one line, names each of `names` (case-insensitive: the
    dependency) and carries no e-mail address."""
    return (message is not None and "\n" not in message.strip() and ROW_EMAIL not in message
            and not EMAIL.search(message) and all(name.lower() in message.lower() for name in names))


def fixed_batches(policy, batch_size: int, archive: bool = False, parallel_batches: int | None = None):
    """The policy with batches of exactly batch_size rows (no pacing), archiving if asked: what
    a fault test counts in."""
    update = {"batch_size": batch_size, "pacing": Pacing(batch_target_ms=None)}
    if archive:
        update["archive"] = policy.archive.model_copy(update={"enabled": True, "exclude_columns": [],
                                                              "keep_for": timedelta(days=365)})
    if parallel_batches is not None:
        update["parallel_batches"] = parallel_batches
    return policy.model_copy(update=update)


class EndpointOutage:
    """A TCP relay in front of a real server: the clients talk to the relay's port. `down()` closes
    the port and cuts every open connection (the clients see what a stopped server gives them:
    connection refused, connection reset); `up()` opens the same port again. The server itself
    keeps running, so that what it stored (moto keeps its objects in memory only) can be checked
    after the outage."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self._connections: set[socket.socket] = set()
        self._guard = threading.Lock()
        self._listener: socket.socket | None = None
        self._cut_next_answer = False
        self.port = free_port()  # reserved: no other test process is handed it while the relay is down
        self.up()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port, self._listener = listener.getsockname()[1], listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down_mid_answer(self) -> None:
        """Down as the next answer is on its way: its headers and first byte of body arrive, then
        every connection is cut (the client reads a broken body)."""
        self._cut_next_answer = True

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread, which frees the port
            listener.close()
        with self._guard:
            connections, self._connections = self._connections, set()
        for connection in connections:
            _close(connection)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by down()
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _close(client)
                continue
            with self._guard:
                if self._listener is not listener:  # went down meanwhile
                    _close(client), _close(server)
                    return
                self._connections |= {client, server}
            for source, target, answers in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(source, target, answers), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers and self._cut_next_answer and b"\r\n\r\n" in data:
                    self._cut_next_answer = False
                    target.sendall(data[:data.index(b"\r\n\r\n") + 5])
                    self.down()
                    return
                target.sendall(data)
        except OSError:
            pass
        finally:
            _close(source), _close(target)
            with self._guard:
                self._connections -= {source, target}


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()


def loss(database, inserted: set[str], archive_url: str | None) -> str | None:
    """None when nothing is lost: every row gone from the table has exactly one `deleted` audit row
    and, where the domain archives, sits in an intact archive object, the one its audit row names
    (invariants.assert_invariant); else what is wrong."""
    from retention_pipelines_tests.support.invariants import assert_invariant

    try:
        assert_invariant(database, inserted, archive_url)
    except AssertionError as problem:
        return str(problem).splitlines()[0]
    return None


def rerun_outcome(engine, database, inserted: set[str], archive_url: str | None, rerun=None) -> str | None:
    """A rerun once the dependency is back (`rerun`, by default the engine's own run): None when it
    finished the job (nothing left, each row audited once, nothing lost), else what is wrong."""
    from retention_pipelines_tests.support.app_rows import remaining_ids
    from retention_pipelines_tests.support.audit_rows import audit_rows

    failed = outcome(rerun or (lambda: engine.run("rerun")))
    if failed:
        return f"the rerun failed: {failed}"
    left, audited = len(remaining_ids(database)), len(audit_rows(database, "deleted"))
    if left or audited != len(inserted):
        return f"after the rerun {left} rows are left and {audited} audit rows for {len(inserted)} rows"
    return loss(database, inserted, archive_url)
