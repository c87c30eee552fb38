"""The integration tests' deployment: the app database, buckets and a DAGSTER_HOME on PostgreSQL,
and the environment of the Dagster processes."""

from __future__ import annotations

import uuid

import boto3
import pytest

from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.dagster_deployment import BLOB_PREFIX, daemon_env, write_dagster_home
from retention_pipelines_tests.support.databases import new_database


@pytest.fixture
def deployment(tmp_path, postgres_server, redis_url, s3_env, monkeypatch):
    """The app database, buckets and a DAGSTER_HOME on PostgreSQL; the environment of the daemon."""
    s3 = boto3.client("s3")
    archive_bucket, hot_bucket = f"archive-{uuid.uuid4().hex[:10]}", f"hot-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=archive_bucket)
    s3.create_bucket(Bucket=hot_bucket)
    app_url = new_database(postgres_server)
    home, storage = write_dagster_home(tmp_path / "dagster_home", postgres_server, f"dagster_{uuid.uuid4().hex[:8]}")
    for name, value in storage.items():  # for the instance the test opens itself
        monkeypatch.setenv(name, value)
    env = {**daemon_env(tmp_path, home, app_url, redis_url, f"s3://{archive_bucket}/archive",
                        f"s3://{hot_bucket}/{BLOB_PREFIX}"), **storage}
    database = AppDatabase(app_url)
    try:
        yield {"env": env, "home": home, "database": database, "archive_bucket": archive_bucket,
               "hot_bucket": hot_bucket, "compute_log_bucket": storage["DAGSTER_COMPUTE_LOG_BUCKET"]}
    finally:
        database.dispose()
