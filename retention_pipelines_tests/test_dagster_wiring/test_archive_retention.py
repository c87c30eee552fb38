"""Each archived domain's archive expiry in Dagster: the asset, its check, the lock, the job and
the schedule, against real PostgreSQL, Redis and a folder archive (ages set by the files' mtime)."""

from __future__ import annotations

import os
from datetime import timedelta

import dagster as dg
import pytest

from retention_pipelines.dagster_wiring.archive_retention import (
    ARCHIVE_EXPIRY_CRON,
    NO_ARCHIVE_KEPT_BEYOND_KEEP_FOR_CHECK,
    archive_expiry_job_name,
    build_archive_retention_defs,
)
from retention_pipelines.dagster_wiring.common import DOMAIN_TAG, DRY_RUN_TAG
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.definitions import defs
from retention_pipelines.stores import domain_locks
from retention_pipelines.stores.archive import LocalArchiveStore
from retention_pipelines_tests.support.app_rows import archive_root, audit_entries

DOMAIN = "email_blacklist"
OLD = f"{DOMAIN}/2025/01/01/{'1' * 40}.jsonl.gz"
YOUNG = f"{DOMAIN}/2026/11/01/{'2' * 40}.jsonl.gz"


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.fixture
def stores(pg_url, redis_url, local_archive_url):
    return RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url)


@pytest.fixture
def archive(pg_database, local_archive_url) -> LocalArchiveStore:
    """A batch and its manifest written 400 days ago (keep_for is 365d), one written a month ago."""
    store = LocalArchiveStore(archive_root(local_archive_url))
    now = pg_database.now()
    for key, age in ((OLD, 400), (OLD + ".manifest.json", 400), (YOUNG, 30), (YOUNG + ".manifest.json", 30)):
        store.put(key, b"archived rows")
        written = (now - timedelta(days=age)).timestamp()
        os.utime(store.root / key, (written, written))
    return store


def materialize(policies, stores, instance, tags=None, selection=None):
    expiry = build_archive_retention_defs([policies.domains[DOMAIN]], policies.policy_version)
    return dg.materialize([*expiry.assets, *expiry.asset_checks], instance=instance, selection=selection,
                          resources={"retention_stores": stores}, tags=tags or {}, raise_on_error=False)


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
    check_alone = materialize(policies, stores, instance, selection=dg.AssetSelection.checks(
        dg.AssetCheckKey(dg.AssetKey([DOMAIN, "archive_expiry"]), NO_ARCHIVE_KEPT_BEYOND_KEEP_FOR_CHECK)))
    failing = check_of(check_alone)
    assert not failing.passed and failing.severity == dg.AssetCheckSeverity.ERROR
    counts = {k: v.value for k, v in failing.metadata.items()}
    assert counts["objects_past_keep_for_and_grace"] == 2 and counts["of_which_under_object_lock"] == 0
    assert counts["objects"] == 4 and 399 < counts["oldest_object_age_days"] < 401
    assert check_alone.get_asset_materialization_events() == []

    dry = materialize(policies, stores, instance, tags={DRY_RUN_TAG: "true"})
    assert dry.success
    assert metadata_of(dry)["objects_would_delete"] == 2 and metadata_of(dry)["objects_deleted"] == 0
    # Still failing, as a warning: a dry run leaves the objects by design.
    assert not check_of(dry).passed and check_of(dry).severity == dg.AssetCheckSeverity.WARN
    assert keys_in(archive) == {OLD, OLD + ".manifest.json", YOUNG, YOUNG + ".manifest.json"}
    assert audit_entries(pg_database) == []

    result = materialize(policies, stores, instance)
    assert result.success
    metadata = metadata_of(result)
    assert (metadata["objects_deleted"], metadata["audit_entries"], metadata["objects_past_keep_for"]) == (2, 2, 2)
    assert metadata["keep_for"] == "365d" and metadata["policy_version"] == policies.policy_version
    assert check_of(result).passed
    assert keys_in(archive) == {YOUNG, YOUNG + ".manifest.json"}
    assert sorted(e["record_id"] for e in audit_entries(pg_database)) == [OLD, OLD + ".manifest.json"]
    assert all(e["run_id"] == result.run_id for e in audit_entries(pg_database))
    # Counts only in what Dagster keeps: no key, hence no record id, in the metadata.
    assert not any(OLD in str(value) for value in metadata.values())


def test_the_job_takes_the_domains_lock(policies, stores, redis_url, instance, archive, tmp_path):
    held = domain_locks(redis_url, tmp_path, 30).acquire(DOMAIN)
    try:
        busy = materialize(policies, stores, instance)
        dry = materialize(policies, stores, instance, tags={DRY_RUN_TAG: "true"})
        held.ensure_held()  # the dry run neither took nor broke it
    finally:
        held.release()
    assert not busy.success
    assert any(f"{DOMAIN} is being cleaned by another run" in (e.step_failure_data.user_failure_data.description or "")
               for e in busy.all_events if e.event_type_value == "STEP_FAILURE")
    assert dry.success
    assert OLD in keys_in(archive)


@pytest.mark.parametrize("domain", ["meal_plans", "email_blacklist"])
def test_each_archived_domain_has_its_expiry_job_and_daily_schedule(policies, domain):
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey([domain, "archive_expiry"])
    assert graph.get(key).group_name == domain
    assert {k.name for k in graph.asset_check_keys if k.asset_key == key} == {NO_ARCHIVE_KEPT_BEYOND_KEEP_FOR_CHECK}
    job = defs.resolve_job_def(archive_expiry_job_name(domain))
    assert job.tags[DOMAIN_TAG] == domain  # one run of the domain at a time (dagster.yaml)
    schedule = defs.resolve_schedule_def(f"{domain}_archive_expiry_schedule")
    assert schedule.cron_schedule == ARCHIVE_EXPIRY_CRON and schedule.job_name == job.name
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_domains_without_an_archive_get_no_expiry(policies):
    names = {job.name for job in defs.resolve_all_job_defs()}
    for name, policy in policies.domains.items():
        assert (archive_expiry_job_name(name) in names) == policy.archive.enabled
