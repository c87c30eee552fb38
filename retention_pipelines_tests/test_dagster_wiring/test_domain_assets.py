"""quiz_responses' assets materialized by Dagster against real PostgreSQL, Redis and a Dagster instance."""

import uuid
from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from retention_pipelines.dagster_wiring.common import DRY_RUN_TAG, domain_partitions
from retention_pipelines.dagster_wiring.domain_factory import build_domain_defs, build_dry_run_job
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine import Acted
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.stores import domain_locks
from retention_pipelines_tests.support.app_rows import audit_entries, insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.engines import engine_for
from retention_pipelines_tests.support.queue_rows import NOTES_FK, create_notes_table, refer_to

EMAIL = "someone.private@example.invalid"


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def materialize(policies, stores, instance, partition_key=None, tags=None):
    policy = policies.domains["quiz_responses"]
    domain = build_domain_defs(policy, policies.policy_version)
    partition_key = partition_key or domain_partitions(policy).get_last_partition_key()
    return dg.materialize(list(domain.assets), partition_key=partition_key, instance=instance,
                          resources={"retention_stores": stores}, tags=tags or {}, raise_on_error=False)


def dry_run(policies, stores, instance, domain="quiz_responses"):
    """The domain's dry-run job for its latest window, as the launchpad and `retention run --dry-run` start it."""
    policy = policies.domains[domain]
    job = build_dry_run_job(policy, policies.policy_version, domain_partitions(policy))
    return job.execute_in_process(instance=instance, partition_key=domain_partitions(policy).get_last_partition_key(),
                                  resources={"retention_stores": stores}, raise_on_error=False)


def output_metadata(result) -> dict:
    return {k: v.value for e in result.all_events if e.event_type_value == "STEP_OUTPUT"
            for k, v in e.step_output_data.metadata.items()}


def metadata_of(result) -> dict:
    values = {}
    for event in result.get_asset_materialization_events():
        values[event.asset_key.path[-1]] = {k: v.value for k, v in event.materialization.metadata.items()}
    return values


