"""Restore (the rollback plan) on PostgreSQL and SQLite: rows a run deleted, re-inserted from their
archive with a `restored` audit entry each; refused for erased subjects, for rows that exist again,
for archives that are gone; a dry run writes nothing."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.engine import RetentionEngine
from retention_pipelines.engine.gdpr.erasure_run import SubjectErasure
from retention_pipelines.engine.gdpr.requests import ErasureRequests
from retention_pipelines.engine.retention.restore import Restorer, RestoreRefused
from retention_pipelines.stores import archive_store_from_url
from retention_pipelines_tests.support.app_rows import _insert
from retention_pipelines_tests.support.archives import configured_keys
from retention_pipelines_tests.support.databases import dump_all_tables

ANN, BOB, CARL = "ann@example.com", "bob@example.com", "carl@example.com"


def blacklist(database) -> dict[str, tuple]:
    table = sa.Table("email_blacklist", sa.MetaData(), autoload_with=database.engine)
    with database.engine.connect() as connection:
        rows = connection.execute(sa.select(table.c.id, table.c.email, table.c.reason, table.c.created_at)).all()
    return {str(r[0]): (r[1], r[2], database.read_time(r[3])) for r in rows}


def restored_entries(database) -> list[dict]:
    with database.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(
            sa.select(schema.audit_log).where(schema.audit_log.c.action == "restored"))]


@pytest.fixture
def deleted(any_database, policies, local_archive_url):
    """Three blacklist entries (Ann, Bob, Carl) deleted by run `wrong-run`, archived first."""
    now = any_database.now()
    ids = _insert(any_database, "email_blacklist", [
        {"email": email, "reason": "chargeback",
         "created_at": any_database.bind_time(now - timedelta(days=91, minutes=i))}
        for i, email in enumerate((ANN, BOB, CARL))])
    engine = RetentionEngine(policies.domains["email_blacklist"], policies.policy_version, any_database,
                             archive_store_from_url(local_archive_url), keys=configured_keys(any_database))
    before = blacklist(any_database)
    assert engine.run("wrong-run").acted.acted_on == 3
    assert blacklist(any_database) == {}
    return engine, dict(zip((ANN, BOB, CARL), ids)), before


def test_every_row_the_run_deleted_comes_back_as_it_was_audited_once(any_database, deleted):
    engine, ids, before = deleted
    report = Restorer(engine).restore("wrong-run", None, "ops-ines", "restore-1")
    assert sorted(report.restored) == sorted(ids.values()) and report.refused == {}
    assert report.deleted_in_run == 3 and report.still_due == 3
    assert blacklist(any_database) == before
    entries = restored_entries(any_database)
    assert sorted(e["record_id"] for e in entries) == sorted(ids.values())
    assert {(e["actor"], e["run_id"], e["detail"]) for e in entries} == {
        ("ops-ines", "restore-1", "restored: deleted by run wrong-run")}
    assert all(e["archive_uri"].startswith("file://") for e in entries)

    again = Restorer(engine).restore("wrong-run", None, "ops-ines", "restore-2")
    assert again.restored == [] and set(again.refused.values()) == {"it exists again"}
    assert len(restored_entries(any_database)) == 3


def test_only_the_records_named_and_a_record_the_run_did_not_delete_is_refused(any_database, deleted):
    engine, ids, _ = deleted
    report = Restorer(engine).restore("wrong-run", [ids[BOB], "00000000-0000-0000-0000-000000000000"], "ops",
                                      "restore-1")
    assert report.restored == [ids[BOB]]
    assert report.refused == {"00000000-0000-0000-0000-000000000000": "not deleted by run wrong-run"}
    assert set(blacklist(any_database)) == {ids[BOB]}


def test_an_erased_subjects_rows_are_never_restored(any_database, deleted, policies):
    engine, ids, _ = deleted
    keys = configured_keys(any_database)
    requests = ErasureRequests(any_database, keys.hash_key)
    request = requests.request(ANN)
    erasure = SubjectErasure(requests, keys, engine.archive_store, policies.policy_version, [engine.policy])
    part = erasure.erase_domain(engine, request.id, "erasure-run")
    erasure.complete(request.id, [part], "erasure-run")

    report = Restorer(engine).restore("wrong-run", None, "ops", "restore-1")
    assert sorted(report.restored) == sorted([ids[BOB], ids[CARL]])
    assert report.refused == {ids[ANN]: "its subject was erased (the archive key is destroyed)"}
    assert ids[ANN] not in blacklist(any_database)


def test_a_dry_run_writes_nothing(any_database, deleted):
    engine, ids, _ = deleted
    before = dump_all_tables(any_database)
    report = Restorer(engine).restore("wrong-run", None, "ops", "restore-1", dry_run=True)
    assert sorted(report.restored) == sorted(ids.values()) and report.dry_run
    assert dump_all_tables(any_database) == before


def test_an_archive_that_is_gone_is_named_and_nothing_is_restored_from_it(any_database, deleted):
    engine, ids, _ = deleted
    [uri] = _deletion_uris(any_database)
    engine.archive_store.delete(engine.archive_store.key_of(uri))
    report = Restorer(engine).restore("wrong-run", None, "ops", "restore-1")
    assert report.restored == [] and len(report.refused) == 3
    assert all("is gone" in why and uri in why for why in report.refused.values())
    assert blacklist(any_database) == {}


def _deletion_uris(database) -> set[str]:
    with database.engine.connect() as connection:
        return set(connection.execute(sa.select(schema.audit_log.c.archive_uri).where(
            schema.audit_log.c.action == "deleted")).scalars())


def test_domains_without_deleted_archived_rows_are_refused_by_name(any_database, policies, local_archive_url,
                                                                   deleted):
    store = archive_store_from_url(local_archive_url)
    quiz = RetentionEngine(policies.domains["quiz_responses"], policies.policy_version, any_database, store)
    with pytest.raises(RestoreRefused, match="quiz_responses is not archived"):
        Restorer(quiz).restore("wrong-run", None, "ops", "r")
    engine, _, _ = deleted
    with pytest.raises(RestoreRefused, match="run no-such-run deleted nothing in email_blacklist"):
        Restorer(engine).restore("no-such-run", None, "ops", "r")


def test_a_run_is_named_by_any_unambiguous_beginning_of_its_id(any_database, deleted, policies):
    engine, ids, _ = deleted
    report = Restorer(engine).restore("wrong", None, "ops", "restore-1", dry_run=True)
    assert report.run_id == "wrong-run" and sorted(report.restored) == sorted(ids.values())
    # A second deleting run whose id the first one's begins: the whole id still names the first,
    # a shorter beginning names neither.
    again = _insert(any_database, "email_blacklist", [
        {"email": "dora@example.com", "reason": "chargeback",
         "created_at": any_database.bind_time(any_database.now() - timedelta(days=92))}])
    assert engine.run("wrong-run-2").acted.acted_on == 1
    assert Restorer(engine).restore("wrong-run", None, "ops", "r", dry_run=True).run_id == "wrong-run"
    assert Restorer(engine).restore("wrong-run-", None, "ops", "r", dry_run=True).restored == again
    with pytest.raises(RestoreRefused, match=r"'wrong' is the beginning of several runs .*\(wrong-run, wrong-run-2\)"):
        Restorer(engine).restore("wrong", None, "ops", "r")
    for nothing in ("wrong%", "w_ong", "%", "wrong-run-2x", "other"):  # no pattern: a beginning, letter for letter
        with pytest.raises(RestoreRefused, match=f"run {re.escape(nothing)} deleted nothing in email_blacklist"):
            Restorer(engine).restore(nothing, None, "ops", "r")
    with pytest.raises(RestoreRefused, match="the run id is empty"):
        Restorer(engine).restore("  ", None, "ops", "r")
    assert restored_entries(any_database) == []


def test_a_wall_time_clock_comes_back_as_the_same_wall_time(pg_url, policies, local_archive_url):
    """A `timestamp without time zone` clock (declared America/New_York) in sessions whose zone is
    another: its rows go when due in New York's time, and come back with the wall times they had."""
    from datetime import UTC
    from zoneinfo import ZoneInfo

    from retention_pipelines.stores import AppDatabase
    from retention_pipelines_tests.support.databases import in_session_time_zone

    database = in_session_time_zone(AppDatabase(pg_url), "Pacific/Kiritimati")  # UTC+14
    try:
        with database.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE email_blacklist ALTER COLUMN created_at "
                                       "TYPE timestamp without time zone "
                                       "USING created_at AT TIME ZONE 'America/New_York'")
        new_york = ZoneInfo("America/New_York")
        now = database.now()
        walls = [(now - timedelta(days=90, hours=hours)).astimezone(new_york).replace(tzinfo=None)
                 for hours in (2, 1)]
        walls.append((now - timedelta(days=89, hours=23)).astimezone(new_york).replace(tzinfo=None))  # not yet due
        ids = _insert(database, "email_blacklist", [{"email": email, "reason": "manual", "created_at": wall}
                                                     for email, wall in zip((ANN, BOB, CARL), walls)])
        policy = policies.domains["email_blacklist"].model_copy(update={"clock_timezone": "America/New_York"})
        engine = RetentionEngine(policy, policies.policy_version, database, archive_store_from_url(local_archive_url),
                                 keys=configured_keys(database))
        assert engine.run("wall-run").acted.acted_on == 2
        with database.engine.connect() as connection:
            deadlines = dict(connection.execute(sa.select(schema.audit_log.c.record_id, schema.audit_log.c.deadline)
                                                .where(schema.audit_log.c.action == "deleted")).all())
        assert deadlines == {rid: wall.replace(tzinfo=new_york).astimezone(UTC) + timedelta(days=90)
                             for rid, wall in zip(ids[:2], walls)}

        report = Restorer(engine).restore("wall-run", None, "ops-ines", "restore-wall")
        assert sorted(report.restored) == sorted(ids[:2]) and report.still_due == 2
        with database.engine.connect() as connection:
            back = dict(connection.exec_driver_sql("SELECT id::text, created_at FROM email_blacklist").all())
        assert back == dict(zip(ids, walls))
    finally:
        database.dispose()
