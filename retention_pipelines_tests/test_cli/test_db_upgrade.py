"""`retention db upgrade` creates the retention tables; `run` refuses a database that is behind."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from retention_pipelines.demo import app_schema_sql
from retention_pipelines.schema import head_revision
from retention_pipelines.schema.tables import VERSION_TABLE
from retention_pipelines_tests.support.cli import dagster_home, run_script, with_password
from retention_pipelines_tests.support.databases import revision, tables

RETENTION_TABLES = {"retention_audit_log", "retention_legal_holds", "retention_sla_breaches", "retention_manual_queue",
                    "gdpr_erasure_requests", "retention_data_keys", "retention_audit_record_index",
                    "retention_audit_record_index_state",
                    "retention_audit_chain", "retention_audit_chain_heads", "retention_domain_fences",
                    "retention_audit_anchors", "retention_audit_batches", "retention_audit_records",
                    "retention_audit_held_once", VERSION_TABLE}


def empty_database(postgres_server) -> str:
    return postgres_server.create_database(f"empty_{uuid.uuid4().hex[:10]}")


def test_upgrade_an_empty_database_creates_the_retention_tables(cli, postgres_server, monkeypatch):
    url = empty_database(postgres_server)
    assert tables(url) == set()
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(url))

    outcome = cli("db", "upgrade")
    assert outcome.code == 0, outcome.err
    assert RETENTION_TABLES <= tables(url)
    assert "alembic_version" not in tables(url)  # never the app's own Alembic table
    assert revision(url) == [head_revision()]
    assert head_revision() in outcome.out
    # The URL is shown as scheme://host:port/… only: no user, no password, no database name.
    assert f"postgresql+psycopg2://127.0.0.1:{postgres_server.port}/…: retention tables" in outcome.out

    again = cli("db", "upgrade")
    assert again.code == 0, again.err
    assert head_revision() in again.out
    assert "(was" not in again.out  # nothing to apply the second time
    assert revision(url) == [head_revision()]


def test_upgrade_leaves_the_app_tables_alone(cli, postgres_server, monkeypatch):
    url = empty_database(postgres_server)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for statement in app_schema_sql("postgresql"):
            connection.exec_driver_sql(statement)
    engine.dispose()
    before = tables(url)
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(url))

    assert cli("db", "upgrade").code == 0
    assert tables(url) == before | RETENTION_TABLES


def test_run_against_a_database_behind_its_migrations_says_to_upgrade(cli, postgres_server, monkeypatch, tmp_path):
    url = empty_database(postgres_server)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for statement in app_schema_sql("postgresql"):
            connection.exec_driver_sql(statement)
    engine.dispose()
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(url))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path / "dagster")))
    monkeypatch.setenv("RETENTION_HOME", str(tmp_path / "home"))

    outcome = cli("run")
    assert outcome.code == 2
    assert outcome.err.startswith("retention: error: ")
    assert "retention db upgrade" in outcome.err
    assert not RETENTION_TABLES & tables(url)  # run never migrates by itself

    # The console script says the same, with exit code 2 and no traceback.
    result = run_script("run")
    assert result.returncode == 2
    assert "retention db upgrade" in result.stderr
    assert "Traceback" not in result.stderr

    assert cli("db", "upgrade").code == 0
    assert RETENTION_TABLES <= tables(url)


def test_upgrade_an_unreachable_database_fails_cleanly(cli, monkeypatch):
    # A closed port on loopback: nothing listens there.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RETENTION_DATABASE_URL",
                       with_password(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/nothing"))
    outcome = cli("db", "upgrade")
    assert outcome.code == 1
    assert outcome.err.startswith("retention: error: ")
    assert "unreachable" in outcome.err


def test_console_script_db_upgrade(postgres_server, monkeypatch):
    url = empty_database(postgres_server)
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(url))
    result = run_script("db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert RETENTION_TABLES <= tables(url)