def check_results(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def failure_messages(result) -> str:
    return " ".join(e.step_failure_data.user_failure_data.description for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE" and e.step_failure_data.user_failure_data)


@pytest.fixture
def stores(pg_url, redis_url, local_archive_url):
    return RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url)


def test_run_deletes_due_rows_with_metadata_and_passing_checks(policies, pg_database, stores, instance):
    due = insert_quiz_rows(pg_database, [timedelta(hours=25)] * 7 + [timedelta(days=40)] * 3, email=EMAIL)
    young = insert_quiz_rows(pg_database, [timedelta(hours=2)] * 4, email=EMAIL)
    result = materialize(policies, stores, instance)
    assert result.success
    assert remaining_ids(pg_database) == set(young)
    assert {e["record_id"] for e in audit_entries(pg_database)} == set(due)
    metadata = metadata_of(result)
    assert metadata["expired_records"]["rows_found"] == 10
    assert metadata["expired_records"]["policy_version"] == policies.policy_version
    assert metadata["deletion"]["rows_deleted"] == 10
    assert metadata["audit"]["audit_rows"] == 10 and metadata["audit"]["consistent"] is True
    assert metadata["deletion"]["dry_run"] is False
    assert all(check.passed for check in check_results(result).values())
    assert len(check_results(result)) == 5
    # No personal data anywhere Dagster keeps forever: metadata, logs, audit rows.
    logs = " ".join(str(entry.user_message) for entry in instance.all_logs(result.run_id))
    assert EMAIL not in logs and EMAIL not in repr(metadata)
    assert all("@" not in str(value) for entry in audit_entries(pg_database) for value in entry.values())


def test_dry_run_changes_nothing_and_reports_counts(policies, pg_database, stores, instance):
    insert_quiz_rows(pg_database, [timedelta(hours=30)] * 5 + [timedelta(hours=1)] * 2)
    before = remaining_ids(pg_database)
    result = dry_run(policies, stores, instance)
    assert result.success
    assert remaining_ids(pg_database) == before
    assert audit_entries(pg_database) == []
    metadata = output_metadata(result)
    assert metadata["dry_run"] is True and metadata["rows_deleted"] == 5 and metadata["rows_found"] == 5
    # Nothing in the assets' history: no materialization, no check evaluation, no planned asset.
    assert result.get_asset_materialization_events() == [] and result.get_asset_check_evaluations() == []
    assert not [e for e in instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.asset_key]


def test_the_asset_job_refuses_a_run_tagged_dry_and_changes_nothing(policies, pg_database, stores, instance):
    insert_quiz_rows(pg_database, [timedelta(hours=30)] * 3)
    before = remaining_ids(pg_database)
    result = materialize(policies, stores, instance, tags={DRY_RUN_TAG: "true"})
    assert not result.success
    assert "quiz_responses_dry_run_job" in failure_messages(result)
    assert remaining_ids(pg_database) == before and audit_entries(pg_database) == []
    assert metadata_of(result) == {}


def test_old_partition_takes_only_rows_due_before_its_window_ends(policies, pg_database, stores, instance):
    old_partition_rows = insert_quiz_rows(pg_database, [timedelta(hours=24 + 10)] * 3)
    later_due = insert_quiz_rows(pg_database, [timedelta(hours=24 + 1)] * 2)
    now = pg_database.now()
    window_start = (now - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    result = materialize(policies, stores, instance, partition_key=window_start.strftime("%Y-%m-%d-%H:%M"))
    assert result.success
    assert remaining_ids(pg_database) == set(later_due)
    assert set(old_partition_rows).isdisjoint(remaining_ids(pg_database))
    metadata = metadata_of(result)["expired_records"]
    assert metadata["rows_overdue_caught_up"] == 3 and metadata["rows_due_in_window"] == 0


def test_a_busy_domain_fails_with_a_clear_message_and_changes_nothing(policies, pg_database, stores, redis_url,
                                                                       instance, tmp_path, monkeypatch):
    monkeypatch.setenv("RETENTION_LOCK_WAIT_SECONDS", "0")  # fails at once (test_domain_lock.py: the wait)
    insert_quiz_rows(pg_database, [timedelta(hours=30)] * 3)
    before = remaining_ids(pg_database)
    held = domain_locks(redis_url, tmp_path, 30).acquire("quiz_responses")
    try:
        result = materialize(policies, stores, instance)
    finally:
        held.release()
    assert not result.success
    assert "quiz_responses is being cleaned by another run" in failure_messages(result)
    assert remaining_ids(pg_database) == before


def test_missing_migrations_stop_the_run_naming_the_command(policies, postgres_server, redis_url,
                                                            local_archive_url, instance):
    url = postgres_server.create_database("behind")
    engine = sa.create_engine(url)
    from retention_pipelines.demo import app_schema_sql

    with engine.begin() as connection:
        for statement in app_schema_sql("postgresql"):
            connection.exec_driver_sql(statement)
    engine.dispose()
    result = materialize(policies, RetentionStores(database_url=url, archive_url=local_archive_url,
                                                   redis_url=redis_url), instance)
    assert not result.success
    assert "retention db upgrade" in failure_messages(result)


class StoresWhoseEngineSkipsDeletes(RetentionStores):
    """A deliberately broken engine (it acts on nothing): what the blocking check is there to catch."""

    def engine(self, policy, policy_version):
        engine = super().engine(policy, policy_version)
        engine.act = lambda found, archived, run_id, dry_run=False, lock=None: Acted(action="deleted", dry_run=False)
        return engine


def test_rows_left_past_deadline_fail_the_blocking_check_and_stop_the_audit(policies, pg_database, pg_url,
                                                                            redis_url, local_archive_url, instance):
    insert_quiz_rows(pg_database, [timedelta(hours=30)] * 2)
    stores = StoresWhoseEngineSkipsDeletes(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url)
    result = materialize(policies, stores, instance)
    deadline_check = check_results(result)["no_rows_past_deadline"]
    assert not deadline_check.passed and deadline_check.severity == dg.AssetCheckSeverity.ERROR
    assert deadline_check.metadata["rows_past_deadline"].value == 2
    assert "audit" not in metadata_of(result)  # the blocking check kept the audit asset from materializing
    assert not result.success


def test_a_dry_run_needs_no_lock_and_takes_none(policies, pg_database, stores, redis_url, instance, tmp_path):
    insert_quiz_rows(pg_database, [timedelta(hours=30)] * 3)
    held = domain_locks(redis_url, tmp_path, 30).acquire("quiz_responses")
    try:
        result = dry_run(policies, stores, instance)
        held.ensure_held()  # still ours: the dry run neither took nor broke it
    finally:
        held.release()
    assert result.success
    assert output_metadata(result)["rows_deleted"] == 3
    assert len(remaining_ids(pg_database)) == 3


def test_meal_plans_on_s3_and_its_orphans_report(policies, pg_database, pg_url, redis_url, s3_archive_url, instance):
    import boto3

    from retention_pipelines.dagster_wiring.orphans import NO_ORPHANS_CHECK, build_orphans_defs
    from retention_pipelines_tests.support.app_rows import insert_meal_plans_at, meal_plan_rows

    hot = f"hot-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=hot)
    for key in ("plans/old.pdf", "plans/new.pdf", "plans/stray.pdf"):
        s3.put_object(Bucket=hot, Key=key, Body=b"%PDF " + key.encode())
    now = pg_database.now()
    old, new = insert_meal_plans_at(pg_database, [now - timedelta(days=91), now - timedelta(days=3)],
                                    ["plans/old.pdf", "plans/new.pdf"])
    insert_meal_plans_at(pg_database, [now - timedelta(days=1)], ["plans/lost.pdf"])
    stores = RetentionStores(database_url=pg_url, archive_url=s3_archive_url, redis_url=redis_url,
                             blob_url=f"s3://{hot}")
    policy = policies.domains["meal_plans"]
    domain = build_domain_defs(policy, policies.policy_version)
    result = dg.materialize(list(domain.assets), instance=instance,
                            partition_key=domain_partitions(policy).get_last_partition_key(),
                            resources={"retention_stores": stores}, raise_on_error=False,
                            selection=[dg.AssetKey(["meal_plans", step]) for step in
                                       ("expired_records", "archive", "deletion", "audit")])
    assert result.success
    assert all(check.passed for check in check_results(result).values())
    assert metadata_of(result)["deletion"]["rows_redacted"] == 1
    assert meal_plan_rows(pg_database)[old][0] is None and meal_plan_rows(pg_database)[new][0] == "plans/new.pdf"

    [orphans] = build_orphans_defs(policy, policies.policy_version).assets
    report = dg.materialize([orphans], instance=instance, resources={"retention_stores": stores})
    counts = metadata_of(report)["orphans"]
    assert counts["objects_without_row"] == 1 and counts["rows_without_object"] == 1  # stray.pdf; lost.pdf
    [check] = report.get_asset_check_evaluations()
    assert check.check_name == NO_ORPHANS_CHECK and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=hot)["Contents"]} == {"plans/new.pdf", "plans/stray.pdf"}


