"""The asset audit/chain locks its anchor for RETENTION_AUDIT_ANCHOR_KEEP_DAYS under the archive's
Object Lock mode, on moto's S3 server."""

import uuid
from datetime import timedelta

import boto3
import dagster as dg

from retention_pipelines.dagster_wiring.audit_chain import build_audit_chain_defs
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.audit.anchor import ANCHOR_PREFIX
from retention_pipelines.stores import AppDatabase, archive_store_from_url
from retention_pipelines_tests.support.audit_rows import write_audit_rows


def test_the_assets_anchor_is_locked_for_the_configured_days(pg_url, s3_env, monkeypatch):
    bucket = f"locked-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    monkeypatch.setenv("RETENTION_ARCHIVE_OBJECT_LOCK_MODE", "GOVERNANCE")
    monkeypatch.setenv("RETENTION_AUDIT_ANCHOR_KEEP_DAYS", "30")
    database = AppDatabase(pg_url)
    write_audit_rows(database, 4)
    [asset] = build_audit_chain_defs().assets
    result = dg.materialize([asset], resources={"retention_stores": RetentionStores(
        database_url=pg_url, archive_url=f"s3://{bucket}/retention")}, raise_on_error=False)
    assert result.success
    store = archive_store_from_url(f"s3://{bucket}/retention")
    [key] = store.keys(ANCHOR_PREFIX)
    lock = store.lock(key)
    assert lock.mode == "GOVERNANCE"
    assert abs(lock.retain_until - (database.now() + timedelta(days=30))) < timedelta(minutes=1)
    database.dispose()
