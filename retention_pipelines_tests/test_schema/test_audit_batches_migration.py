"""Migration 0013: an audit log of full rows, chained by the sealer of its time, moves into batches
and record rows, its chain verified before (a broken one stops the migration, nothing changed) and
the new one after; the anchors written before still check; and the downgrade puts the rows back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from retention_pipelines import schema
from retention_pipelines.engine.audit.anchor import LEGACY_ANCHOR_FORMAT
from retention_pipelines.engine.audit.entries import Action, AuditStamp, write_entries
from retention_pipelines.engine.audit.verify import verify
from retention_pipelines.stores import AppDatabase
from retention_pipelines.stores.archive import LocalArchiveStore
from retention_pipelines_tests.support.databases import database_at_revision
from retention_pipelines_tests.support.legacy_audit import CONTENT, seal_legacy, write_legacy_rows

MOMENT = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def database_at_0012(request, tmp_path):
    """A database with the retention tables at migration 0012: the audit log still a table of full rows."""
    database = database_at_revision(request, tmp_path, "0012")
    yield database
    database.dispose()


def legacy_rows(database: AppDatabase) -> list[dict]:
    """Two domains; runs of entries that share what they did (one batch each, after), a hold
    report, a person's queue action, deadlines with and without a value."""
    def row(domain, record_id, action, run_id, seconds, deadline=True, **extra):
        return {"domain": domain, "record_id": record_id, "action": action, "run_id": run_id,
                "occurred_at": database.bind_time(MOMENT + timedelta(seconds=seconds)), "policy_version": "v1",
                "deadline": database.bind_time(MOMENT - timedelta(days=30)) if deadline else None, **extra}
    return ([row("alpha", f"a{i}", "deleted", "run-1", 0, archive_uri="s3://archive/1.jsonl.gz") for i in range(5)]
            + [row("beta", f"b{i}", "deleted", "run-2", 1) for i in range(3)]
            + [row("alpha", "a9", "skipped_legal_hold", "run-1", 0, deadline=False)]
            + [row("alpha", "a7", "queue_resolved", "manual", 5, deadline=False, actor="ops", detail="open → resolved")]
            + [row("alpha", f"a{i}", "deleted", "run-3", 9) for i in range(10, 14)]  # sealed below
            + [row("beta", "b9", "deleted", "run-4", 12)])  # written after the last seal


def _time(database: AppDatabase, value):
    """A timestamp as either database hands it back (SQLite: text), as one UTC instant."""
    return database.read_time(datetime.fromisoformat(value) if isinstance(value, str) else value)


def old_log(database: AppDatabase) -> list[tuple]:
    with database.engine.connect() as connection:
        rows = connection.execute(sa.text(f"SELECT {', '.join(CONTENT)} FROM retention_audit_log ORDER BY id")).all()
    return [tuple(_time(database, v) if name in ("occurred_at", "deadline") else v
                  for name, v in zip(CONTENT, row, strict=True)) for row in rows]


def written_legacy_log(database: AppDatabase, tmp_path) -> tuple[list[int], dict, LocalArchiveStore]:
    """The rows, all but the last sealed, and an anchor of that time in a store."""
    with database.engine.begin() as connection:
        ids = write_legacy_rows(connection, legacy_rows(database))
        heads = seal_legacy(connection, through=ids[-2])
    store = LocalArchiveStore(tmp_path / "archive")
    store.put("audit_anchors/2026/05/06.json", json.dumps({
        "format": LEGACY_ANCHOR_FORMAT, "heads": [{"domain": domain, "last_seq": seq, "last_id": None,
                                                   "last_hash": last} for domain, (seq, last) in heads.items()],
    }).encode())
    return ids, heads, store


