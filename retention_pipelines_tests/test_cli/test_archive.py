"""`retention archive expire`: the domain's archive expiry job, now, through DAGSTER_HOME's instance."""

from __future__ import annotations

from retention_pipelines_tests.support.app_rows import audit_entries
from retention_pipelines_tests.support.archives import OLD, archive_with_an_old_batch
from retention_pipelines_tests.support.cli import parse_table


def test_expire_dry_run_then_for_real(cli, cli_env):
    store = archive_with_an_old_batch(cli_env)

    dry = cli("archive", "expire", "--domain", "email_blacklist", "--dry-run")
    assert dry.code == 0, dry.text  # objects kept past keep_for, left by a dry run by design: a warning
    [row] = parse_table(dry.out)
    assert (row["dry_run"], row["past_keep_for"], row["deleted"], row["audit_entries"]) == ("True", "2", "2", "0")
    assert "check no_archive_kept_beyond_keep_for warns: 2 objects kept past keep_for" in dry.err
    assert {key for key, _ in store.objects("")} == {OLD, OLD + ".manifest.json"}

    real = cli("archive", "expire", "--domain", "email_blacklist")
    assert real.code == 0, real.text
    [row] = parse_table(real.out)
    assert (row["status"], row["deleted"], row["audit_entries"], row["keep_for"]) == ("ok", "2", "2", "365d")
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
