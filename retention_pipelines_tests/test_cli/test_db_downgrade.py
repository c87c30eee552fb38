"""`retention db downgrade REVISION` on PostgreSQL and SQLite: refused (exit 2, naming the tables and
columns) while the downgrade would drop data the later migrations hold, and then nothing changes;
allowed with --drop-data, and without it when what goes is empty; unknown and later revisions exit 2."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from retention_pipelines import schema
from retention_pipelines.schema import downgrade as schema_downgrade
from retention_pipelines.schema import head_revision
from retention_pipelines.schema.downgrade import revisions
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.cli import with_password
from retention_pipelines_tests.support.databases import dump_all_tables, revision, tables


@pytest.fixture(params=["postgresql", "sqlite"])
def upgraded(request, tmp_path, monkeypatch):
    """A database with the retention tables at the head migration (and nothing else), as the CLI sees it."""
    if request.param == "postgresql":
        postgres = request.getfixturevalue("postgres_server")
        url = postgres.create_database(f"down_{uuid.uuid4().hex[:10]}")
        monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(url))
    else:
        url = f"sqlite:///{tmp_path / 'retention.sqlite'}"
        monkeypatch.setenv("RETENTION_DATABASE_URL", url)
    engine = sa.create_engine(url)
    schema.upgrade(engine)
    yield engine
    engine.dispose()


def insert(engine, table: sa.Table, **values) -> None:
    with engine.begin() as connection:
        connection.execute(sa.insert(table).values(**values))


def snapshot(engine) -> dict:
    """Every table and row, and every column of every table."""
    database = AppDatabase(engine.url.render_as_string(hide_password=False))
    try:
        inspector = sa.inspect(engine)
        return {**dump_all_tables(database),
                "columns": {t: [c["name"] for c in inspector.get_columns(t)] for t in inspector.get_table_names()}}
    finally:
        database.dispose()


def test_a_downgrade_that_would_drop_rows_is_refused_by_name_then_done_with_drop_data(cli, upgraded):
    insert(upgraded, schema.data_keys, key_id="k" * 32, batch="a batch", wrapped_key=b"wrapped")
    url = upgraded.url.render_as_string(hide_password=False)
    before = snapshot(upgraded)

    refused = cli("db", "downgrade", "0005")
    assert refused.code == 2, refused.text
    assert refused.err.startswith("retention: error: downgrading to 0005 would drop data the later migrations hold")
    assert "table retention_data_keys (1 rows)" in refused.err and "--drop-data" in refused.err
    assert "retention_audit_chain " not in refused.err  # empty tables are not named
    assert revision(url) == [head_revision()] and snapshot(upgraded) == before

    done = cli("db", "downgrade", "0005", "--drop-data")
    assert done.code == 0, done.text
    assert "retention tables at migration 0005 (was " in done.out
    assert "dropped table retention_data_keys (1 rows)" in done.out
    assert revision(url) == ["0005"]
    assert "retention_data_keys" not in tables(url) and "gdpr_erasure_requests" in tables(url)

    assert cli("db", "upgrade").code == 0 and revision(url) == [head_revision()]


def test_a_column_with_values_is_named_and_an_empty_one_goes_without_asking(cli, upgraded):
    url = upgraded.url.render_as_string(hide_password=False)
    insert(upgraded, schema.legal_holds, domain="meal_plans", record_id=str(uuid.uuid4()), reason="litigation")
    # A later migration's column that no row fills is no data: the downgrade goes on.
    assert cli("db", "downgrade", "0010").code == 0
    assert cli("db", "upgrade").code == 0

    insert(upgraded, schema.legal_holds, domain="meal_plans", record_id=str(uuid.uuid4()), reason="litigation",
           placed_by="ops-ines")
    refused = cli("db", "downgrade", "0009")
    assert refused.code == 2
    assert "column retention_legal_holds.placed_by (1 rows with a value)" in refused.err
    assert "released_by" not in refused.err
    assert revision(url) == [head_revision()]


def test_a_downgrade_of_empty_tables_needs_no_flag(cli, upgraded):
    url = upgraded.url.render_as_string(hide_password=False)
    done = cli("db", "downgrade", "base")
    assert done.code == 0, done.text
    assert "dropped" not in done.out
    assert not {"retention_audit_log", "retention_data_keys", "retention_manual_queue"} & tables(url)
    assert cli("db", "upgrade").code == 0 and revision(url) == [head_revision()]


def test_the_audit_log_carried_back_by_its_downgrade_is_no_data_lost(cli, upgraded):
    """Migration 0013's downgrade writes every entry back as a row of the old table: not refused."""
    from retention_pipelines.engine.audit.entries import Action, AuditStamp, write_entries

    url = upgraded.url.render_as_string(hide_password=False)
    with upgraded.begin() as connection:
        write_entries(connection, [AuditStamp("alpha", Action.DELETED, "run", "v").row(f"r{i}") for i in range(3)])
    done = cli("db", "downgrade", "0012")
    assert done.code == 0, done.text
    assert "dropped" not in done.out and revision(url) == ["0012"]
    with upgraded.connect() as connection:
        assert connection.execute(sa.text("SELECT record_id FROM retention_audit_log ORDER BY id")).scalars().all() \
            == ["r0", "r1", "r2"]
    assert cli("db", "upgrade").code == 0 and revision(url) == [head_revision()]


