"""Case 10: an erasure's cost per request does not grow with the app's tables.

    python benchmarks/run_all.py --only erasure [--size full|quick|smoke]

One PostgreSQL server (fsync on, as production) holds two app databases made from the app's schema
(its subject keys' indexes included): the four tables with N rows each, and with 10 N (shapes in
benchmarks/cases/app_tables.py). Each gets the same subjects, each with a row in every table in a
spelling of their own (upper case, spaces around). Requests for erasure are then run one at a time,
alternating between the two databases so that the machine's load falls on both alike:

  10 erasure per request   the whole erasure of one request (every domain found, archived where
                           the policy archives, deleted or redacted and audited, what is left
                           checked, the subject's keys destroyed, the request completed), median
                           seconds at 10 N ÷ at N; target ≤ 1.5×
  subject lookup           the lookup of a subject's rows across the four domains alone (through
  (reported)               the index on the subject key), median at 10 N ÷ at N; beside it in the
                           details, the same lookup reading every row with an address instead (what
                           a request whose address is gone does), at both sizes
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from benchmarks.cases.app_tables import fill_app_tables  # noqa: E402
from benchmarks.harness import SERVER_SETTINGS, Result, engine_logs_discarded, run_alone  # noqa: E402
from retention_pipelines.engine.identity.subjects import Subject, normalise_address, subject_rows  # noqa: E402
from retention_pipelines.engine.retention.table import DomainTable  # noqa: E402
from retention_pipelines.stores import AppDatabase  # noqa: E402
from retention_pipelines_tests.support.erasure_rows import DOMAINS, Erasure  # noqa: E402
from retention_pipelines_tests.support.servers import PostgresServer  # noqa: E402

CASE = "10 erasure per request"
ROWS = {"full": 200_000, "quick": 20_000, "smoke": 2_000}  # rows a table at 1×; 10× that at 10×
REQUESTS = {"full": 15, "quick": 9, "smoke": 2}  # measured per database, after one to warm up
LOOKUPS = 21
TARGET = 1.5


def address(index: int) -> str:
    return f"bench-subject-{index}@example.invalid"


def insert_subjects(database: AppDatabase, count: int, first: int = 0) -> None:
    """Each subject's rows (`count` subjects from number `first`), one in every table, spelt as an
    app may have written it; young rows, so that the erasure, not the schedule, takes them (the
    blacklist's past its 90 days)."""
    statements = {
        "quiz_responses": "INSERT INTO quiz_responses (id, session_id, email, answers, created_at) "
                          "VALUES (gen_random_uuid(), gen_random_uuid(), :spelt, '{}'::jsonb, now())",
        "magic_link_tokens": "INSERT INTO magic_link_tokens (id, email, token_hash, created_at, expires_at) "
                             "VALUES (gen_random_uuid(), :spelt, md5(:spelt), now(), now() + interval '1 hour')",
        "meal_plans": "INSERT INTO meal_plans (id, payment_id, email, created_at) "
                      "VALUES (gen_random_uuid(), 'pay_' || md5(:spelt), :spelt, now())",
        "email_blacklist": "INSERT INTO email_blacklist (id, email, reason, created_at) "
                           "VALUES (gen_random_uuid(), :spelt, 'chargeback', now() - interval '91 days')",
    }
    with database.begin() as connection:
        for index in range(first, first + count):
            spelt = f"  {address(index).upper()} "
            for statement in statements.values():
                connection.execute(sa.text(statement), {"spelt": spelt})
        connection.exec_driver_sql("ANALYZE")


def erase(erasure: Erasure, index: int) -> float:
    """One request's whole erasure; its seconds. It must end completed with every row of the subject gone."""
    started = time.perf_counter()
    request = erasure.requests.request(address(index))
    outcome = erasure.run(request.id, f"bench-erasure-{index}")
    seconds = time.perf_counter() - started
    if outcome.status != "completed":
        raise RuntimeError(f"request {request.id} ended {outcome.status}: {outcome.outcome}")
    return seconds


def lookup(database: AppDatabase, tables: list[DomainTable], index: int, indexed: bool) -> float:
    """The lookup of one subject's rows in the four tables; its seconds. It must find them."""
    wanted = normalise_address(address(index))
    subject = Subject(lambda stored: normalise_address(stored) == wanted, wanted if indexed else None)
    started = time.perf_counter()
    found = sum(len(list(subject_rows(database, t.table, t.pk, t.table.c[t.policy.subject_column], t.clock,
                                      subject))) for t in tables)
    seconds = time.perf_counter() - started
    if found != len(tables):
        raise RuntimeError(f"the lookup found {found} rows of the subject, not {len(tables)}")
    return seconds


def measure(rows: int, requests: int) -> list[Result]:
    postgres = PostgresServer(SERVER_SETTINGS).start()
    sizes = {"1x": rows, "10x": rows * 10}
    databases: dict[str, AppDatabase] = {}
    try:
        shapes = {}
        for name, count in sizes.items():
            print(f"   filling the four tables with {count:,} rows each ({name})", flush=True)
            postgres.create_app_database(f"bench_{name}")
            shapes[name] = fill_app_tables(postgres.dsn(f"bench_{name}"), count)
            databases[name] = AppDatabase(postgres.url(f"bench_{name}"))
            insert_subjects(databases[name], requests + 1)
        with tempfile.TemporaryDirectory(prefix="bench-erasure-") as folder, engine_logs_discarded():
            erasures = {name: Erasure(database, Path(folder, name)) for name, database in databases.items()}
            tables = {name: [DomainTable.of(erasures[name].policies.domains[d], database) for d in DOMAINS]
                      for name, database in databases.items()}
            # The lookup alone first, while every subject is there: by the index, then reading every row.
            print("   timing the subject lookup", flush=True)
            lookups = {name: [] for name in sizes}
            for attempt in range(LOOKUPS + 1):
                for name, database in databases.items():
                    seconds = lookup(database, tables[name], attempt % (requests + 1), indexed=True)
                    if attempt:
                        lookups[name].append(seconds)
            scans = {name: lookup(database, tables[name], 0, indexed=False) for name, database in databases.items()}
            print(f"   timing {requests} erasures on each database, alternating", flush=True)
            timed = {name: [] for name in sizes}
            for index in range(requests + 1):
                for name in sizes:
                    seconds = erase(erasures[name], index)
                    if index:  # the first request of each warms the caches and the keys' table
                        timed[name].append(seconds)
    finally:
        for database in databases.values():
            database.dispose()
        postgres.stop()

    median = {name: statistics.median(values) for name, values in timed.items()}
    looked = {name: statistics.median(values) for name, values in lookups.items()}
    details = {"rows_per_table": sizes, "requests_per_database": requests,
               "erasure_s": {name: [round(s, 4) for s in values] for name, values in timed.items()},
               "median_erasure_s": {name: round(s, 4) for name, s in median.items()}}
    lookup_details = {"rows_per_table": sizes, "lookups_per_database": LOOKUPS,
                      "median_lookup_ms": {name: round(s * 1000, 3) for name, s in looked.items()},
                      "every_row_read_ms": {name: round(s * 1000, 1) for name, s in scans.items()}}
    return [
        Result(CASE, f"median seconds of a request's whole erasure, 4 tables × {rows * 10:,} rows ÷ × {rows:,}",
               median["10x"] / median["1x"], "≤", TARGET, details=details),
        Result("subject lookup", f"median lookup of a subject in the 4 tables by the subject key's index, "
               f"{rows * 10:,} rows ÷ {rows:,}", looked["10x"] / looked["1x"], "≤", TARGET,
               details=lookup_details, reported_only=True),
    ]


def run(size: str) -> list[Result]:
    """The case at one of the harness's sizes: full, quick (a tenth), smoke (seconds, no figure meant)."""
    return measure(ROWS[size], REQUESTS[size])


if __name__ == "__main__":
    run_alone(__doc__.splitlines()[0], run, ROWS)
