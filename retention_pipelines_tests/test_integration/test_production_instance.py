"""deploy/dagster.yaml, the production instance, opened on a real PostgreSQL from its DAGSTER_PG_*
variables: storage in PostgreSQL, compute logs in S3, the queued run coordinator with one run per
retention domain, the pools that the row-changing steps are in (one per domain, one for the
erasure), run monitoring and retries, tick retention."""

from __future__ import annotations

import os
import uuid

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType, TickStatus  # not exported by dagster
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

from retention_pipelines.dagster_wiring.common import APP_DATABASE_POOL, domain_pool
from retention_pipelines.definitions import defs
from retention_pipelines_tests.support.dagster_deployment import DOMAIN_TAG_LIMIT, write_dagster_home


@pytest.fixture
def production_home(tmp_path, postgres_server, s3_env, monkeypatch):
    home, storage = write_dagster_home(tmp_path / "home", postgres_server, f"dagster_{uuid.uuid4().hex[:8]}")
    for name, value in storage.items():
        monkeypatch.setenv(name, value)
    return home


def test_the_production_instance_keeps_everything_in_postgresql_and_queues_runs(production_home):
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
            assert type(storage).__module__.startswith("dagster_postgres"), type(storage)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        # Runs execute on another machine than the webserver: their stdout and stderr go to S3.
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        assert instance.compute_log_manager._s3_bucket == os.environ["DAGSTER_COMPUTE_LOG_BUCKET"]  # noqa: SLF001
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 6
        assert DOMAIN_TAG_LIMIT in queue.tag_concurrency_limits
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1  # one slot per pool
        assert instance.run_monitoring_enabled
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure
        purge = instance.get_tick_retention_settings(InstigatorType.SENSOR)
        assert purge[TickStatus.SKIPPED] == 7 and purge[TickStatus.SUCCESS] == -1
        # The storage is real: a run written is read back.
        run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), run_id=str(uuid.uuid4()))
        assert instance.get_run_by_id(run.run_id).job_name == "noop"


@pytest.mark.parametrize("variable", ["DAGSTER_PG_HOST", "DAGSTER_COMPUTE_LOG_BUCKET"])
def test_a_missing_connection_variable_is_named(production_home, monkeypatch, variable):
    monkeypatch.delenv(variable)
    with pytest.raises(Exception, match=variable):
        with dg.DagsterInstance.from_config(str(production_home)) as instance:
            instance.compute_log_manager  # noqa: B018 (built on first use)


def test_the_steps_that_change_rows_are_each_in_a_pool_of_their_domain_or_the_erasure():
    pool_of = {key.to_user_string(): assets.op.pool for assets in defs.assets for key in assets.keys
               if getattr(assets, "op", None) is not None}
    for domain in ("quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist"):
        for step in ("expired_records", "archive", "deletion", "audit"):
            assert pool_of[f"{domain}/{step}"] == domain_pool(domain), (domain, step)
    assert pool_of["gdpr/erasure/meal_plans"] == APP_DATABASE_POOL
    assert pool_of["compliance/report"] is None
