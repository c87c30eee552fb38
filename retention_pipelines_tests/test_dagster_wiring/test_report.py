"""compliance/report: materialized for a month, its files in the archive store (a folder and S3 on
moto) under reports/YYYY-MM/, its metadata linking the page with the month's totals; the schedule
that makes it on the 1st for the month before; an unreachable database fails it with nothing stored."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from retention_pipelines.dagster_wiring.report import REPORT_JOB, REPORT_KEY, REPORT_SCHEDULE, build_report_defs
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.audit.verify import verify
from retention_pipelines.engine.report.figures import build_report
from retention_pipelines.engine.report.render import html_name, render_report
from retention_pipelines.stores import archive_store_from_url
from retention_pipelines_tests.support.archives import archive_objects
from retention_pipelines_tests.support.report_rows import ADDRESSES, MONTH, month_of_activity

PARTITION = f"{MONTH}-01"


def materialize(policies, archive_url: str, database_url: str, instance) -> dg.ExecuteInProcessResult:
    defs = build_report_defs(policies)
    [asset] = defs.assets
    return dg.materialize([asset], partition_key=PARTITION, instance=instance, raise_on_error=False,
                          resources={"retention_stores": RetentionStores(database_url=database_url,
                                                                         archive_url=archive_url)})


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


@pytest.mark.parametrize("store", ["folder", "s3"])
def test_the_report_is_stored_and_linked_with_the_months_totals(store, request, policies, pg_url, pg_database,
                                                               tmp_path, instance):
    archive_url = request.getfixturevalue("local_archive_url" if store == "folder" else "s3_archive_url")
    month_of_activity(pg_database, policies, archive_url, tmp_path)
    before = set(archive_objects(archive_url))

    result = materialize(policies, archive_url, pg_url, instance)
    assert result.success
    [event] = result.get_asset_materialization_events()
    assert event.asset_key == REPORT_KEY and event.partition == PARTITION
    metadata = {key: value.value for key, value in event.materialization.metadata.items()}

    stored = {key: data for key, data in archive_objects(archive_url).items() if key not in before}
    # Every entry is chained as it is written: every row checked, none outside the chain.
    chain = verify(pg_database, archive_store_from_url(archive_url)).as_status()
    assert chain["intact"] and chain["outside_chain"] == 0 and chain["rows_checked"] > 0
    expected = render_report(build_report(pg_database, policies, MONTH, chain_status=chain,
                                          erasure_due=timedelta(days=30)))
    assert set(stored) == {f"reports/{MONTH}/{name}" for name in expected}
    for name, data in expected.items():
        if name.endswith(".csv"):  # the same figures; the page differs only by when it was made
            assert stored[f"reports/{MONTH}/{name}"] == data, name
    page = stored[f"reports/{MONTH}/{html_name(MONTH)}"].decode()
    assert "October 2026" in page and page.count("data:image/png;base64,") == 4

    link = f"{archive_url}/reports/{MONTH}/{html_name(MONTH)}"
    if store == "folder":
        assert isinstance(event.materialization.metadata["report"], dg.PathMetadataValue)
        assert metadata["report"] == link.removeprefix("file://")
    else:
        assert isinstance(event.materialization.metadata["report"], dg.UrlMetadataValue)
        assert metadata["report"] == link
    assert set(metadata["files"]) == set(expected)
    total = list(csv.DictReader(io.StringIO(expected["summary.csv"].decode())))[-1]
    for figure in ("removed", "held", "queue_items", "sla_breaches", "legal_holds_active"):
        assert metadata[figure] == int(total[figure]), figure
    [erasure] = csv.DictReader(io.StringIO(expected["erasure_summary.csv"].decode()))
    assert (metadata["erasure_met"], metadata["erasure_missed"]) == (int(erasure["deadline_met"]),
                                                                     int(erasure["deadline_missed"]))
    assert metadata["removed/quiz_responses"] > 0 and metadata["audit_chain"] == "intact"
    text = repr(metadata) + page
    assert "@" not in repr(metadata) and not any(address in text for address in ADDRESSES)


def test_an_unreachable_database_fails_the_report_and_stores_nothing(policies, local_archive_url, instance):
    result = materialize(policies, local_archive_url, "postgresql+psycopg2://nobody@127.0.0.1:9/none", instance)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "is unreachable" in failure.step_failure_data.user_failure_data.description
    assert archive_objects(local_archive_url) == {}


def test_the_code_location_has_the_monthly_report_its_job_and_its_schedule():
    from retention_pipelines.definitions import defs

    node = defs.resolve_asset_graph().get(REPORT_KEY)
    assert node.group_name == "compliance"
    partitions = node.partitions_def
    assert isinstance(partitions, dg.MonthlyPartitionsDefinition)
    assert partitions.get_first_partition_key() == "2026-01-01"
    # A month is reported once it is over: the latest partition is the month before this one.
    today = datetime.now(UTC)
    last = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    assert partitions.get_last_partition_key() == f"{last:%Y-%m-%d}"
    assert defs.resolve_job_def(REPORT_JOB).partitions_def == partitions
    schedule = defs.resolve_schedule_def(REPORT_SCHEDULE)
    assert schedule.cron_schedule == "0 6 1 * *" and schedule.execution_timezone in (None, "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_the_schedule_reports_the_month_that_just_ended():
    from retention_pipelines.definitions import defs

    schedule = defs.resolve_schedule_def(REPORT_SCHEDULE)
    with dg.instance_for_test() as instance:
        for tick, month in ((datetime(2026, 12, 1, 6, tzinfo=UTC), "2026-11-01"),
                            (datetime(2027, 1, 1, 6, tzinfo=UTC), "2026-12-01")):
            with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
                [run] = schedule.evaluate_tick(context).run_requests
            assert run.partition_key == month
