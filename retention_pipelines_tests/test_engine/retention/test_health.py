"""The health check catches each missing dependency, naming it and what to do."""

from __future__ import annotations

import dagster as dg
import redis

from retention_pipelines.dagster_wiring.health import HEALTH_KEY, build_health_defs
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.retention.health import check_health
from retention_pipelines.stores import AppDatabase, archive_store_from_url, blob_store_from_url
from retention_pipelines_tests.support.servers import free_port


def enabled(policies):
    return [p for p in policies.domains.values() if p.enabled]


def probes_of(database, policies, archive_url, blob_url, redis_url):
    return {p.name: p for p in check_health(database, enabled(policies), archive_store_from_url(archive_url),
                                            blob_store_from_url(blob_url), redis_url)}


def test_everything_there(pg_database, policies, s3_archive_url, local_archive_url, redis_url, tmp_path):
    probes = probes_of(pg_database, policies, s3_archive_url, tmp_path.as_uri(), redis_url)
    assert all(p.ok for p in probes.values()), probes
    assert {"database", "migrations", "lock_service", "archive_store", "blob_store",
            "policy:quiz_responses", "policy:meal_plans"} <= set(probes)


def test_each_missing_dependency_is_named(pg_database, policies, s3_env, redis_url, tmp_path):
    with pg_database.engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX magic_link_tokens_expires_at_idx")
    redis.Redis.from_url(redis_url).set("retention:lock:quiz_responses", "stale")  # no TTL
    probes = probes_of(pg_database, policies, "s3://no-such-bucket-here/x", tmp_path.as_uri(), redis_url)
    failing = {name for name, p in probes.items() if not p.ok}
    assert failing == {"policy:magic_link_tokens", "lock_service", "archive_store"}
    assert "no index on expires_at" in probes["policy:magic_link_tokens"].message
    assert "retention:lock:quiz_responses" in probes["lock_service"].message
    assert "docs/runbooks/health.md#archive_store" in probes["archive_store"].message


def test_a_domain_whose_subject_lookup_reads_no_index_fails_naming_the_statement(pg_database, policies,
                                                                                 local_archive_url, tmp_path):
    probes = probes_of(pg_database, policies, local_archive_url, tmp_path.as_uri(), None)
    assert "through the index quiz_responses_email_subject_key_idx" in probes["policy:quiz_responses"].message
    with pg_database.engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX quiz_responses_email_subject_key_idx")
    probes = probes_of(pg_database, policies, local_archive_url, tmp_path.as_uri(), None)
    assert {name for name, p in probes.items() if not p.ok} == {"policy:quiz_responses"}
    message = probes["policy:quiz_responses"].message
    assert "domain quiz_responses, field subject_column" in message
    assert ("CREATE INDEX quiz_responses_email_subject_key_idx ON quiz_responses ((CASE WHEN (email ~ '[^ -~]') "
            "THEN '' ELSE lower(trim(email) COLLATE \"C\") END))") in message
    assert "docs/runbooks/health.md#policy" in message


def test_the_demo_database_says_the_subject_index_is_not_checked(sqlite_database, policies, local_archive_url,
                                                                  tmp_path):
    probes = probes_of(sqlite_database, policies, local_archive_url, tmp_path.as_uri(), None)
    assert probes["policy:quiz_responses"].ok
    assert "the index of the subject lookup is not checked" in probes["policy:quiz_responses"].message


def test_an_unreachable_database_stops_the_probes_there(policies, local_archive_url, tmp_path):
    database = AppDatabase(f"postgresql+psycopg2://u:secret@127.0.0.1:{free_port()}/x")
    probes = probes_of(database, policies, local_archive_url, tmp_path.as_uri(), None)
    assert list(probes) == ["database"] and not probes["database"].ok
    assert "secret" not in probes["database"].message and "RETENTION_DATABASE_URL" in probes["database"].message


def test_the_health_asset_reports_one_check_per_dependency(policies, postgres_server, redis_url, local_archive_url,
                                                           tmp_path):
    behind = AppDatabase(postgres_server.create_database("health_behind"))
    from retention_pipelines.demo import create_app_tables

    create_app_tables(behind)  # app tables, no retention tables
    stores = RetentionStores(database_url=behind.engine.url.render_as_string(hide_password=False),
                             archive_url=local_archive_url, redis_url=redis_url, blob_url=tmp_path.as_uri())
    defs = build_health_defs(enabled(policies))
    with dg.instance_for_test() as instance:
        result = dg.materialize(defs.assets, instance=instance, resources={"retention_stores": stores},
                                raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["migrations"].passed
    assert "retention db upgrade" in checks["migrations"].metadata["message"].value
    assert checks["database"].passed and checks["archive_store"].passed and checks["blob_store"].passed
    assert all(e.asset_key == HEALTH_KEY for e in checks.values())
    behind.dispose()
