"""The retention-lag sensor, tick by tick, against a real Dagster instance and PostgreSQL."""

import json
import uuid
from datetime import timedelta

import dagster as dg
import pytest

from retention_pipelines.dagster_wiring.common import DOMAIN_TAG
from retention_pipelines.dagster_wiring.domain_factory import build_domain_defs
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.sla_sensors import CATCH_UP_TAG, build_retention_lag_sensor
from retention_pipelines.engine.oversight.sla import RETENTION_LAG, Breaches
from retention_pipelines_tests.support.app_rows import insert_quiz_rows


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
    assert breach["observed"] > timedelta(hours=5).total_seconds()
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

    from retention_pipelines_tests.support.app_rows import bulk_insert_pg
    from retention_pipelines_tests.support.engines import engine_for

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


def run_job(policy, policies, stores, instance):
    from retention_pipelines.dagster_wiring.common import domain_partitions, job_name

    domain = build_domain_defs(policy, policies.policy_version)
    definitions = dg.Definitions.merge(domain, dg.Definitions(resources={"retention_stores": stores}))
    job = definitions.resolve_job_def(job_name(policy.name))
    return job.execute_in_process(instance=instance, partition_key=domain_partitions(policy).get_last_partition_key(),
                                  raise_on_error=False)


def evaluate_run_sensor(sensor, result, instance, stores, failure=False):
    event = result.get_run_failure_event() if failure else result.get_run_success_event()
    with dg.build_run_status_sensor_context(sensor_name=sensor.name, dagster_event=event, dagster_instance=instance,
                                            dagster_run=result.dagster_run,
                                            resources={"retention_stores": stores}) as context:
        sensor(context.for_run_failure() if failure else context)


def test_failures_in_a_row_open_a_breach_and_a_success_closes_it(policies, postgres_server, pg_url, pg_database,
                                                                 redis_url, local_archive_url, instance):
    from retention_pipelines.dagster_wiring.sla_sensors import build_run_sensors
    from retention_pipelines.engine.oversight.sla import RUN_FAILURES

    policy = policies.domains["quiz_responses"]
    jobs = list(build_domain_defs(policy, policies.policy_version).jobs)
    finished, failed = build_run_sensors([policy], jobs, policies.policy_version)
    broken = RetentionStores(database_url=postgres_server.create_database(f"empty_{uuid.uuid4().hex[:6]}"),
                             archive_url=local_archive_url, redis_url=redis_url)  # no tables: every run fails
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url)
    for attempt in range(1, policy.sla.max_consecutive_failures + 1):
        result = run_job(policy, policies, broken, instance)
        assert not result.success
        evaluate_run_sensor(failed, result, instance, stores, failure=True)
        opened = [b for b in Breaches(pg_database).all() if b["kind"] == RUN_FAILURES]
        assert len(opened) == (1 if attempt == policy.sla.max_consecutive_failures else 0)
    assert opened[0]["observed"] == policy.sla.max_consecutive_failures and opened[0]["run_id"] == result.run_id

    result = run_job(policy, policies, stores, instance)
    assert result.success
    evaluate_run_sensor(finished, result, instance, stores)
    [breach] = [b for b in Breaches(pg_database).all() if b["kind"] == RUN_FAILURES]
    assert breach["closed_at"] is not None


def test_a_run_over_its_time_limit_opens_a_run_duration_breach(policies, pg_url, pg_database, redis_url,
                                                              local_archive_url, instance):
    from retention_pipelines.dagster_wiring.sla_sensors import build_run_sensors
    from retention_pipelines.engine.oversight.sla import RUN_DURATION

    policy = policies.domains["quiz_responses"]
    hasty = policy.model_copy(update={
        "sla": policy.sla.model_copy(update={"max_run_duration": timedelta(milliseconds=1)})})
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url)
    result = run_job(policy, policies, stores, instance)
    assert result.success
    finished, _ = build_run_sensors([hasty], list(build_domain_defs(policy, policies.policy_version).jobs),
                                    policies.policy_version)
    evaluate_run_sensor(finished, result, instance, stores)
    [breach] = Breaches(pg_database).all()
    assert breach["kind"] == RUN_DURATION and breach["closed_at"] is None and breach["run_id"] == result.run_id
    assert breach["observed"] > breach["threshold"]

    # The same run judged against the shipped 30-minute limit closes it.
    finished, _ = build_run_sensors([policy], list(build_domain_defs(policy, policies.policy_version).jobs),
                                    policies.policy_version)
    evaluate_run_sensor(finished, result, instance, stores)
    [breach] = Breaches(pg_database).all()
    assert breach["closed_at"] is not None


