"""`retention run` end to end on PostgreSQL, through the Dagster instance of DAGSTER_HOME."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from retention_pipelines.policies import default_policy_path, load_policies
from retention_pipelines_tests.support.app_rows import audit_entries, insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.cli import EMAIL, PASSWORD, dagster_home, parse_table, run_script
from retention_pipelines_tests.support.servers import free_port

KNOWN_DOMAINS = ["quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist"]
DUE = [timedelta(hours=25), timedelta(days=2), timedelta(days=30)]
NOT_DUE = [timedelta(minutes=5), timedelta(hours=23)]
ADDRESS = "quiz.taker@example.com"


@pytest.fixture
def quiz_rows(cli_env):
    due = set(insert_quiz_rows(cli_env, DUE, email=ADDRESS))
    not_due = set(insert_quiz_rows(cli_env, NOT_DUE, email=ADDRESS))
    return due, not_due


def quiz_row(rows: list[dict]) -> dict:
    """The quiz_responses line of a run's table; a run with no domain named lists every enabled one."""
    [row] = [r for r in rows if r["domain"] == "quiz_responses"]
    return row


def dagster_runs():
    with dg.DagsterInstance.get() as instance:
        return [(run.run_id, run.job_name, dict(run.tags), run.status) for run in instance.get_runs()]


def assert_no_personal_data(outcome):
    assert ADDRESS not in outcome.text
    assert not EMAIL.search(outcome.text), outcome.text


def test_dry_run_reports_and_changes_nothing(cli, cli_env, quiz_rows):
    due, not_due = quiz_rows
    outcome = cli("run", "quiz_responses", "--dry-run")
    assert_no_personal_data(outcome)

    row = quiz_row(parse_table(outcome.out))
    assert row["domain"] == "quiz_responses"
    assert row["dry_run"] == "True"
    assert int(row["found"]) == len(due)
    assert int(row["audit_rows"]) == 0

    assert remaining_ids(cli_env) == due | not_due
    assert audit_entries(cli_env) == []

    runs = dagster_runs()
    assert len(runs) == 1
    run_id, job_name, tags, status = runs[0]
    assert job_name == "quiz_responses_dry_run_job"  # a job of ops: the assets' history is untouched
    assert "retention/domain" not in tags  # it takes no lock, so it queues behind nothing
    assert run_id.startswith(row["run_id"])
    with dg.DagsterInstance.get() as instance:
        assert not [e for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.asset_key]


def test_dry_run_with_due_rows_succeeds(cli, cli_env, quiz_rows):
    """A dry run leaves due rows in place by design: that is its report, not a failure."""
    due, not_due = quiz_rows
    outcome = cli("run", "quiz_responses", "--dry-run")
    assert_no_personal_data(outcome)
    assert outcome.code == 0, outcome.text
    assert outcome.err == ""
    row = quiz_row(parse_table(outcome.out))
    assert row["status"] == "ok"
    assert int(row["found"]) == int(row["acted_on"]) == len(due)  # what a real run would delete
    assert remaining_ids(cli_env) == due | not_due
    [(_, job_name, _, status)] = dagster_runs()
    assert job_name == "quiz_responses_dry_run_job"
    assert status == dg.DagsterRunStatus.SUCCESS


def check_evaluations(run_id: str) -> dict:
    with dg.DagsterInstance.get() as instance:
        events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    return {e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data for e in events}


def test_a_dry_run_evaluates_no_check_and_a_real_run_all_five(cli, cli_env, quiz_rows):
    """The checks show real runs only: a dry run leaves rows past their deadline by design, and
    evaluates nothing; the real run after it evaluates every check, each passing."""
    cli("run", "quiz_responses", "--dry-run")
    [(dry_run_id, _, _, _)] = dagster_runs()
    assert check_evaluations(dry_run_id) == {}
    cli("run", "quiz_responses")
    [real_run_id] = [run_id for run_id, *_ in dagster_runs() if run_id != dry_run_id]
    evaluations = check_evaluations(real_run_id)
    assert set(evaluations) == {"no_rows_past_deadline", "archive_objects_match_manifests",
                                "audit_rows_match_rows_acted_on", "nothing_acted_on_before_its_deadline",
                                "every_object_deleted"}
    assert all(e.passed for e in evaluations.values()), {n: e.metadata for n, e in evaluations.items()}


