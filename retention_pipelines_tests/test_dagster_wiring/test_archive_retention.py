"""Each archived domain's archive expiry in Dagster: the asset, its check, the lock and the pool,
the job, its dry-run job and the schedule, against real PostgreSQL, Redis and a folder archive (ages
set by the files' mtime)."""

from __future__ import annotations

import os
from datetime import timedelta

import dagster as dg
import pytest

from retention_pipelines.dagster_wiring.archive_retention import (
    ARCHIVE_EXPIRY_CRON,
    NO_ARCHIVE_KEPT_BEYOND_KEEP_FOR_CHECK,
    archive_expiry_dry_run_job_name,
    archive_expiry_job_name,
    build_archive_retention_defs,
)
from retention_pipelines.dagster_wiring.common import DOMAIN_TAG, DRY_RUN_TAG, RUN_TAGS, domain_pool
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.definitions import defs
from retention_pipelines.stores import domain_locks
from retention_pipelines.stores.archive import LocalArchiveStore
from retention_pipelines_tests.support.app_rows import archive_root, audit_entries
from retention_pipelines_tests.support.dagster_runs import asset_history, failure_messages, output_metadata

DOMAIN = "email_blacklist"
KEY = dg.AssetKey([DOMAIN, "archive_expiry"])
OLD = f"{DOMAIN}/2025/01/01/{'1' * 40}.jsonl.gz"
YOUNG = f"{DOMAIN}/2026/11/01/{'2' * 40}.jsonl.gz"


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.fixture
def stores(pg_url, redis_url, local_archive_url):
    return RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url)


def write(store: LocalArchiveStore, now, ages: dict[str, int]) -> None:
    """Objects written `age` days before `now`, by their mtime."""
    for key, age in ages.items():
        store.put(key, b"archived rows")
        written = (now - timedelta(days=age)).timestamp()
        os.utime(store.root / key, (written, written))


@pytest.fixture
def archive(pg_database, local_archive_url) -> LocalArchiveStore:
    """A batch and its manifest written 400 days ago (keep_for is 365d), one written a month ago."""
    store = LocalArchiveStore(archive_root(local_archive_url))
    write(store, pg_database.now(), {OLD: 400, OLD + ".manifest.json": 400, YOUNG: 30, YOUNG + ".manifest.json": 30})
    return store


def materialize(policies, stores, instance, tags=None, selection=None):
    expiry = build_archive_retention_defs([policies.domains[DOMAIN]], policies.policy_version)
    return dg.materialize([*expiry.assets, *expiry.asset_checks], instance=instance, selection=selection,
                          resources={"retention_stores": stores}, tags=tags or {}, raise_on_error=False)


def dry_run(policies, stores, instance):
    """The domain's archive expiry dry-run job, as the launchpad and `retention archive expire --dry-run` start it."""
    expiry = build_archive_retention_defs([policies.domains[DOMAIN]], policies.policy_version)
    job = dg.Definitions.merge(expiry, dg.Definitions(resources={"retention_stores": stores})).resolve_job_def(
        archive_expiry_dry_run_job_name(DOMAIN))
    return job.execute_in_process(instance=instance, raise_on_error=False)


def materializations(instance) -> list[str]:
    """The run ids of the asset's materializations, newest first."""
    return [record.run_id for record in instance.fetch_materializations(KEY, limit=10).records]


def metadata_of(result) -> dict:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def check_of(result):
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == NO_ARCHIVE_KEPT_BEYOND_KEEP_FOR_CHECK
    return evaluation


def keys_in(store) -> set[str]:
    return {key for key, _ in store.objects("")}


def test_the_check_fails_on_an_overdue_object_and_passes_once_the_job_ran(policies, pg_database, stores, instance,
                                                                          archive):
    check_key = dg.AssetCheckKey(KEY, NO_ARCHIVE_KEPT_BEYOND_KEEP_FOR_CHECK)
    check_alone = materialize(policies, stores, instance, selection=dg.AssetSelection.checks(check_key))
    failing = check_of(check_alone)
    assert not failing.passed and failing.severity == dg.AssetCheckSeverity.ERROR
    counts = {k: v.value for k, v in failing.metadata.items()}
    assert counts["objects_past_keep_for_and_grace"] == 2 and counts["of_which_under_object_lock"] == 0
    assert counts["objects"] == 4 and 399 < counts["oldest_object_age_days"] < 401
    assert check_alone.get_asset_materialization_events() == []

    dry = dry_run(policies, stores, instance)
    assert dry.success
    assert output_metadata(dry)["objects_would_delete"] == 2 and output_metadata(dry)["objects_deleted"] == 0
    assert keys_in(archive) == {OLD, OLD + ".manifest.json", YOUNG, YOUNG + ".manifest.json"}
    assert audit_entries(pg_database) == []
    # The dry run left the objects, and no check said otherwise: an error still, evaluated on its own.
    assert dry.get_asset_check_evaluations() == []
    still = check_of(materialize(policies, stores, instance, selection=dg.AssetSelection.checks(check_key)))
    assert not still.passed and still.severity == dg.AssetCheckSeverity.ERROR

    result = materialize(policies, stores, instance)
    assert result.success
    metadata = metadata_of(result)
    assert (metadata["objects_deleted"], metadata["audit_entries"], metadata["objects_past_keep_for"]) == (2, 2, 2)
    assert metadata["keep_for"] == "365d" and metadata["policy_version"] == policies.policy_version
    assert metadata["dry_run"] is False and metadata["objects_would_delete"] == 0
    assert check_of(result).passed
    assert keys_in(archive) == {YOUNG, YOUNG + ".manifest.json"}
    assert sorted(e["record_id"] for e in audit_entries(pg_database)) == [OLD, OLD + ".manifest.json"]
    assert all(e["run_id"] == result.run_id for e in audit_entries(pg_database))
    # Counts only in what Dagster keeps: no key, hence no record id, in the metadata.
    assert not any(OLD in str(value) for value in metadata.values())