def test_domain_jobs_carry_their_max_runtime(policies):
    from retention_pipelines.definitions import defs

    for name, policy in policies.domains.items():
        job = defs.resolve_job_def(f"{name}_retention_job")
        assert job.tags["dagster/max_runtime"] == str(int(policy.sla.max_run_duration.total_seconds()))


def test_a_breach_alerts_once_when_it_opens_and_once_when_it_closes(
        quiz, pg_database, pg_url, redis_url, local_archive_url, instance, receiver):
    policy, domain, sensor = quiz
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url,
                             alert_webhook_url=receiver.url)
    insert_quiz_rows(pg_database, [timedelta(hours=30)] * 2, email="private.person@example.com")
    [request] = tick(sensor, instance, stores, domain)
    running = record_run(instance, request, dg.DagsterRunStatus.STARTED)
    for _ in range(3):
        tick(sensor, instance, stores, domain)
    assert [(a["kind"], a["event"]) for a in receiver.received] == [("retention_lag", "opened")]
    dg.materialize([*domain.assets], partition_key=request.partition_key, instance=instance,
                   resources={"retention_stores": stores}, tags=request.tags)
    instance.delete_run(running.run_id)
    tick(sensor, instance, stores, domain)
    tick(sensor, instance, stores, domain)
    assert [(a["kind"], a["event"]) for a in receiver.received] == [("retention_lag", "opened"),
                                                                   ("retention_lag", "closed")]
    assert "@" not in json.dumps(receiver.received)


# Escalation ----------------------------------------------------------------------------------------
def alerts_seen(receiver) -> list[tuple[str, str, int]]:
    return [(a["kind"], a["event"], a["level"]) for a in receiver.received]


def test_a_lag_breach_alerts_when_it_opens_escalates_and_closes_never_in_between(
        quiz, pg_database, pg_url, redis_url, local_archive_url, instance, receiver):
    policy, domain, sensor = quiz
    assert policy.sla.max_lag == timedelta(hours=1) and policy.sla.escalate_at == [2.0, 4.0]
    deadline = policy.retain_for
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url,
                             alert_webhook_url=receiver.url)
    # Kept 1 h 30 min past the deadline: over the 1 h SLA, under twice it.
    insert_quiz_rows(pg_database, [deadline + timedelta(hours=1, minutes=30)] * 2,
                     email="private.person@example.com")
    [request] = tick(sensor, instance, stores, domain)
    assert alerts_seen(receiver) == [("retention_lag", "opened", 1)]
    running = record_run(instance, request, dg.DagsterRunStatus.STARTED)
    for _ in range(4):
        assert tick(sensor, instance, stores, domain) == []
    assert alerts_seen(receiver) == [("retention_lag", "opened", 1)]
    [breach] = Breaches(pg_database).all()
    assert breach["escalation_level"] == 1

    # Older data: the lag passes twice the SLA. One escalation, then quiet again.
    insert_quiz_rows(pg_database, [deadline + timedelta(hours=2, minutes=30)])
    tick(sensor, instance, stores, domain)
    assert alerts_seen(receiver) == [("retention_lag", "opened", 1), ("retention_lag", "escalated", 2)]
    escalated = receiver.received[-1]
    assert "(level 2)" in escalated["text"] and escalated["details"]["breach_id"] == breach["id"]
    assert escalated["details"]["lag_seconds"] >= 2 * 3600
    [breach] = Breaches(pg_database).all()
    assert breach["escalation_level"] == 2 and breach["closed_at"] is None
    assert breach["observed"] >= 2 * 3600
    for _ in range(4):
        assert tick(sensor, instance, stores, domain) == []
    assert len(receiver.received) == 2

    # Four times the SLA: level 3, once.
    insert_quiz_rows(pg_database, [deadline + timedelta(hours=4, minutes=30)])
    for _ in range(3):
        tick(sensor, instance, stores, domain)
    assert alerts_seen(receiver)[2:] == [("retention_lag", "escalated", 3)]
    assert Breaches(pg_database).all()[0]["escalation_level"] == 3

    # The catch-up run clears the lag: one "closed", then nothing more.
    result = dg.materialize([*domain.assets], partition_key=request.partition_key, instance=instance,
                            resources={"retention_stores": stores}, tags=request.tags)
    assert result.success
    instance.delete_run(running.run_id)
    for _ in range(3):
        assert tick(sensor, instance, stores, domain) == []
    assert alerts_seen(receiver) == [("retention_lag", "opened", 1), ("retention_lag", "escalated", 2),
                                     ("retention_lag", "escalated", 3), ("retention_lag", "closed", 1)]
    [breach] = Breaches(pg_database).all()
    assert breach["closed_at"] is not None and breach["escalation_level"] == 3
    assert "@" not in json.dumps(receiver.received)


