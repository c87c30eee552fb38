"""The retention-lag sensor, tick by tick, against a real Dagster instance and PostgreSQL."""

import uuid
from datetime import timedelta

import dagster as dg
import pytest

from retention_pipelines.defs.common import DOMAIN_TAG
from retention_pipelines.defs.domain_factory import build_domain_defs
from retention_pipelines.defs.resources import RetentionStores
from retention_pipelines.defs.sla_sensors import CATCH_UP_TAG, build_retention_lag_sensor
from retention_pipelines.engine.sla import RETENTION_LAG, Breaches
from retention_pipelines_tests.app_rows import insert_quiz_rows


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.fixture
def quiz(policies):
    policy = policies.domains["quiz_responses"]
    domain = build_domain_defs(policy, policies.policy_version)
    sensor = build_retention_lag_sensor([policy], policies.policy_version, list(domain.jobs))
    return policy, domain, sensor


def tick(sensor, instance, stores, domain):
    definitions = dg.Definitions.merge(domain, dg.Definitions(sensors=[sensor], resources={"retention_stores": stores}))
    with dg.build_sensor_context(instance=instance, resources={"retention_stores": stores},
                                 definitions=definitions) as context:
        return list(sensor.evaluate_tick(context).run_requests)


def record_run(instance, request, status):
    """What the daemon does with a request: a run of the domain's job, with its tags."""
    run = dg.DagsterRun(job_name=request.job_name, run_id=str(uuid.uuid4()), status=status, tags=request.tags)
    instance.add_run(run)
    return run


def test_a_lag_breach_opens_once_requests_one_catch_up_and_closes_after_it(
        quiz, policies, pg_database, pg_url, redis_url, local_archive_url, instance):
    policy, domain, sensor = quiz
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url)
    insert_quiz_rows(pg_database, [timedelta(hours=30)] * 3 + [timedelta(hours=2)])  # 6 h past a 1 h SLA

    [request] = tick(sensor, instance, stores, domain)
    assert request.job_name == "quiz_responses_retention_job"
    assert request.tags[DOMAIN_TAG] == "quiz_responses"
    [breach] = Breaches(pg_database).all()
    assert breach["kind"] == RETENTION_LAG and breach["closed_at"] is None
    assert breach["observed_seconds"] > timedelta(hours=5).total_seconds()
    assert request.tags[CATCH_UP_TAG] == str(breach["id"])

    # The daemon launched the run: while it is in flight, however many ticks come, no second run
    # and no second breach.
    queued = record_run(instance, request, dg.DagsterRunStatus.STARTED)
    for _ in range(4):
        assert tick(sensor, instance, stores, domain) == []
    [breach] = Breaches(pg_database).all()
    assert breach["run_id"] == queued.run_id and breach["closed_at"] is None

    # The catch-up run does its work; the next tick finds the lag gone and closes the breach.
    result = dg.materialize([*domain.assets], partition_key=request.partition_key, instance=instance,
                            resources={"retention_stores": stores}, tags=request.tags)
    assert result.success
    instance.delete_run(queued.run_id)
    assert tick(sensor, instance, stores, domain) == []
    [breach] = Breaches(pg_database).all()
    assert breach["closed_at"] is not None and breach["duration_seconds"] >= 0


def test_a_catch_up_that_did_not_clear_the_lag_gets_one_more_run_not_a_storm(
        quiz, pg_database, pg_url, redis_url, local_archive_url, instance):
    policy, domain, sensor = quiz
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url)
    insert_quiz_rows(pg_database, [timedelta(hours=30)])
    [first] = tick(sensor, instance, stores, domain)
    record_run(instance, first, dg.DagsterRunStatus.FAILURE)  # it failed; the rows are still there
    [second] = tick(sensor, instance, stores, domain)
    assert second.run_key != first.run_key
    assert second.tags[CATCH_UP_TAG] == first.tags[CATCH_UP_TAG]  # the same breach, still one
    assert len(Breaches(pg_database).all()) == 1


def test_no_breach_while_the_lag_is_within_the_sla(quiz, pg_database, pg_url, redis_url, local_archive_url,
                                                   instance):
    policy, domain, sensor = quiz
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url)
    insert_quiz_rows(pg_database, [timedelta(hours=24, minutes=30), timedelta(hours=3)])  # 30 min past, SLA 1 h
    assert tick(sensor, instance, stores, domain) == []
    assert Breaches(pg_database).all() == []


def test_the_lag_is_one_index_backed_query(policies, pg_database, local_archive_url):
    """The first entry of the clock index, not a scan: EXPLAIN of the lag query on a large-ish table."""
    import sqlalchemy as sa

    from retention_pipelines_tests.test_engine.helpers import bulk_insert_pg, engine_for

    bulk_insert_pg(pg_database, 20_000, "1 hour", email="fresh@example.invalid")
    bulk_insert_pg(pg_database, 100, "2 days")
    with pg_database.engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")
    engine = engine_for(policies.domains["quiz_responses"], policies, pg_database, local_archive_url)
    captured = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "min(" in statement and "quiz_responses" in statement:
            captured.append((statement, parameters))

    sa.event.listen(pg_database.engine, "before_cursor_execute", capture)
    try:
        assert engine.retention_lag() > timedelta(hours=23)
    finally:
        sa.event.remove(pg_database.engine, "before_cursor_execute", capture)
    [(statement, parameters)] = captured
    with pg_database.engine.connect() as connection:
        cursor = connection.connection.cursor()
        cursor.execute("EXPLAIN " + statement, parameters)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "quiz_responses_created_at_idx" in plan and "Seq Scan on quiz_responses" not in plan, plan
