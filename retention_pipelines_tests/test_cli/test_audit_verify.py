"""`retention audit verify` and `retention audit seal`: what they print and their exit codes."""

from __future__ import annotations

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.cli.common import EXIT_BAD_INPUT, EXIT_FAILED
from retention_pipelines.engine.audit.anchor import anchor
from retention_pipelines.engine.audit.seal import seal
from retention_pipelines_tests.support.audit_rows import execute, ids_of, write_audit_rows


def chained_rows(database) -> int:
    with database.connect() as connection:
        total = sa.select(sa.func.coalesce(sa.func.sum(schema.audit_chain.c.rows), 0))
        return int(connection.execute(total).scalar_one())


def test_seal_then_verify_an_intact_log(cli, cli_env):
    write_audit_rows(cli_env, 10)
    sealed = cli("audit", "seal")
    assert sealed.code == 0, sealed.err
    assert "10 audit rows sealed" in sealed.out and "alpha" in sealed.out and "beta" in sealed.out

    verified = cli("audit", "verify")
    assert verified.code == 0, verified.err
    assert "10 audit rows checked" in verified.out
    assert "every chain is intact" in verified.out
    assert "BROKEN" not in verified.out


def test_verify_names_the_first_broken_link_and_fails(cli, cli_env):
    write_audit_rows(cli_env, 10)
    assert cli("audit", "seal").code == 0
    target = ids_of(cli_env, "alpha")[1]
    execute(cli_env, "UPDATE retention_audit_log SET record_id = 'changed' WHERE id = :id", id=target)

    verified = cli("audit", "verify")
    assert verified.code == EXIT_FAILED
    assert f"first broken link: domain alpha, audit row id {target} (chain position 2): content changed" in verified.out
    assert "BROKEN" in verified.out and "changed" not in verified.out.replace("content changed", "")

    assert cli("audit", "verify", "--domain", "beta").code == 0  # the other chain is intact


def test_verify_seals_nothing_first(cli, cli_env):
    write_audit_rows(cli_env, 6)
    assert cli("audit", "seal").code == 0
    write_audit_rows(cli_env, 3, start=100)
    verified = cli("audit", "verify")
    assert verified.code == 0, verified.err
    assert "3 rows not yet sealed" in verified.out
    assert chained_rows(cli_env) == 6


def test_verify_catches_a_rewritten_chain_through_its_anchor(cli, cli_env):
    write_audit_rows(cli_env, 6)
    seal(cli_env)
    from retention_pipelines.stores import archive_store_from_url, load_settings

    anchor(cli_env, archive_store_from_url(load_settings().resolved_archive_url()))
    execute(cli_env, "UPDATE retention_audit_log SET action = 'kept' WHERE id = :id", id=ids_of(cli_env, "alpha")[0])
    execute(cli_env, "DELETE FROM retention_audit_chain")
    execute(cli_env, "DELETE FROM retention_audit_chain_heads")
    seal(cli_env)

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
