"""Time is UTC, decided by the database, everywhere: whatever the session's or the database's
TimeZone, across DST changes, for a timestamptz clock and for a wall-time clock in its declared
zone, a run takes exactly the rows whose clock + retain_for is at or before its cutoff, and each
audit deadline is that instant, exactly.

The database's clock is moved next to a DST change of the zones involved (a public.now() shadowing
pg_catalog.now(), as in test_cutoff.py), so that clock + retain_for straddles it.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import psycopg2
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from retention_pipelines.engine import RetentionEngine
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.stores import AppDatabase, PolicyMismatch, archive_store_from_url
from retention_pipelines.stores.database import _session_in_utc
from retention_pipelines_tests.support.databases import in_session_time_zone, new_database

ZONES = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
# utc: the server's default; database: ALTER DATABASE … SET timezone (this project's sessions pin
# UTC over it); database_unpinned: the same with the pin taken away; session: SET TimeZone in each
# session after the pin (a pooler's or a role's setting).
SESSION_MODES = ["utc", "database", "database_unpinned", "session"]
DAY = 86_400
SECOND = 1_000_000  # microseconds
_tables = itertools.count()


@cache
def transitions(zone: str) -> tuple[datetime, ...]:
    """The zone's DST changes of 2024 and 2025, as UTC instants (every zone here changes on a
    quarter hour of UTC)."""
    tz, step = ZoneInfo(zone), timedelta(minutes=15)
    moment, found = datetime(2024, 1, 1, tzinfo=UTC), []
    offset = moment.astimezone(tz).utcoffset()
    while moment < datetime(2026, 1, 1, tzinfo=UTC):
        moment += step
        if moment.astimezone(tz).utcoffset() != offset:
            offset = moment.astimezone(tz).utcoffset()
            found.append(moment)
    return tuple(found)


def as_postgresql_reads(wall: datetime, zone: str) -> datetime:
    """The instant PostgreSQL makes of a wall time in `zone`: of one that occurs twice (DST ends),
    the later. Walls made from instants never fall in a DST gap."""
    return wall.replace(tzinfo=ZoneInfo(zone), fold=1).astimezone(UTC)


@st.composite
def scenarios(draw) -> dict:
    clock_zone, session_zone = draw(st.sampled_from(ZONES)), draw(st.sampled_from(ZONES))
    anchors = transitions(clock_zone) + transitions(session_zone) or transitions("America/New_York")
    change = draw(st.sampled_from(anchors))
    retain = draw(st.one_of(st.sampled_from([0, 1, 3600, DAY, 2 * DAY, 90_061]), st.integers(0, 3 * DAY)))
    # The database's now: shortly before or after the DST change, up to retain_for + a day past it.
    now = change + timedelta(seconds=draw(st.integers(-2 * 3600, retain + DAY)))
    jitter = st.one_of(st.integers(-3 * SECOND, 3 * SECOND), st.integers(-2 * 3600 * SECOND, 2 * 3600 * SECOND),
                       st.integers(-16 * 3600 * SECOND, 16 * 3600 * SECOND))
    bases = {"deadline_at_now": now - timedelta(seconds=retain), "at_the_change": change,
             "deadline_at_the_change": change - timedelta(seconds=retain)}
    rows = draw(st.lists(st.tuples(st.sampled_from(sorted(bases)), jitter), min_size=1, max_size=12))
    return {
        "clock_zone": clock_zone, "session_zone": session_zone,
        "session_mode": draw(st.sampled_from(SESSION_MODES)),
        "naive": draw(st.booleans()), "retain_for": timedelta(seconds=retain), "now": now,
        "window": draw(st.booleans()),  # the run's window ends at `now` exactly (cutoff = now)
        "clocks": [bases[base] + timedelta(microseconds=us) for base, us in rows],
        "batch_size": draw(st.sampled_from([1, 2, 5000])), "parallel_batches": draw(st.sampled_from([1, 2])),
    }


@pytest.fixture(scope="module")
def time_database(postgres_server, tmp_path_factory):
    """A database of its own whose clock each example moves (public.now() first on the search
    path), and an archive folder."""
    url = new_database(postgres_server)
    name = sa.engine.make_url(url).database
    admin = psycopg2.connect(postgres_server.dsn(name))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql STABLE "
                       "AS $$ SELECT pg_catalog.now() $$")
        cursor.execute(f'ALTER DATABASE "{name}" SET search_path = public, pg_catalog')
    admin.close()
    return {"server": postgres_server, "name": name, "url": url,
            "archive_url": tmp_path_factory.mktemp("time_utc_archive").as_uri()}


def prepare(time_database: dict, scenario: dict) -> tuple[str, dict[int, datetime]]:
    """The scenario's table, rows, database clock and database TimeZone; (table, {id: clock as UTC})."""
    name = f"clocked_{next(_tables)}"
    zone = scenario["clock_zone"]
    admin = psycopg2.connect(time_database["server"].dsn(time_database["name"]))
    admin.autocommit = True
    with admin.cursor() as cursor:
        if scenario["session_mode"] in ("database", "database_unpinned"):
            cursor.execute(f'ALTER DATABASE "{time_database["name"]}" SET timezone = %s', (scenario["session_zone"],))
        else:
            cursor.execute(f'ALTER DATABASE "{time_database["name"]}" RESET timezone')
        column = "timestamp without time zone" if scenario["naive"] else "timestamptz"
        cursor.execute(f"CREATE TABLE {name} (id integer PRIMARY KEY, clock {column} NOT NULL)")
        cursor.execute(f"CREATE INDEX {name}_clock_idx ON {name} (clock)")
        expected = {}
        for record, instant in enumerate(scenario["clocks"], start=1):
            # Bound with its type: a wall time as timestamp, an instant with its offset; neither
            # depends on this session's zone.
            value = instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None) if scenario["naive"] else instant
            expected[record] = as_postgresql_reads(value, zone) if scenario["naive"] else instant
            cursor.execute(f"INSERT INTO {name} (id, clock) VALUES (%s, %s)", (record, value))
        # The database's now is the scenario's from here on (and runs on from there).
        cursor.execute("SELECT pg_catalog.now()")
        behind = cursor.fetchone()[0] - scenario["now"]
        cursor.execute("CREATE OR REPLACE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql STABLE "
                       "AS $$ SELECT pg_catalog.now() "
                       f"- interval '{behind // timedelta(microseconds=1)} microseconds' $$")
    admin.close()
    return name, expected


