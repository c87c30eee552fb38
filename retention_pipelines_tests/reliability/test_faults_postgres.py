"""Faults: PostgreSQL stopped (`pg_ctl stop -m fast`) in the middle of a run,
inside a batch's transaction, and started again on the same data folder and port: either at once
(a restart) or only after the run has ended. The server is this module's own (the session's is
shared by other tests)."""

from __future__ import annotations

import threading

import pytest

from retention_pipelines.stores import AppDatabase, HeldLock
from retention_pipelines_tests.support.app_rows import bulk_insert_pg, remaining_ids
from retention_pipelines_tests.support.engines import engine_for
from retention_pipelines_tests.support.faults import clear_failure, fixed_batches, loss, outcome, rerun_outcome
from retention_pipelines_tests.support.figures import record
from retention_pipelines_tests.support.servers import PostgresServer

DUE, BATCH, STOP_AT = 2000, 50, 5


@pytest.fixture(scope="module")
def own_postgres():
    server = PostgresServer().start()
    server.create_app_database("app_template")
    yield server
    server.stop()


@pytest.fixture
def own_database(own_postgres):
    from retention_pipelines_tests.support.databases import new_database

    database = AppDatabase(new_database(own_postgres))
    yield database
    database.dispose()


class StopsPostgresAtCheck(HeldLock):
    """A lock that is always held; its `at`-th check (made inside a batch's transaction, just
    before the commit) stops PostgreSQL, and starts it again at once if `restart`."""

    domain = "quiz_responses"

    def __init__(self, server: PostgresServer, at: int, restart: bool):
        self.server, self.at, self.restart = server, at, restart
        self.checks, self._guard = 0, threading.Lock()

    def ensure_held(self) -> None:
        with self._guard:
            self.checks += 1
            if self.checks == self.at:
                self.server.stop_fast()
                if self.restart:
                    self.server.start_again()

    def release(self) -> None:
        pass


@pytest.mark.parametrize("restart", [True, False], ids=["restarted", "down-until-the-run-ends"])
def test_postgres_stopped_inside_a_batch(own_postgres, own_database, policies, quiz_policy, local_archive_url,
                                         restart):
    """The batch in flight is rolled back whole; the run fails with a message that names the
    database (or succeeds); every row gone is audited once; a rerun finishes the job."""
    bulk_insert_pg(own_database, DUE, "2 days")
    inserted = remaining_ids(own_database)
    policy = fixed_batches(quiz_policy, BATCH)
    engine = engine_for(policy, policies, own_database, local_archive_url)
    stopper = StopsPostgresAtCheck(own_postgres, STOP_AT, restart)

    message = outcome(lambda: engine.run("pg-stopped", lock=stopper))
    if not restart:
        own_postgres.start_again()
    deleted = len(inserted - remaining_ids(own_database))
    lost = loss(own_database, inserted, None)
    # Up to the stop, STOP_AT - 1 batches passed their check; those of the other lanes beside
    # them may have committed before the server went down.
    in_time = deleted <= (STOP_AT - 1 + policy.parallel_batches) * BATCH
    clear = message is None or clear_failure(message, "database")
    rerun = rerun_outcome(engine, own_database, inserted, None)
    case = "restarted inside a batch" if restart else "stopped inside a batch until the run ended"
    record(f"faults: PostgreSQL {case}", "0 lost, failure names the database",
           f"{'0 lost' if lost is None else 'LOSS'} ({deleted} deleted before); "
           f"{'failed: ' + message[:80] if message else 'succeeded'}; "
           f"rerun {'finished' if rerun is None else 'FAILED'}",
           lost is None and in_time and clear and rerun is None)
    assert stopper.checks >= STOP_AT, "PostgreSQL was never stopped: the run had fewer batches"
    assert lost is None, lost
    assert in_time, f"{deleted} rows deleted: more than the batches before the stop"
    assert clear, f"the failure does not name the database in one clean line: {message!r}"
    assert rerun is None, rerun
