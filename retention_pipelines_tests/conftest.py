"""Fixtures: real PostgreSQL, Redis and S3 (moto server) on loopback, started once per session.

A server that cannot start fails every test that needs it, loudly (ServerFailed): no skips.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.demo import app_schema_sql, create_app_tables
from retention_pipelines.policies import load_policies
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.servers import MotoS3Server, PostgresServer, RedisServer

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer().start()
    try:
        template = server.create_database("app_template")
        engine = sa.create_engine(template)
        with engine.begin() as connection:
            for statement in app_schema_sql("postgresql"):
                connection.exec_driver_sql(statement)
        schema.upgrade(engine)
        engine.dispose()
        yield server
    finally:
        server.stop()


def new_database(server: PostgresServer, template: str = "app_template") -> str:
    name = f"test_{next(_names)}_{uuid.uuid4().hex[:6]}"
    connection = psycopg2.connect(server.dsn("postgres"))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}" TEMPLATE {template}')
    connection.close()
    return server.url(name)


@pytest.fixture
def pg_url(postgres_server) -> str:
    """A fresh database with the app's tables and the retention tables at head."""
    return new_database(postgres_server)


@pytest.fixture
def pg_database(pg_url):
    database = AppDatabase(pg_url)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_database(tmp_path):
    database = AppDatabase(f"sqlite:///{tmp_path / 'app.db'}")
    create_app_tables(database)
    schema.upgrade(database.engine)
    yield database
    database.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def any_database(request):
    """The engine's behaviour must be the same on the production database and the demo one."""
    return request.getfixturevalue("pg_database" if request.param == "postgresql" else "sqlite_database")


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def s3_server():
    server = MotoS3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """AWS settings that point boto3 at the moto server, as AWS_ENDPOINT_URL does in production."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_server.endpoint}.items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def s3_archive_url(s3_env) -> str:
    import boto3

    bucket = f"archive-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/retention"


@pytest.fixture
def local_archive_url(tmp_path) -> str:
    return (tmp_path / "archive").as_uri()


@pytest.fixture(scope="session")
def policies():
    return load_policies()


@pytest.fixture
def quiz_policy(policies):
    return policies.domains["quiz_responses"]


def insert_quiz_rows(database: AppDatabase, ages: list[timedelta], email: str = "person@example.invalid") -> list[str]:
    """quiz_responses rows created `age` before the database's now; returns their ids (as text)."""
    table = sa.Table("quiz_responses", sa.MetaData(), autoload_with=database.engine)
    now = database.now()
    rows, ids = [], []
    for age in ages:
        record = uuid.uuid4()
        ids.append(str(record))
        rows.append({"id": str(record) if database.is_sqlite else record,
                     "session_id": str(uuid.uuid4()) if database.is_sqlite else uuid.uuid4(),
                     "email": email, "answers": {"weight_kg": 80},
                     "created_at": database.bind_time(now - age)})
    with database.engine.begin() as connection:
        for start in range(0, len(rows), 5000):
            connection.execute(sa.insert(table), rows[start:start + 5000])
    return ids


def remaining_ids(database: AppDatabase, table: str = "quiz_responses") -> set[str]:
    with database.engine.connect() as connection:
        return {str(v) for v in connection.exec_driver_sql(f"SELECT id FROM {table}").scalars()}


def audit_entries(database: AppDatabase) -> list[dict]:
    with database.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.select(schema.audit_log).order_by(schema.audit_log.c.id))]


def archive_root(url: str) -> Path:
    return Path(url.removeprefix("file://"))