def test_a_run_pushes_its_figures_to_the_pushgateway(policies, pg_database, pg_url, redis_url, local_archive_url,
                                                    instance, pushgateway):
    import urllib.request

    insert_quiz_rows(pg_database, [timedelta(hours=30)] * 3 + [timedelta(hours=1)])
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url,
                             pushgateway_url=pushgateway.url)
    result = materialize(policies, stores, instance)
    assert result.success
    audit = metadata_of(result)["audit"]
    assert audit["metrics_pushed"] is True and audit["retention_lag_seconds"] == 0
    with urllib.request.urlopen(f"{pushgateway.url}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    samples = {line.split("{")[0]: line for line in exposition.splitlines()
               if line.startswith("retention_") and 'domain="quiz_responses"' in line}
    assert samples["retention_rows_acted_on"].endswith(" 3")
    assert samples["retention_rows_failed"].endswith(" 0")
    assert samples["retention_lag_seconds"].endswith(" 0")
    assert "retention_run_duration_seconds" in samples and "retention_last_run_timestamp_seconds" in samples


def test_an_unreachable_pushgateway_does_not_fail_the_run(policies, pg_database, pg_url, redis_url,
                                                          local_archive_url, instance):
    from retention_pipelines_tests.support.servers import free_port

    insert_quiz_rows(pg_database, [timedelta(hours=30)])
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url,
                             pushgateway_url=f"http://127.0.0.1:{free_port()}")
    result = materialize(policies, stores, instance)
    assert result.success and metadata_of(result)["audit"]["metrics_pushed"] is False
    assert remaining_ids(pg_database) == set()