def test_a_dry_run_is_its_own_job_and_leaves_the_assets_history_as_it_was(policies, pg_database, stores, instance,
                                                                          archive):
    expired = materialize(policies, stores, instance)
    assert expired.success and keys_in(archive) == {YOUNG, YOUNG + ".manifest.json"}
    audited = audit_entries(pg_database)
    before = materializations(instance)
    assert before == [expired.run_id]
    old_again = f"{DOMAIN}/2025/02/01/{'3' * 40}.jsonl.gz"
    write(archive, pg_database.now(), {old_again: 380, old_again + ".manifest.json": 380})

    dry = dry_run(policies, stores, instance)
    assert dry.success, failure_messages(dry)
    metadata = output_metadata(dry)
    assert metadata["dry_run"] is True and metadata["objects_past_keep_for"] == 2
    assert (metadata["objects_would_delete"], metadata["objects_deleted"], metadata["audit_entries"]) == (2, 0, 0)
    assert metadata["keep_for"] == "365d" and metadata["policy_version"] == policies.policy_version
    assert not any(old_again in str(value) for value in metadata.values())
    # Nothing deleted, nothing audited, and nothing in the assets' history: no materialization, no
    # check evaluation, no planned or failed asset.
    assert keys_in(archive) == {old_again, old_again + ".manifest.json", YOUNG, YOUNG + ".manifest.json"}
    assert audit_entries(pg_database) == audited
    assert dry.get_asset_materialization_events() == [] and dry.get_asset_check_evaluations() == []
    assert asset_history(instance, dry.run_id) == []
    assert materializations(instance) == before


def test_the_asset_job_refuses_a_run_tagged_dry_and_deletes_nothing(policies, pg_database, stores, instance,
                                                                   archive):
    refused = materialize(policies, stores, instance, tags={DRY_RUN_TAG: "true"})
    assert not refused.success
    assert archive_expiry_dry_run_job_name(DOMAIN) in failure_messages(refused)
    assert keys_in(archive) == {OLD, OLD + ".manifest.json", YOUNG, YOUNG + ".manifest.json"}
    assert audit_entries(pg_database) == []
    assert refused.get_asset_materialization_events() == [] and materializations(instance) == []


def test_the_job_takes_the_domains_lock_and_the_dry_run_none(policies, stores, redis_url, instance, archive,
                                                             tmp_path, monkeypatch):
    monkeypatch.setenv("RETENTION_LOCK_WAIT_SECONDS", "0")  # the job fails at once on the held lock
    held = domain_locks(redis_url, tmp_path, 30).acquire(DOMAIN)
    try:
        busy = materialize(policies, stores, instance)
        dry = dry_run(policies, stores, instance)
        held.ensure_held()  # the dry run neither took nor broke it
    finally:
        held.release()
    assert not busy.success
    assert f"{DOMAIN} is being cleaned by another run" in failure_messages(busy)
    assert dry.success and output_metadata(dry)["objects_would_delete"] == 2
    assert OLD in keys_in(archive)


@pytest.mark.parametrize("domain", ["meal_plans", "email_blacklist"])
def test_each_archived_domain_has_its_expiry_job_dry_run_job_and_daily_schedule(policies, domain):
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey([domain, "archive_expiry"])
    assert graph.get(key).group_name == domain
    assert {k.name for k in graph.asset_check_keys if k.asset_key == key} == {NO_ARCHIVE_KEPT_BEYOND_KEEP_FOR_CHECK}
    # It takes the domain's lock: in the domain's pool, it waits for the domain's retention runs.
    assert defs.resolve_assets_def(key).op.pool == domain_pool(domain)
    job = defs.resolve_job_def(archive_expiry_job_name(domain))
    assert job.tags[DOMAIN_TAG] == domain  # one run of the domain at a time (dagster.yaml)
    assert archive_expiry_dry_run_job_name(domain) in job.description
    schedule = defs.resolve_schedule_def(f"{domain}_archive_expiry_schedule")
    assert schedule.cron_schedule == ARCHIVE_EXPIRY_CRON and schedule.job_name == job.name
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    # The dry run changes nothing: no lock, no pool, not one of the domain's runs.
    dry = defs.resolve_job_def(archive_expiry_dry_run_job_name(domain))
    assert dry.tags == RUN_TAGS and DOMAIN_TAG not in dry.tags
    assert [node.definition.pool for node in dry.graph.nodes] == [None]


def test_domains_without_an_archive_get_no_expiry(policies):
    names = {job.name for job in defs.resolve_all_job_defs()}
    for name, policy in policies.domains.items():
        assert (archive_expiry_job_name(name) in names) == policy.archive.enabled
        assert (archive_expiry_dry_run_job_name(name) in names) == policy.archive.enabled
