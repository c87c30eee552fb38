"""The asset audit/chain: it verifies and anchors; its check fails on tampering, right after the
entries are written as after they are anchored, naming the first broken link by ids and positions
only. The daily job and schedule are in the code location, and the index job every 15 minutes."""

import json
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.dagster_wiring.audit_chain import AUDIT_CHAIN_KEY, INTACT_CHECK, build_audit_chain_defs
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.definitions import defs
from retention_pipelines_tests.support.app_rows import insert_quiz_rows
from retention_pipelines_tests.support.audit_rows import batch_of, execute, ids_of, write_audit_rows
from retention_pipelines_tests.support.engines import engine_for


def materialize(pg_url, local_archive_url):
    [asset] = build_audit_chain_defs().assets
    result = dg.materialize([asset], resources={"retention_stores": RetentionStores(
        database_url=pg_url, archive_url=local_archive_url)}, raise_on_error=False)
    assert result.success
    [materialization] = result.asset_materializations_for_node(asset.op.name)
    [check] = result.get_asset_check_evaluations()
    return {k: v.value for k, v in materialization.metadata.items()}, check


def anchors(local_archive_url) -> list[Path]:
    return sorted((Path(urlparse(local_archive_url).path) / "audit_anchors").rglob("*.json"))


def test_the_asset_verifies_and_anchors(pg_url, pg_database, local_archive_url):
    write_audit_rows(pg_database, 12)
    metadata, check = materialize(pg_url, local_archive_url)
    assert check.check_name == INTACT_CHECK and check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert (metadata["rows_checked"], metadata["rows_outside_chain"]) == (12, 0)
    [anchor] = anchors(local_archive_url)
    # alpha's six entries are five batches (run and archive object), beta's six two (run).
    assert {h["domain"]: h["last_seq"] for h in json.loads(anchor.read_text())["heads"]} == {"alpha": 5, "beta": 2}
    assert metadata["anchor"].endswith(anchor.relative_to(Path(urlparse(local_archive_url).path)).as_posix())

    write_audit_rows(pg_database, 2, start=100)
    metadata, check = materialize(pg_url, local_archive_url)
    assert check.passed and metadata["rows_checked"] == 14 and metadata["rows_outside_chain"] == 0
    assert check.metadata["anchors_checked"].value == 2


def test_the_check_catches_an_entry_changed_right_after_a_run(pg_url, pg_database, local_archive_url, policies,
                                                              quiz_policy):
    """No job runs between the run and the tamperer: the run's entries were chained as it wrote them."""
    insert_quiz_rows(pg_database, [timedelta(days=2, minutes=i) for i in range(5)])
    assert engine_for(quiz_policy, policies, pg_database, local_archive_url).run("run-then-tamper").acted.acted_on == 5
    target = ids_of(pg_database, "quiz_responses")[2]
    execute(pg_database, "UPDATE retention_audit_records SET record_id = 'secret-record' WHERE id = :id", id=target)

    metadata, check = materialize(pg_url, local_archive_url)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    [link] = check.metadata["first_broken_links"].value
    assert (link["domain"], link["kind"], link["audit_id"]) == ("quiz_responses", "content_changed",
                                                                batch_of(pg_database, target))
    assert "secret-record" not in repr(check.metadata) + repr(metadata)


def test_the_check_fails_on_tampering_naming_ids_and_positions_only(pg_url, pg_database, local_archive_url):
    write_audit_rows(pg_database, 12)
    materialize(pg_url, local_archive_url)
    target = ids_of(pg_database, "beta")[3]  # rec-7: beta's second batch (run-1)
    batch = batch_of(pg_database, target)
    execute(pg_database, "UPDATE retention_audit_records SET record_id = 'secret-record' WHERE id = :id", id=target)

    metadata, check = materialize(pg_url, local_archive_url)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    [link] = check.metadata["first_broken_links"].value
    assert link == {"domain": "beta", "kind": "content_changed", "position": 2, "audit_id": batch,
                    "message": f"domain beta, batch id {batch} (chain position 2): content changed"}
    assert "secret-record" not in repr(check.metadata) + repr(metadata)
    assert metadata["broken_domains"] == 1


def test_the_check_fails_when_a_record_row_is_deleted(pg_url, pg_database, local_archive_url):
    write_audit_rows(pg_database, 6)
    materialize(pg_url, local_archive_url)
    execute(pg_database, "DELETE FROM retention_audit_records WHERE id = :id", id=ids_of(pg_database, "alpha")[0])
    _, check = materialize(pg_url, local_archive_url)
    assert not check.passed
    assert check.metadata["first_broken_links"].value[0]["kind"] == "row_deleted"


def test_the_code_location_runs_it_daily():
    graph = defs.resolve_asset_graph()
    assert AUDIT_CHAIN_KEY in graph.get_all_asset_keys()
    assert graph.get(AUDIT_CHAIN_KEY).group_name == "audit"
    assert {k.name for k in graph.asset_check_keys if k.asset_key == AUDIT_CHAIN_KEY} == {INTACT_CHECK}
    schedule = defs.resolve_schedule_def("audit_chain_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule.endswith("* * *") and schedule.job_name == "audit_chain_job"


def test_the_index_job_every_15_minutes_indexes_what_runs_wrote(pg_url, pg_database, local_archive_url):
    from retention_pipelines.engine.audit.evidence import record_evidence
    from retention_pipelines.engine.audit.verify import verify

    write_audit_rows(pg_database, 9)
    definitions = build_audit_chain_defs()
    job = dg.Definitions(jobs=definitions.jobs, resources={"retention_stores": RetentionStores(
        database_url=pg_url, archive_url=local_archive_url)}).resolve_job_def("audit_index_job")
    result = job.execute_in_process(raise_on_error=False)
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert output.event_specific_data.metadata["rows_indexed"].value == 9
    # The job chains nothing: every entry was in its chain already.
    verification = verify(pg_database)
    assert verification.intact and verification.outside_chain == 0 and verification.rows_checked == 9
    with pg_database.connect() as connection:
        assert connection.execute(sa.select(schema.audit_record_index_state.c.indexed_through)).scalar_one() == max(
            ids_of(pg_database, "alpha") + ids_of(pg_database, "beta"))
    assert len(record_evidence(pg_database, "rec-3")) == 1
    [schedule] = [s for s in definitions.schedules if s.name == "audit_index_schedule"]
    assert schedule.cron_schedule == "*/15 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
