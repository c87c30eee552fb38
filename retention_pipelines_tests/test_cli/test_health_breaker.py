"""`retention health` through the probes' circuit breakers, their state in Redis: a dependency
that failed RETENTION_BREAKER_FAILURES probes in a row is reported down ("circuit open") by the
next command, without being called."""

from __future__ import annotations

from retention_pipelines_tests.support.cli import with_password


def test_the_next_health_command_reports_a_failing_store_as_circuit_open(cli, pg_url, redis_url, tmp_path,
                                                                          monkeypatch):
    blocked = tmp_path / "archive"
    blocked.write_text("a file where the archive folder should be")
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(pg_url))
    monkeypatch.setenv("RETENTION_REDIS_URL", redis_url)
    monkeypatch.setenv("RETENTION_ARCHIVE_URL", blocked.as_uri())
    monkeypatch.setenv("RETENTION_BLOB_URL", (tmp_path / "blobs").as_uri())
    monkeypatch.setenv("RETENTION_BREAKER_FAILURES", "1")

    first = cli("health")
    assert first.code == 1
    [archive_line] = [line for line in first.out.splitlines() if "archive_store" in line]
    assert "cannot be written" in archive_line and "circuit open" not in archive_line

    second = cli("health")
    assert second.code == 1
    [archive_line] = [line for line in second.out.splitlines() if "archive_store" in line]
    assert "circuit open after 1 failure in a row" in archive_line, second.out
    [database_line] = [line for line in second.out.splitlines() if line.lstrip().startswith("database")]
    assert "True" in database_line  # the others are probed as before


def test_a_breaker_setting_out_of_range_is_refused_naming_it(cli, monkeypatch):
    monkeypatch.setenv("RETENTION_BREAKER_RESET_SECONDS", "0")
    outcome = cli("health")
    assert outcome.code == 2
    assert "RETENTION_BREAKER_RESET_SECONDS: must be a number from 1 to 86400 seconds" in outcome.err