def open_database(time_database: dict, scenario: dict) -> AppDatabase:
    database = AppDatabase(time_database["url"])
    mode, zone = scenario["session_mode"], scenario["session_zone"]
    if mode == "database_unpinned":
        sa.event.remove(database.engine, "connect", _session_in_utc)
    if mode == "session":
        in_session_time_zone(database, zone)
    with database.engine.connect() as connection:
        shown = connection.exec_driver_sql("SHOW timezone").scalar_one()
    assert shown == (zone if mode in ("database_unpinned", "session") else "UTC"), "the TimeZone is not in place"
    return database


def policy_for(table: str, scenario: dict) -> DomainPolicy:
    return DomainPolicy.model_validate({
        "name": table, "table": table, "primary_key": "id", "clock_column": "clock",
        "clock_timezone": scenario["clock_zone"] if scenario["naive"] else None,
        "retain_for": f"{int(scenario['retain_for'].total_seconds())}s", "action": "delete",
        "batch_size": scenario["batch_size"], "parallel_batches": scenario["parallel_batches"],
        "pacing": {"sleep_coefficient": 0},  # the moved clock makes every session look busy
        "partitions": {"cadence": "hourly", "start": "2024-01-01"},
        "sla": {"max_lag": "1h", "max_run_duration": "30m"},
    })


