"""`retention health`: a table of dependencies; exit 1 when one fails."""

from __future__ import annotations

import yaml

from retention_pipelines.policies import default_policy_path
from retention_pipelines_tests.support.cli import with_password


def test_health_on_postgresql_and_redis(cli, pg_url, redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(pg_url))
    monkeypatch.setenv("RETENTION_REDIS_URL", redis_url)
    monkeypatch.setenv("RETENTION_ARCHIVE_URL", (tmp_path / "archive").as_uri())
    monkeypatch.setenv("RETENTION_BLOB_URL", (tmp_path / "blobs").as_uri())
    outcome = cli("health")
    assert outcome.code == 0, outcome.text
    for name in ("database", "migrations", "policy:quiz_responses", "lock_service", "archive_store", "blob_store"):
        assert name in outcome.out


def test_health_fails_naming_what_to_do(cli, postgres_server, tmp_path, monkeypatch):
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(postgres_server.create_database("health_empty")))
    monkeypatch.setenv("RETENTION_ARCHIVE_URL", (tmp_path / "archive").as_uri())
    monkeypatch.setenv("RETENTION_BLOB_URL", (tmp_path / "blobs").as_uri())
    outcome = cli("health")
    assert outcome.code == 1
    assert "retention db upgrade" in outcome.out
    assert "does not exist" in outcome.out  # the app tables of an empty database


def health_env(monkeypatch, pg_url, tmp_path):
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(pg_url))
    monkeypatch.setenv("RETENTION_ARCHIVE_URL", (tmp_path / "archive").as_uri())
    monkeypatch.setenv("RETENTION_BLOB_URL", (tmp_path / "blobs").as_uri())


def test_health_refuses_a_clock_it_would_have_to_guess_at(cli, pg_database, pg_url, tmp_path, monkeypatch):
    health_env(monkeypatch, pg_url, tmp_path)
    with pg_database.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE quiz_responses "
                                   "ALTER COLUMN created_at TYPE timestamp without time zone")
        connection.exec_driver_sql("ALTER TABLE email_blacklist ALTER COLUMN created_at DROP NOT NULL")
    outcome = cli("health")
    assert outcome.code == 1
    failing = [line for line in outcome.out.splitlines() if "False" in line]
    assert len(failing) == 2, outcome.out
    assert "policy:quiz_responses" in failing[0] and "field clock_timezone" in failing[0]
    assert "policy:email_blacklist" in failing[1] and "field clock_nulls" in failing[1]


def test_health_counts_the_rows_a_null_clock_keeps(cli, pg_database, pg_url, tmp_path, monkeypatch):
    health_env(monkeypatch, pg_url, tmp_path)
    with pg_database.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE email_blacklist ALTER COLUMN created_at DROP NOT NULL")
        connection.exec_driver_sql("INSERT INTO email_blacklist (id, email, reason, created_at) VALUES "
                                   "(gen_random_uuid(), 'a@example.invalid', 'manual', NULL), "
                                   "(gen_random_uuid(), 'b@example.invalid', 'manual', NULL), "
                                   "(gen_random_uuid(), 'c@example.invalid', 'manual', now())")
    data = yaml.safe_load(default_policy_path().read_text())
    data["domains"]["email_blacklist"]["clock_nulls"] = "keep"
    (tmp_path / "policies.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("RETENTION_POLICIES_FILE", str(tmp_path / "policies.yaml"))
    outcome = cli("health")
    assert outcome.code == 0, outcome.text
    assert "2 rows without a created_at are kept (clock_nulls: keep)" in outcome.out