def test_a_lag_that_shrinks_but_stays_over_the_sla_does_not_de_escalate_or_alert(
        quiz, pg_database, pg_url, redis_url, local_archive_url, instance, receiver):
    policy, domain, sensor = quiz
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url,
                             alert_webhook_url=receiver.url)
    oldest = insert_quiz_rows(pg_database, [policy.retain_for + timedelta(hours=2, minutes=30)])
    insert_quiz_rows(pg_database, [policy.retain_for + timedelta(hours=1, minutes=30)])
    [request] = tick(sensor, instance, stores, domain)
    record_run(instance, request, dg.DagsterRunStatus.STARTED)
    # Opened straight at level 2: the first observation is already twice the SLA.
    assert alerts_seen(receiver) == [("retention_lag", "opened", 2)]
    with pg_database.engine.begin() as connection:  # the oldest row goes; the lag falls to 1 h 30 min
        connection.exec_driver_sql("DELETE FROM quiz_responses WHERE id = %(id)s", {"id": oldest[0]})
    for _ in range(3):
        tick(sensor, instance, stores, domain)
    assert alerts_seen(receiver) == [("retention_lag", "opened", 2)]
    [breach] = Breaches(pg_database).all()
    assert breach["escalation_level"] == 2 and breach["closed_at"] is None
    assert breach["observed"] < 2 * 3600


def test_failures_in_a_row_reaching_twice_the_limit_escalate_once(policies, postgres_server, pg_url, pg_database,
                                                                  redis_url, local_archive_url, instance, receiver):
    from retention_pipelines.dagster_wiring.sla_sensors import build_run_sensors
    from retention_pipelines.engine.oversight.sla import RUN_FAILURES
    policy = policies.domains["quiz_responses"]
    limit = policy.sla.max_consecutive_failures
    jobs = list(build_domain_defs(policy, policies.policy_version).jobs)
    finished, failed = build_run_sensors([policy], jobs, policies.policy_version)
    broken = RetentionStores(database_url=postgres_server.create_database(f"empty_{uuid.uuid4().hex[:6]}"),
                             archive_url=local_archive_url, redis_url=redis_url)  # no tables: every run fails
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url,
                             alert_webhook_url=receiver.url)
    expected = []
    for attempt in range(1, 2 * limit + 2):
        result = run_job(policy, policies, broken, instance)
        assert not result.success
        evaluate_run_sensor(failed, result, instance, stores, failure=True)
        if attempt == limit:
            expected.append(("run_failures", "opened", 1))
        elif attempt == 2 * limit:
            expected.append(("run_failures", "escalated", 2))
        assert alerts_seen(receiver) == expected, f"after {attempt} failures in a row"
    [breach] = [b for b in Breaches(pg_database).all() if b["kind"] == RUN_FAILURES]
    assert breach["escalation_level"] == 2 and breach["observed"] == 2 * limit + 1
    assert breach["run_id"] == result.run_id
    escalated = receiver.received[-1]
    assert escalated["details"]["failures_in_a_row"] == 2 * limit and "(level 2)" in escalated["text"]

    result = run_job(policy, policies, stores, instance)
    assert result.success
    evaluate_run_sensor(finished, result, instance, stores)
    assert alerts_seen(receiver) == [*expected, ("run_failures", "closed", 1)]