def test_an_old_log_moves_into_batches_with_its_chain_verified_and_its_anchors_still_checking(database_at_0012,
                                                                                             tmp_path):
    database = database_at_0012
    ids, heads, store = written_legacy_log(database, tmp_path)
    before = old_log(database)
    schema.upgrade(database.engine)
    with database.engine.connect() as connection:
        after = [tuple(_time(database, r._mapping[n]) if n in ("occurred_at", "deadline") else r._mapping[n]
                       for n in CONTENT) for r in connection.execute(sa.select(schema.audit_log).order_by(
                           schema.audit_log.c.id))]
        batches = connection.execute(sa.select(schema.audit_batches).order_by(schema.audit_batches.c.id)).all()
        held = connection.execute(sa.select(schema.audit_held_once)).all()
    assert after == before  # every entry, its id and content, read through the view
    # Consecutive entries of a domain that did the same thing are one batch.
    assert [(b.domain, b.run_id, b.records) for b in batches] == [
        ("alpha", "run-1", 5), ("alpha", "run-1", 1), ("alpha", "manual", 1), ("alpha", "run-3", 4),
        ("beta", "run-2", 3), ("beta", "run-4", 1)]
    assert [tuple(row) for row in held] == [("alpha", "a9")]
    first = {b.domain: b for b in reversed(batches)}
    assert {domain: first[domain].prev_link for domain in heads} == {d: h for d, (_, h) in heads.items()}
    verification = verify(database, store)
    assert verification.intact, verification.broken
    assert verification.rows_checked == len(ids) and verification.outside_chain == 0
    assert verification.anchors_checked == 2  # the old anchor's two heads, checked against the old blocks
    with database.begin() as connection:  # and the chains go on
        write_entries(connection, [AuditStamp("alpha", Action.DELETED, "run-5", "v2").row("a20")])
    assert verify(database, store).intact


def test_an_old_anchor_catches_old_blocks_rewritten_after_the_migration(database_at_0012, tmp_path):
    _, _, store = written_legacy_log(database_at_0012, tmp_path)
    schema.upgrade(database_at_0012.engine)
    with database_at_0012.engine.begin() as connection:
        connection.execute(sa.text("UPDATE retention_audit_chain SET last_hash = :h WHERE domain = 'beta'"),
                           {"h": "0" * 64})
    assert {link.kind for link in verify(database_at_0012, store).broken} == {"anchor_mismatch"}


@pytest.mark.parametrize("tampering, named", [
    ("UPDATE retention_audit_log SET record_id = 'someone-else' WHERE record_id = 'a3'", "content changed"),
    ("DELETE FROM retention_audit_log WHERE record_id = 'b1'", "deleted"),
    ("UPDATE retention_audit_chain SET prev_hash = :zero WHERE domain = 'alpha' AND block = 2",
     "does not follow its predecessor"),
])
def test_a_broken_old_chain_stops_the_migration_with_nothing_changed(database_at_0012, tmp_path, tampering, named):
    database = database_at_0012
    written_legacy_log(database, tmp_path)
    with database.engine.begin() as connection:
        connection.execute(sa.text(tampering), {"zero": "0" * 64})
    before = old_log(database)
    with pytest.raises(Exception, match=named):
        schema.upgrade(database.engine)
    assert schema.current_revision(database.engine) == "0012"
    assert "retention_audit_batches" not in sa.inspect(database.engine).get_table_names()
    assert old_log(database) == before


def test_the_downgrade_puts_every_entry_back_as_a_row(database_at_0012, tmp_path):
    database = database_at_0012
    written_legacy_log(database, tmp_path)
    before = old_log(database)
    schema.upgrade(database.engine)
    with database.begin() as connection:
        write_entries(connection, [AuditStamp("beta", Action.DELETED, "run-9", "v2").row("b20")])
    with database.engine.begin() as connection:
        command.downgrade(schema._config(connection), "0012")
    back = old_log(database)
    assert back[:len(before)] == before and [row[2] for row in back[len(before):]] == ["b20"]
    assert "retention_audit_batches" not in sa.inspect(database.engine).get_table_names()
