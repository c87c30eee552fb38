"""`retention audit verify` and `retention audit index`: what they print and their exit codes."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.cli.common import EXIT_BAD_INPUT, EXIT_FAILED
from retention_pipelines.engine.audit.anchor import anchor
from retention_pipelines_tests.support.app_rows import insert_quiz_rows
from retention_pipelines_tests.support.audit_rows import batch_of, execute, ids_of, relink, write_audit_rows


def heads(database) -> list[tuple]:
    with database.connect() as connection:
        return connection.execute(sa.select(schema.audit_chain_heads).order_by(schema.audit_chain_heads.c.domain)).all()


def test_verify_an_intact_log(cli, cli_env):
    write_audit_rows(cli_env, 10)
    verified = cli("audit", "verify")
    assert verified.code == 0, verified.err
    assert "10 audit rows checked" in verified.out and "0 rows outside the chain" in verified.out
    assert "alpha" in verified.out and "beta" in verified.out
    assert "every chain is intact" in verified.out
    assert "BROKEN" not in verified.out


def test_verify_names_the_first_broken_link_and_fails(cli, cli_env):
    write_audit_rows(cli_env, 10)
    target = ids_of(cli_env, "alpha")[1]  # rec-2: in alpha's first batch, with rec-0
    batch = batch_of(cli_env, target)
    execute(cli_env, "UPDATE retention_audit_records SET record_id = 'changed' WHERE id = :id", id=target)

    verified = cli("audit", "verify")
    assert verified.code == EXIT_FAILED
    assert f"first broken link: domain alpha, batch id {batch} (chain position 1): content changed" in verified.out
    assert "BROKEN" in verified.out and "changed" not in verified.out.replace("content changed", "")

    assert cli("audit", "verify", "--domain", "beta").code == 0  # the other chain is intact


def test_an_entry_changed_right_after_a_run_fails_verify(cli, cli_env):
    """No job runs between the run and the tamperer: the run's entries were chained as it wrote them."""
    insert_quiz_rows(cli_env, [timedelta(hours=30)] * 3)
    ran = cli("run", "quiz_responses")
    assert ran.code == 0, ran.err
    target = ids_of(cli_env, "quiz_responses")[1]
    execute(cli_env, "UPDATE retention_audit_records SET record_id = 'someone-else' WHERE id = :id", id=target)

    verified = cli("audit", "verify")
    assert verified.code == EXIT_FAILED
    assert (f"first broken link: domain quiz_responses, batch id {batch_of(cli_env, target)} (chain position 1): "
            "content changed") in verified.out
    assert "someone-else" not in verified.out


def test_every_entry_is_in_the_chain_as_written_and_verify_writes_nothing(cli, cli_env):
    write_audit_rows(cli_env, 6)
    assert cli("audit", "verify").code == 0
    write_audit_rows(cli_env, 3, start=100)
    before = heads(cli_env)
    verified = cli("audit", "verify")
    assert verified.code == 0, verified.err
    assert "9 audit rows checked" in verified.out and "0 rows outside the chain" in verified.out
    assert heads(cli_env) == before

    # A record row that names no batch is outside every chain: counted, and the log is broken.
    execute(cli_env, "INSERT INTO retention_audit_records (id, batch_id, record_id) VALUES (100000, 99999, 'x')")
    verified = cli("audit", "verify")
    assert verified.code == EXIT_FAILED
    assert "1 rows outside the chain" in verified.out and "batch ids 99999" in verified.out


def test_index_adds_what_was_written_since_the_last_time(cli, cli_env):
    write_audit_rows(cli_env, 5)
    indexed = cli("audit", "index")
    assert indexed.code == 0, indexed.err
    assert "5 audit entries added to the evidence index" in indexed.out
    assert "0 audit entries added" in cli("audit", "index").out


def test_verify_catches_a_rewritten_chain_through_its_anchor(cli, cli_env):
    write_audit_rows(cli_env, 6)
    from retention_pipelines.stores import archive_store_from_url, load_settings

    anchor(cli_env, archive_store_from_url(load_settings().resolved_archive_url()))
    target = batch_of(cli_env, ids_of(cli_env, "alpha")[0])
    execute(cli_env, "UPDATE retention_audit_batches SET action = 'kept' WHERE id = :id", id=target)
    relink(cli_env, "alpha")

    assert cli("audit", "verify", "--no-anchors").code == 0
    verified = cli("audit", "verify")
    assert verified.code == EXIT_FAILED
    assert "the chain was rewritten" in verified.out and "audit_anchors/" in verified.out


def test_verify_refuses_a_database_behind_its_migrations(cli, postgres_server, monkeypatch):
    from retention_pipelines_tests.support.cli import with_password

    url = postgres_server.create_database("behind_audit_verify")
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(url))
    outcome = cli("audit", "verify")
    assert outcome.code == EXIT_BAD_INPUT
    assert "retention db upgrade" in outcome.err