def test_unknown_and_later_revisions_exit_2_with_what_is_wrong(cli, upgraded):
    url = upgraded.url.render_as_string(hide_password=False)
    unknown = cli("db", "downgrade", "0099")
    assert unknown.code == 2
    assert unknown.err.strip() == ("retention: error: unknown revision '0099': the migrations are base, "
                                   + ", ".join(revisions()))
    assert cli("db", "downgrade", "0004").code == 0
    later = cli("db", "downgrade", "0006")
    assert later.code == 2 and "revision 0006 is after the current migration 0004" in later.err
    assert "retention db upgrade" in later.err
    assert revision(url) == ["0004"]
    same = cli("db", "downgrade", "0004")
    assert same.code == 0 and "at migration 0004" in same.out and "(was" not in same.out
    missing = cli("db", "downgrade")
    assert missing.code == 2 and "REVISION" in missing.err


# What each fill puts where, and from which migration on: (table, column or None, migration of the
# column; the table's own migration).
FILLS = {
    "data_key": ("retention_data_keys", None, "0006", "0006",
                 dict(key_id="k" * 32, batch="a batch", wrapped_key=b"wrapped")),
    "fence": ("retention_domain_fences", None, "0009", "0009", dict(domain="meal_plans", token=7)),
    "hold_placed_by": ("retention_legal_holds", "placed_by", "0010", "0001",
                       dict(domain="meal_plans", record_id="r1", reason="litigation", placed_by="ops")),
    "queue_request": ("retention_manual_queue", "erasure_request_id", "0011", "0004",
                      dict(domain="meal_plans", record_id="r2", reason="delete_blocked", erasure_request_id=3,
                           due_at=sa.func.now())),
}


def expected_loss(fills: set[str], target: str) -> set[str]:
    order = [schema_downgrade.BASE, *revisions()]
    before = order.index(target)
    lost = set()
    for name in fills:
        table, column, column_from, table_from = FILLS[name][:4]
        if before < order.index(table_from):
            lost.add(f"table {table}")
        elif column and before < order.index(column_from):
            lost.add(f"column {table}.{column}")
    return lost


@given(fills=st.sets(st.sampled_from(sorted(FILLS))),
       target=st.sampled_from([schema_downgrade.BASE, *revisions()[:-1]]))
def test_a_downgrade_is_refused_exactly_when_it_would_drop_data(postgres_server, fills, target):
    """Any migration to go back to, any later-migration data present: refused (nothing changed) iff
    a table or column the downgrade drops holds some of it, naming exactly those; done with drop_data."""
    url = postgres_server.create_database(f"down_{uuid.uuid4().hex[:10]}")
    engine = sa.create_engine(url)
    try:
        schema.upgrade(engine)
        for name in fills:
            insert(engine, getattr(schema, {"retention_data_keys": "data_keys", "retention_domain_fences":
                                            "domain_fences", "retention_legal_holds": "legal_holds",
                                            "retention_manual_queue": "manual_queue"}[FILLS[name][0]]),
                   **FILLS[name][4])
        expected = expected_loss(fills, target)
        if expected:
            with pytest.raises(schema_downgrade.DowngradeWouldDropData) as refused:
                schema_downgrade.downgrade(engine, target)
            assert {str(item).split(" (")[0] for item in refused.value.lost} == expected
            assert schema.current_revision(engine) == head_revision()
        _, after, lost = schema_downgrade.downgrade(engine, target, drop_data=True)
        assert after == target and {str(item).split(" (")[0] for item in lost} == expected
        assert schema.current_revision(engine) == (None if target == schema_downgrade.BASE else target)
    finally:
        engine.dispose()