def test_a_blocked_row_is_queued_and_counted_apart_until_its_item_closes(
        policies, pg_database, stores, instance, local_archive_url):
    """A row a run cannot finish is in a person's hands: queued once, counted apart by the
    no_rows_past_deadline check and by the retention lag, so that one blocked row does not fail
    every run and request a catch-up run on every tick. Closed while the row remains, it counts
    again until a run queues it anew."""
    create_notes_table(pg_database)
    due = insert_quiz_rows(pg_database, [timedelta(hours=30, minutes=i) for i in range(4)])
    kept = insert_quiz_rows(pg_database, [timedelta(hours=2)])
    refer_to(pg_database, due[0])

    result = materialize(policies, stores, instance)
    assert result.success
    assert remaining_ids(pg_database) == {due[0], *kept}
    [item] = ManualQueue(pg_database).list()
    assert (item.record_id, item.reason, item.status) == (due[0], "delete_blocked", "open")
    assert NOTES_FK in item.detail
    check = check_results(result)["no_rows_past_deadline"]
    assert check.passed
    assert check.metadata["rows_past_deadline"].value == 0
    assert check.metadata["rows_waiting_in_manual_queue"].value == 1
    assert metadata_of(result)["audit"]["consistent"] is True

    engine = engine_for(policies.domains["quiz_responses"], policies, pg_database, local_archive_url)
    assert engine.retention_lag() == timedelta(0)
    assert engine.count_remaining(pg_database.now(), waiting_for_a_person=None) == 1

    # A second run meets the same row: one more attempt on the same item, and still no failure.
    again = materialize(policies, stores, instance)
    assert again.success and check_results(again)["no_rows_past_deadline"].passed
    [item] = ManualQueue(pg_database).list()
    assert item.attempts == 2

    # Dismissed while the row still cannot go: it is retention lag again, until the next run meets
    # it and puts it back in the queue as a new item.
    ManualQueue(pg_database).dismiss(item.id, "oncall-ana", "the note must stay; handled elsewhere")
    assert engine.retention_lag() > timedelta(hours=5)
    third = materialize(policies, stores, instance)
    assert third.success and check_results(third)["no_rows_past_deadline"].passed
    dismissed, requeued = ManualQueue(pg_database).list()
    assert (dismissed.status, requeued.status, requeued.attempts) == ("dismissed", "open", 1)
    assert requeued.record_id == due[0] and engine.retention_lag() == timedelta(0)


def test_rows_without_a_clock_are_kept_and_counted_on_the_deadline_check(policies, pg_database, stores, instance):
    """A nullable clock with clock_nulls: keep: its NULL rows stay, never under a green check unseen."""
    with pg_database.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE quiz_responses ALTER COLUMN created_at DROP NOT NULL")
    insert_quiz_rows(pg_database, [timedelta(hours=25)] * 2)
    young = insert_quiz_rows(pg_database, [timedelta(hours=1)])
    without_clock = insert_quiz_rows(pg_database, [timedelta(hours=30)] * 3)
    with pg_database.engine.begin() as connection:
        connection.execute(sa.text("UPDATE quiz_responses SET created_at = NULL WHERE id = ANY(CAST(:ids AS uuid[]))"),
                           {"ids": without_clock})
    policy = policies.domains["quiz_responses"].model_copy(update={"clock_nulls": "keep"})
    domain = build_domain_defs(policy, policies.policy_version)
    result = dg.materialize(list(domain.assets),
                            partition_key=domain_partitions(policy).get_last_partition_key(), instance=instance,
                            resources={"retention_stores": stores}, raise_on_error=False)
    assert result.success
    assert remaining_ids(pg_database) == set(young) | set(without_clock)
    check = check_results(result)["no_rows_past_deadline"]
    assert check.passed
    assert check.metadata["rows_without_clock"].value == 3