def test_dry_run_with_nothing_due_succeeds(cli, cli_env):
    not_due = set(insert_quiz_rows(cli_env, NOT_DUE, email=ADDRESS))
    outcome = cli("run", "quiz_responses", "--dry-run")
    assert outcome.code == 0, outcome.text
    row = quiz_row(parse_table(outcome.out))
    assert row["status"] == "ok"
    assert int(row["found"]) == 0
    assert remaining_ids(cli_env) == not_due


def stored_bytes(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in folder.rglob("*") if path.is_file())


def test_run_deletes_exactly_the_due_rows(cli, cli_env, quiz_rows):
    due, not_due = quiz_rows
    outcome = cli("run", "quiz_responses")
    assert_no_personal_data(outcome)
    assert outcome.code == 0, outcome.text
    assert outcome.err == ""

    row = quiz_row(parse_table(outcome.out))
    assert row["domain"] == "quiz_responses"
    assert row["status"] == "ok"
    assert row["dry_run"] == "False"
    assert int(row["found"]) == len(due)
    assert int(row["acted_on"]) == len(due)
    assert int(row["audit_rows"]) == len(due)
    assert int(row["held"]) == 0

    assert remaining_ids(cli_env) == not_due
    entries = audit_entries(cli_env)
    assert {e["record_id"] for e in entries} == due
    assert {e["action"] for e in entries} == {"deleted"}
    assert {e["domain"] for e in entries} == {"quiz_responses"}

    runs = dagster_runs()
    assert len(runs) == 1
    run_id, job_name, tags, status = runs[0]
    assert (job_name, tags["retention/domain"]) == ("quiz_responses_retention_job", "quiz_responses")
    assert status == dg.DagsterRunStatus.SUCCESS
    assert run_id.startswith(row["run_id"])
    assert {e["run_id"] for e in entries} == {run_id}

    # What Dagster stored for the UI (run, event log, compute logs) holds neither the database
    # password nor the addresses of the rows.
    stored = stored_bytes(Path(os.environ["DAGSTER_HOME"]))
    assert PASSWORD.encode() not in stored
    assert ADDRESS.encode() not in stored

    # A second run finds nothing more to do.
    again = cli("run", "quiz_responses")
    assert again.code == 0, again.text
    row = quiz_row(parse_table(again.out))
    assert int(row["found"]) == 0 and int(row["acted_on"]) == 0
    assert remaining_ids(cli_env) == not_due
    assert len(audit_entries(cli_env)) == len(due)
    assert len(dagster_runs()) == 2


def test_run_respects_a_legal_hold(cli, cli_env, quiz_rows):
    due, not_due = quiz_rows
    held = sorted(due)[0]
    added = cli("hold", "add", "--domain", "quiz_responses", "--record-id", held, "--reason", "case 42",
                "--by", "legal")
    assert added.code == 0, added.err

    outcome = cli("run", "quiz_responses")
    assert outcome.code == 0, outcome.text
    row = quiz_row(parse_table(outcome.out))
    assert int(row["acted_on"]) == len(due) - 1
    assert int(row["held"]) == 1
    assert remaining_ids(cli_env) == not_due | {held}
    assert_no_personal_data(outcome)


