"""Fixtures: real PostgreSQL, Redis and S3 (moto server) on loopback, started once per session.

A server that cannot start fails every test that needs it, loudly (ServerFailed): no skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import boto3
import pytest
from hypothesis import HealthCheck, settings

from retention_pipelines import schema
from retention_pipelines.demo import create_app_tables
from retention_pipelines.policies import load_policies
from retention_pipelines.stores import AppDatabase
from retention_pipelines.stores.breaker import Breakers
from retention_pipelines_tests.support.alert_channels import AlertReceiver
from retention_pipelines_tests.support.cli import PASSWORD, Outcome
from retention_pipelines_tests.support.databases import drop_database, new_database
from retention_pipelines_tests.support.servers import MotoS3Server, PostgresServer, PushgatewayServer, RedisServer

# The tests run as the demo, whose unset stores and keys fall back to RETENTION_HOME; set on import,
# since test modules load the code location (which reads the settings) while they are collected. The
# tests of a production deployment unset it themselves (test_stores/test_settings.py, test_integration/).
os.environ["RETENTION_ENV"] = "demo"

# The reliability table at the end of the session, with or without pytest-xdist's workers: the
# plugin in support/figures.py, where the tests record their figures.
pytest_plugins = ["retention_pipelines_tests.support.figures"]

# The folders whose files take minutes each run first: pytest-xdist hands whole files (--dist
# loadfile) to the two workers in the order they are collected, and these, collected last, kept one
# worker busy for minutes after the other had run out of files. The order within a file is kept.
SLOWEST_FIRST = ("test_integration", "reliability")


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: next((n for n, folder in enumerate(SLOWEST_FIRST) if folder in item.path.parts),
                                     len(SLOWEST_FIRST)))

# The property suite (properties/): 'ci', the default, runs a fixed budget of examples, the same
# ones on every machine (derandomize), in a few minutes on 2 cores; 'reliability' (`make reliability`)
# ten times as many, drawn anew each time, printing how to reproduce a failure. Examples run against
# real servers: their time is the servers', not a sign of a slow generator.
_PROPERTY_SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=10, stateful_step_count=8, derandomize=True, **_PROPERTY_SETTINGS)
settings.register_profile("reliability", max_examples=120, stateful_step_count=20, print_blob=True,
                          **_PROPERTY_SETTINGS)
settings.load_profile(os.environ.get("RETENTION_HYPOTHESIS_PROFILE", "ci"))
if settings().derandomize:
    # Hypothesis shrinks a failure for up to five minutes, which at a fraction of a second per
    # example on real servers is the whole CI budget per failing property: CI shrinks for 90 s
    # (the example it prints may then be longer than the smallest), `make reliability` in full.
    from hypothesis.internal.conjecture import engine as _conjecture

    _conjecture.MAX_SHRINKING_SECONDS = 90


@pytest.fixture(scope="session", autouse=True)
def retention_home(tmp_path_factory):
    """The keys the demo falls back on (archive master key, hash key) live in RETENTION_HOME:
    one folder for the session, never the repository's own .retention."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("retention_home")
        patch.setenv("RETENTION_HOME", str(home))
        yield home


@pytest.fixture(autouse=True)
def no_dagster_instance_left_current():
    """A Dagster context entered and never left (an instance, a schedule or sensor context) keeps its
    instance's storage current for every later test of the process, which then fails far from the
    cause ("undefined DagsterInstance weakref"): the test that leaves it fails instead, naming it."""
    # Dagster has no public name for the current storage: its context variable is reset directly,
    # so that the tests after this one run as if it had left its context.
    from dagster._core.storage.defs_state.base import DefsStateStorage, _current_storage

    yield
    if DefsStateStorage.get() is not None:
        _current_storage.set(None)
        pytest.fail("the test left a Dagster instance or evaluation context entered: leave it with `with`")


@pytest.fixture(autouse=True)
def breakers_start_closed():
    """The circuit breakers a process keeps without Redis start closed in every test: a service one
    test left for dead is not skipped in the next."""
    yield
    Breakers.forget_all()


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer().start()
    try:
        server.create_app_database("app_template")
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server) -> Iterator[str]:
    """A fresh database with the app's tables and the retention tables at head."""
    url = new_database(postgres_server)
    yield url
    drop_database(postgres_server, url)


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
    bucket = f"archive-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/retention"


@pytest.fixture
def hot_bucket(s3_env) -> str:
    bucket = f"hot-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def local_archive_url(tmp_path) -> str:
    return (tmp_path / "archive").as_uri()


@pytest.fixture(scope="session")
def policies():
    return load_policies()


@pytest.fixture
def quiz_policy(policies):
    return policies.domains["quiz_responses"]


@pytest.fixture(scope="session")
def pushgateway():
    server = PushgatewayServer().start()
    yield server
    server.stop()


@pytest.fixture
def receiver():
    """Every alert channel (webhook, Slack, PagerDuty) played by one HTTP server on loopback."""
    server = AlertReceiver()
    yield server
    server.stop()


# `retention` in process, for the CLI tests and the others that run it (test_logs.py, the leak scan).
ENVIRONMENT = ["RETENTION_DATABASE_URL", "RETENTION_ARCHIVE_URL", "RETENTION_REDIS_URL", "RETENTION_HOME",
               "RETENTION_POLICIES_FILE", "RETENTION_LOCK_WAIT_SECONDS", "RETENTION_LOCK_TTL_SECONDS",
               "DAGSTER_HOME"]


@pytest.fixture
def clean_environment(monkeypatch):
    """No RETENTION_* or DAGSTER_HOME from the caller's shell; whatever a test or the CLI itself
    sets is undone afterwards (set first, so that monkeypatch restores even a variable that was unset)."""
    for name in ENVIRONMENT:
        monkeypatch.setenv(name, "unset-by-test")
        monkeypatch.delenv(name)


@pytest.fixture
def cli(capsys):
    """cli('hold', 'list') → Outcome; argparse's SystemExit becomes its exit code."""
    from retention_pipelines.cli import main

    def invoke(*args: str) -> Outcome:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        outcome = Outcome(code, captured.out, captured.err)
        assert PASSWORD not in outcome.text, outcome.text
        assert "Traceback" not in outcome.err, outcome.err
        return outcome

    return invoke
