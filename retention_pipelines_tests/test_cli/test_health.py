"""`retention health`: a table of dependencies; exit 1 when one fails."""

from __future__ import annotations

from retention_pipelines_tests.test_cli.conftest import with_password


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
