"""A dry run changes nothing anywhere, yet reports what a real run then does, key for key."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
import sqlalchemy as sa

from retention_pipelines_tests.support.app_rows import insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.archives import archive_objects
from retention_pipelines_tests.support.audit_rows import audit_rows
from retention_pipelines_tests.support.databases import dump_all_tables
from retention_pipelines_tests.support.engines import archiving, engine_for
from retention_pipelines_tests.support.legal_holds import place_hold
from retention_pipelines_tests.support.servers import _pg_bin


def pg_dump(server, url: str) -> bytes:
    """All rows and sequence positions, as pg_dump writes them."""
    binary = _pg_bin("pg_dump")
    # Recent pg_dump releases write a random \restrict key into each dump unless given one.
    fixed_key = ["--restrict-key=dryruntest"] if "--restrict-key" in subprocess.run(
        [binary, "--help"], capture_output=True, text=True).stdout else []
    result = subprocess.run(
        [binary, "--data-only", "--no-owner", *fixed_key, "-h", "127.0.0.1", "-p", str(server.port),
         "-U", "postgres", sa.engine.make_url(url).database],
        capture_output=True, check=True)
    return result.stdout


@pytest.fixture(params=["s3", "local"])
def archive_url(request) -> str:
    return request.getfixturevalue("s3_archive_url" if request.param == "s3" else "local_archive_url")


def test_dry_run_writes_nothing_and_reports_the_keys_a_real_run_writes(
        postgres_server, pg_url, pg_database, policies, quiz_policy, archive_url):
    due = insert_quiz_rows(pg_database, [timedelta(days=2, minutes=i) for i in range(8)])
    fresh = insert_quiz_rows(pg_database, [timedelta(hours=1)] * 3)
    place_hold(pg_database, due[0])
    policy = archiving(quiz_policy, batch_size=3)
    engine = engine_for(policy, policies, pg_database, archive_url)

    dump_before, rows_before = pg_dump(postgres_server, pg_url), dump_all_tables(pg_database)
    assert all(record_id.encode() in dump_before for record_id in due + fresh), "the dump lacks rows"
    dry = engine.run("dry-run", dry_run=True)
    assert pg_dump(postgres_server, pg_url) == dump_before
    assert dump_all_tables(pg_database) == rows_before
    assert archive_objects(archive_url) == {}
    assert audit_rows(pg_database) == []

    assert dry.audited is None
    assert (dry.found.rows, dry.found.held) == (7, 1)
    assert dry.archived.dry_run and dry.archived.rows == 7
    assert sorted(b.rows for b in dry.archived.batches) == [1, 3, 3]
    assert dry.acted.dry_run and dry.acted.acted_on == 7 and dry.acted.skipped_legal_hold == 1
    dry_keys = sorted(b.key for b in dry.archived.batches)
    assert len(set(dry_keys)) == 3

    real = engine.run("real-run")
    assert sorted(b.key for b in real.archived.batches) == dry_keys
    assert sorted(b.uri for b in real.archived.batches) == sorted(b.uri for b in dry.archived.batches)
    assert set(archive_objects(archive_url)) == {*dry_keys, *(k + ".manifest.json" for k in dry_keys)}
    assert real.acted.acted_on == 7
    assert remaining_ids(pg_database) == {due[0], *fresh}
