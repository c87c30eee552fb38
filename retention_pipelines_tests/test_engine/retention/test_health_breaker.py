"""The health probes through their circuit breakers: a dependency that failed its probes N times
in a row is reported down ("circuit open") without being called, until a probe is let through
again; the breakers are the probes' own, never a run's."""

from __future__ import annotations

import time

import pytest

from retention_pipelines.engine.retention.health import check_health
from retention_pipelines.stores import AppDatabase, StoreUnavailable, archive_store_from_url
from retention_pipelines.stores.breaker import Breakers, CircuitOpen
from retention_pipelines_tests.support.servers import free_port


def enabled(policies):
    return [p for p in policies.domains.values() if p.enabled]


def test_a_database_that_fails_its_probes_is_reported_down_without_being_called(policies, redis_url, tmp_path):
    database = AppDatabase(f"postgresql+psycopg2://probe_user:s3cret-pw@127.0.0.1:{free_port()}/app")
    archive = archive_store_from_url(tmp_path.as_uri())

    def probe(breakers):
        [database_probe] = check_health(database, enabled(policies), archive, None, None, breakers)
        return database_probe

    for _ in range(2):
        probed = probe(Breakers(redis_url, 2, 60))
        assert not probed.ok and "circuit open" not in probed.message
    Breakers.forget_all()  # the next probe may be another process (the asset's run, the CLI)
    started = time.monotonic()
    refused = probe(Breakers(redis_url, 2, 60))
    assert time.monotonic() - started < 1
    assert not refused.ok
    assert refused.message.startswith("not probed: health probe of the database postgresql+psycopg2://127.0.0.1:")
    assert "circuit open after 2 failures in a row" in refused.message
    assert "RETENTION_DATABASE_URL" in refused.message and "docs/runbooks/health.md#database" in refused.message
    assert "s3cret-pw" not in refused.message and "probe_user" not in refused.message

    # What a run does with the same database does not go through the probe's breaker: it fails
    # loudly with the driver's own error.
    with pytest.raises(StoreUnavailable) as caught:
        database.now()
    assert not isinstance(caught.value, CircuitOpen) and "circuit open" not in str(caught.value)


def test_a_store_back_up_is_probed_again_after_the_reset_and_reported_working(policies, pg_database, tmp_path):
    blocked = tmp_path / "archive"
    blocked.write_text("a file where the archive folder should be")
    archive = archive_store_from_url(blocked.as_uri())
    breakers = Breakers(None, 2, 1)

    def archive_probe():
        probes = {p.name: p for p in check_health(pg_database, [], archive, None, None, breakers)}
        return probes["archive_store"]

    failed = [archive_probe() for _ in range(2)]
    assert [p.ok for p in failed] == [False, False] and "cannot be written" in failed[0].message
    refused = archive_probe()
    assert not refused.ok and "circuit open" in refused.message
    blocked.unlink()
    blocked.mkdir()
    assert "circuit open" in archive_probe().message  # fixed, but not probed before the reset
    time.sleep(1.2)
    back = archive_probe()
    assert back.ok, back.message
    assert archive_probe().ok