def test_one_asset_materialized_alone_runs_the_steps_it_needs_and_records_only_itself(policies, pg_database, stores,
                                                                                       instance):
    due = insert_quiz_rows(pg_database, [timedelta(hours=30)] * 4)
    policy = policies.domains["quiz_responses"]
    domain = build_domain_defs(policy, policies.policy_version)
    result = dg.materialize(list(domain.assets), selection=[dg.AssetKey(["quiz_responses", "deletion"])],
                            partition_key=domain_partitions(policy).get_last_partition_key(), instance=instance,
                            resources={"retention_stores": stores}, raise_on_error=False)
    assert result.success, failure_messages(result)
    assert set(metadata_of(result)) == {"deletion"} and metadata_of(result)["deletion"]["rows_deleted"] == 4
    assert set(due).isdisjoint(remaining_ids(pg_database))
    assert {e["record_id"] for e in audit_entries(pg_database)} == set(due)  # each with its entry, as always
    # Only expired_records alone: counts, acts on nothing.
    more = insert_quiz_rows(pg_database, [timedelta(hours=30)] * 2)
    counted = dg.materialize(list(domain.assets), selection=[dg.AssetKey(["quiz_responses", "expired_records"])],
                             partition_key=domain_partitions(policy).get_last_partition_key(), instance=instance,
                             resources={"retention_stores": stores}, raise_on_error=False)
    assert counted.success and metadata_of(counted)["expired_records"]["rows_found"] == 2
    assert set(more) <= remaining_ids(pg_database)


def test_checks_alone_are_refused_and_act_on_nothing(policies, pg_database, stores, instance):
    insert_quiz_rows(pg_database, [timedelta(hours=30)] * 2)
    before = remaining_ids(pg_database)
    policy = policies.domains["quiz_responses"]
    domain = build_domain_defs(policy, policies.policy_version)
    check = dg.AssetCheckKey(dg.AssetKey(["quiz_responses", "deletion"]), "no_rows_past_deadline")
    result = dg.materialize(list(domain.assets), selection=dg.AssetSelection.checks(check), instance=instance,
                            resources={"retention_stores": stores}, raise_on_error=False)
    assert not result.success
    assert "checks evaluate a run of its assets" in failure_messages(result)
    assert remaining_ids(pg_database) == before


def test_a_range_of_windows_is_one_run_recording_every_window_it_enforced(policies, pg_database, stores, instance):
    """A single-run backfill: its cutoff is the last window's end, and each window of the range
    shows materialized, none Missing."""
    old = insert_quiz_rows(pg_database, [timedelta(hours=24 + 10)] * 2)
    recent = insert_quiz_rows(pg_database, [timedelta(hours=24 + 2)] * 2)
    policy = policies.domains["quiz_responses"]
    partitions = domain_partitions(policy)
    keys = partitions.get_partition_keys(current_time=pg_database.now())
    window = keys[-8:-3]  # five complete hours, ending three hours ago
    job = dg.Definitions(assets=build_domain_defs(policy, policies.policy_version).assets,
                         jobs=build_domain_defs(policy, policies.policy_version).jobs,
                         resources={"retention_stores": stores}).resolve_job_def("quiz_responses_retention_job")
    result = job.execute_in_process(instance=instance, raise_on_error=False, tags={
        "dagster/asset_partition_range_start": window[0], "dagster/asset_partition_range_end": window[-1]})
    assert result.success, failure_messages(result)
    for step in ("expired_records", "archive", "deletion", "audit"):
        assert instance.get_materialized_partitions(dg.AssetKey(["quiz_responses", step])) == set(window), step
    assert set(old).isdisjoint(remaining_ids(pg_database)) and set(recent) <= remaining_ids(pg_database)


def test_every_step_that_acts_on_a_domain_is_in_that_domains_pool(policies):
    from retention_pipelines.dagster_wiring.common import domain_pool

    for policy in policies.domains.values():
        [retention] = [a for a in build_domain_defs(policy, policies.policy_version).assets
                       if dg.AssetKey([policy.name, "deletion"]) in a.keys]
        assert retention.op.pool == domain_pool(policy.name)
        assert retention.backfill_policy == dg.BackfillPolicy.single_run()