@given(scenario=scenarios())
def test_exactly_the_rows_due_by_the_databases_utc_clock_go(time_database, scenario):
    table, clock_utc = prepare(time_database, scenario)
    database = open_database(time_database, scenario)
    try:
        engine = RetentionEngine(policy_for(table, scenario), "time-utc", database,
                                 archive_store_from_url(time_database["archive_url"]))
        run_id = f"run-{table}"
        report = engine.run(run_id, window_end=scenario["now"] if scenario["window"] else None)
        found, retain = report.found, scenario["retain_for"]
        assert abs(found.database_now - scenario["now"]) < timedelta(minutes=1), "the database clock is not moved"
        cutoff = min(scenario["now"], found.database_now) if scenario["window"] else found.database_now
        assert found.cutoff == cutoff

        due = {record for record, clock in clock_utc.items() if clock + retain <= cutoff}
        with database.engine.connect() as connection:
            left = set(connection.exec_driver_sql(f"SELECT id FROM {table}").scalars())
            audited = connection.exec_driver_sql(
                "SELECT record_id, deadline, occurred_at FROM retention_audit_log "
                "WHERE domain = %(domain)s AND run_id = %(run)s AND action = 'deleted'",
                {"domain": table, "run": run_id}).all()
        assert left == set(clock_utc) - due, "rows gone early or kept past their deadline"
        assert (found.rows, report.acted.acted_on) == (len(due), len(due))
        assert sorted(int(record) for record, _, _ in audited) == sorted(due)
        for record, deadline, occurred_at in audited:
            assert deadline == clock_utc[int(record)] + retain
            assert deadline <= cutoff and deadline <= occurred_at
        assert engine.count_acted_on_early(report.acted, run_id) == 0
        assert engine.count_remaining(cutoff) == 0
        # Whatever is left was not due at the cutoff: any lag is younger than the time since.
        assert engine.retention_lag() <= database.now() - cutoff
        if scenario["naive"]:  # the Python reading of a wall time (a restored row's) is the database's
            assert all(engine.table.clock_instant(clock.astimezone(ZoneInfo(scenario["clock_zone"]))
                                                  .replace(tzinfo=None)) == clock_utc[record]
                       for record, clock in clock_utc.items())
    finally:
        database.dispose()


def test_a_wall_time_clock_without_its_zone_is_refused_not_guessed(pg_database, policies, local_archive_url):
    with pg_database.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE wall_clocked (id integer PRIMARY KEY, "
                                   "clock timestamp without time zone NOT NULL)")
    policy = DomainPolicy.model_validate({
        "name": "wall_clocked", "table": "wall_clocked", "primary_key": "id", "clock_column": "clock",
        "retain_for": "1d", "action": "delete", "partitions": {"cadence": "hourly", "start": "2024-01-01"},
        "sla": {"max_lag": "1h", "max_run_duration": "30m"}})
    with pytest.raises(PolicyMismatch) as refused:
        RetentionEngine(policy, policies.policy_version, pg_database, archive_store_from_url(local_archive_url))
    message = str(refused.value)
    assert "domain wall_clocked, field clock_timezone" in message
    assert "wall_clocked.clock" in message and "timestamp without time zone" in message


def test_a_null_clock_is_kept_only_as_declared_and_counted(pg_database, policies, local_archive_url):
    with pg_database.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE maybe_clocked (id integer PRIMARY KEY, clock timestamptz)")
        connection.exec_driver_sql("CREATE INDEX maybe_clocked_clock_idx ON maybe_clocked (clock)")
        connection.exec_driver_sql("INSERT INTO maybe_clocked VALUES (1, NULL), (2, NULL), "
                                   "(3, now() - interval '2 days'), (4, now())")
    fields = {"name": "maybe_clocked", "table": "maybe_clocked", "primary_key": "id", "clock_column": "clock",
              "retain_for": "1d", "action": "delete", "partitions": {"cadence": "hourly", "start": "2024-01-01"},
              "sla": {"max_lag": "1h", "max_run_duration": "30m"}}
    store = archive_store_from_url(local_archive_url)
    with pytest.raises(PolicyMismatch, match=r"domain maybe_clocked, field clock_nulls: column maybe_clocked\.clock "
                                             r"may be NULL"):
        RetentionEngine(DomainPolicy.model_validate(fields), policies.policy_version, pg_database, store)

    engine = RetentionEngine(DomainPolicy.model_validate({**fields, "clock_nulls": "keep"}), policies.policy_version,
                             pg_database, store)
    report = engine.run("null-clocks")
    assert report.acted.acted_on == 1
    with pg_database.engine.connect() as connection:
        assert set(connection.exec_driver_sql("SELECT id FROM maybe_clocked").scalars()) == {1, 2, 4}
    assert engine.count_without_clock() == 2
    assert engine.count_remaining(pg_database.now()) == 0