def test_run_without_dagster_home_is_refused(cli, cli_env, quiz_rows, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME")
    outcome = cli("run", "quiz_responses")
    assert outcome.code == 2
    assert "DAGSTER_HOME" in outcome.err
    assert remaining_ids(cli_env) == quiz_rows[0] | quiz_rows[1]


def test_unknown_domain_is_refused_naming_the_known_ones(cli, cli_env):
    outcome = cli("run", "nosuch")
    assert outcome.code == 2
    assert outcome.err.startswith("retention: error: ")
    assert "nosuch" in outcome.err
    for domain in KNOWN_DOMAINS:
        assert domain in outcome.err
    assert dagster_runs() == []


@pytest.fixture
def meal_plans_disabled(tmp_path, monkeypatch):
    """A policy file like the shipped one, with meal_plans disabled (enabled: false)."""
    text = default_policy_path().read_text().replace("  meal_plans:\n", "  meal_plans:\n    enabled: false\n", 1)
    path = tmp_path / "policies.yaml"
    path.write_text(text)
    monkeypatch.setenv("RETENTION_POLICIES_FILE", str(path))
    return path


def test_disabled_domain_is_refused(cli, cli_env, meal_plans_disabled):
    outcome = cli("run", "meal_plans")
    assert outcome.code == 2
    assert outcome.err.startswith("retention: error: ")
    assert "meal_plans" in outcome.err
    assert "disabled" in outcome.err
    assert dagster_runs() == []


@pytest.mark.parametrize("args, complaint", [
    (["run", "--wait", "abc"], "argument --wait: must be a number from 0 to 86400 seconds"),
    ([], "required"),
    (["policies"], "required"),
    (["hold", "add", "--domain", "quiz_responses"], "required"),
    (["frobnicate"], "invalid choice"),
], ids=["wait-not-a-number", "no-subcommand", "no-policies-subcommand", "hold-add-missing-args", "unknown-command"])
def test_bad_arguments_exit_2_with_usage(cli, args, complaint):
    outcome = cli(*args)
    assert outcome.code == 2
    assert outcome.err.startswith("usage: retention")
    assert complaint in outcome.err
    assert outcome.out == ""


def test_console_script_exit_codes(tmp_path, monkeypatch, meal_plans_disabled):
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path / "dagster_home")))
    for args, code, words in ((["run", "nosuch"], 2, "quiz_responses"),
                              (["run", "meal_plans"], 2, "disabled"),
                              (["run", "--wait", "abc"], 2, "usage: retention"),
                              ([], 2, "usage: retention")):
        result = run_script(*args)
        assert result.returncode == code, (args, result.stderr)
        assert words in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_run_without_a_domain_runs_every_enabled_domain(cli, cli_env, quiz_rows):
    outcome = cli("run")
    assert outcome.code == 0, outcome.text
    enabled = [name for name, policy in load_policies().domains.items() if policy.enabled]
    assert sorted(row["domain"] for row in parse_table(outcome.out)) == sorted(enabled)
    assert sorted(job for _, job, _, _ in dagster_runs()) == sorted(f"{name}_retention_job" for name in enabled)


def test_all_four_domains_on_postgresql_s3_and_redis(cli, cli_env, s3_archive_url, redis_url, monkeypatch):
    """The shipped policy file, end to end on the production parts: every domain brought into
    compliance by one `retention run`."""
    import uuid as uuid_module
    from datetime import timedelta as td

    import boto3

    from retention_pipelines_tests.support.app_rows import (
        insert_blacklist_at,
        insert_meal_plans_at,
        insert_token_expiring_at,
        meal_plan_rows,
    )

    hot = f"hot-{uuid_module.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=hot)
    boto3.client("s3").put_object(Bucket=hot, Key="plans/1.pdf", Body=b"%PDF plan")
    monkeypatch.setenv("RETENTION_ARCHIVE_URL", s3_archive_url)
    monkeypatch.setenv("RETENTION_BLOB_URL", f"s3://{hot}")
    monkeypatch.setenv("RETENTION_REDIS_URL", redis_url)
    now = cli_env.now()
    insert_quiz_rows(cli_env, [td(hours=30)], email=ADDRESS)
    insert_token_expiring_at(cli_env, [now - td(minutes=5)])
    plan = insert_meal_plans_at(cli_env, [now - td(days=95)], ["plans/1.pdf"])[0]
    insert_blacklist_at(cli_env, [now - td(days=120)])

    outcome = cli("run")
    assert outcome.code == 0, outcome.text
    rows = {row["domain"]: row for row in parse_table(outcome.out)}
    assert set(rows) == {"quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist"}
    assert all(row["status"] == "ok" and row["acted_on"] == "1" for row in rows.values()), outcome.out
    assert meal_plan_rows(cli_env)[plan][0] is None
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=hot)
    assert {e["action"] for e in audit_entries(cli_env)} == {"deleted", "redacted"}


def test_submit_refusals_name_what_is_wrong_and_launch_nothing(cli, cli_env):
    not_a_url = cli("run", "quiz_responses", "--submit", "localhost")
    assert not_a_url.code == 2 and "--submit: a Dagster webserver's URL is http[s]://host[:port]" in not_a_url.err
    both = cli("run", "quiz_responses", "--submit", "--wait", "5")
    assert both.code == 2 and "--wait is for a run in this process" in both.err
    unreachable = cli("run", "quiz_responses", "--submit", f"http://ops:{PASSWORD}@127.0.0.1:{free_port()}")
    assert unreachable.code == 1 and unreachable.out == ""
    assert "the Dagster webserver at http://127.0.0.1:" in unreachable.err and "ops" not in unreachable.err
    assert "did not take the run of quiz_responses" in unreachable.err and "Connection refused" in unreachable.err
    assert dagster_runs() == []
