"""`retention archive expire`: the domain's archive expiry job (or its dry-run job), now, through
DAGSTER_HOME's instance."""

from __future__ import annotations

import dagster as dg

from retention_pipelines_tests.support.app_rows import audit_entries
from retention_pipelines_tests.support.archives import OLD, archive_with_an_old_batch
from retention_pipelines_tests.support.cli import parse_table
from retention_pipelines_tests.support.dagster_runs import asset_history

COLUMNS = ["domain", "status", "dry_run", "keep_for", "past_keep_for", "deleted", "locked", "refused",
           "audit_entries", "run_id"]
KEY = dg.AssetKey(["email_blacklist", "archive_expiry"])


def dagster_runs() -> list[tuple[str, str, dict, list[str]]]:
    """Each run of DAGSTER_HOME's instance: its id, job, tags and the asset events it stored."""
    with dg.DagsterInstance.get() as instance:
        return [(run.run_id, run.job_name, dict(run.tags), asset_history(instance, run.run_id))
                for run in instance.get_runs()]


def materialized_by() -> list[str]:
    with dg.DagsterInstance.get() as instance:
        return [record.run_id for record in instance.fetch_materializations(KEY, limit=10).records]


def test_expire_dry_run_then_for_real(cli, cli_env):
    store = archive_with_an_old_batch(cli_env)

    dry = cli("archive", "expire", "--domain", "email_blacklist", "--dry-run")
    assert dry.code == 0, dry.text
    assert list(parse_table(dry.out)[0]) == COLUMNS
    [row] = parse_table(dry.out)
    assert (row["dry_run"], row["past_keep_for"], row["deleted"], row["audit_entries"]) == ("True", "2", "2", "0")
    assert (row["status"], row["keep_for"], row["locked"], row["refused"]) == ("ok", "365d", "0", "0")
    assert dry.err == ""  # no check runs in a dry run: it leaves the objects, and says what it would delete
    assert {key for key, _ in store.objects("")} == {OLD, OLD + ".manifest.json"}
    assert audit_entries(cli_env) == []
    # The dry-run job, untagged: nothing in the asset's history.
    [(run_id, job_name, tags, history)] = dagster_runs()
    assert job_name == "email_blacklist_archive_expiry_dry_run_job" and run_id.startswith(row["run_id"])
    assert "retention/dry_run" not in tags and history == []
    assert materialized_by() == []

    real = cli("archive", "expire", "--domain", "email_blacklist")
    assert real.code == 0, real.text
    assert list(parse_table(real.out)[0]) == COLUMNS
    [row] = parse_table(real.out)
    assert (row["status"], row["deleted"], row["audit_entries"], row["keep_for"]) == ("ok", "2", "2", "365d")
    assert row["dry_run"] == "False"
    [real_run] = [run_id for run_id, job, _, _ in dagster_runs() if job == "email_blacklist_archive_expiry_job"]
    assert real_run.startswith(row["run_id"]) and materialized_by() == [real_run]
    assert list(store.objects("")) == []
    assert sorted(e["record_id"] for e in audit_entries(cli_env) if e["action"] == "archive_expired") == [
        OLD, OLD + ".manifest.json"]

    shown = cli("audit", "show", "--record-id", OLD)
    assert shown.code == 0 and "archive_expired" in shown.out and "written + 365d" in shown.out


def test_expire_refuses_a_domain_without_an_archive(cli, cli_env):
    refused = cli("archive", "expire", "--domain", "quiz_responses")
    assert refused.code == 2 and "quiz_responses has no archive to expire" in refused.err
    unknown = cli("archive", "expire", "--domain", "nope")
    assert unknown.code == 2 and "unknown domain 'nope'" in unknown.err
