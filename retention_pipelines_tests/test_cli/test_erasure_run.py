"""`retention erasure run ID [--dry-run]`: the erasure job (or its dry-run job) for one request, in
process on the DAGSTER_HOME instance, against PostgreSQL: a table per domain, the outcome (the
blacklist entry kept until its deadline, and until when), no address printed; the dry run's table
from its run's metadata, nothing materialized."""

from __future__ import annotations

import json
import uuid

import dagster as dg
import sqlalchemy as sa

from retention_pipelines.dagster_wiring.erasure_run import ERASURE_DRY_RUN_JOB, ERASURE_JOB
from retention_pipelines.engine.gdpr.requests import ErasureRequests
from retention_pipelines_tests.support.app_rows import _insert
from retention_pipelines_tests.support.cli import EMAIL, parse_table

ADDRESS = "Gail.Subject@Example.org"


def table_rows(database, table: str) -> set[str]:
    with database.engine.connect() as connection:
        return {str(r) for r in connection.execute(sa.text(f"SELECT id FROM {table}")).scalars()}


def subject_rows(database) -> dict[str, list[str]]:
    now = database.now()
    return {
        "quiz_responses": _insert(database, "quiz_responses", [
            {"session_id": uuid.uuid4(), "email": email, "answers": {"goal": "lose"}, "created_at": now}
            for email in (ADDRESS.lower(), "other@example.net")]),
        "email_blacklist": _insert(database, "email_blacklist", [
            {"email": email, "reason": "manual", "created_at": now} for email in (ADDRESS, "other@example.net")]),
    }


def no_address(outcome) -> None:
    assert ADDRESS.lower() not in outcome.text.lower() and not EMAIL.search(outcome.text), outcome.text


def table_of(out: str) -> dict[str, dict]:
    """The table the run printed, before its last line (the sentence), by domain."""
    return {row["domain"]: row for row in parse_table("\n".join(out.strip().splitlines()[:-1]))}


def instance_history() -> tuple[list[str], int]:
    """The DAGSTER_HOME instance's runs (their jobs, latest first) and how many asset events it holds."""
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        events = [e for run in runs for e in instance.all_logs(run.run_id) if e.dagster_event and (
            e.dagster_event.asset_key or e.dagster_event.event_type_value.startswith("ASSET_CHECK"))]
        return [run.job_name for run in runs], len(events)


def test_dry_run_then_run_then_rerun(cli, cli_env):
    rows = subject_rows(cli_env)
    requested = cli("erasure", "request", "--email", ADDRESS)
    assert requested.code == 0
    request_id = int(requested.out.split()[2])

    dry = cli("erasure", "run", str(request_id), "--dry-run")
    no_address(dry)
    assert dry.code == 0, dry.text
    said = dry.out.strip().splitlines()[-1]
    assert said == f"erasure request {request_id}: would be erased (dry run: nothing changed)"
    would = table_of(dry.out)
    assert list(would) == ["email_blacklist", "magic_link_tokens", "meal_plans", "quiz_responses"]
    assert list(would["quiz_responses"]) == ["domain", "erased", "archived", "kept_under_hold", "kept_until_deadline",
                                             "in_manual_queue"]
    assert would["quiz_responses"]["erased"] == "1" and would["email_blacklist"]["kept_until_deadline"] == "1"
    assert table_rows(cli_env, "quiz_responses") == set(rows["quiz_responses"])
    assert ErasureRequests(cli_env).get(request_id).status == "received"
    # The dry-run job ran, and left the assets' history as it was.
    assert instance_history() == ([ERASURE_DRY_RUN_JOB], 0)
    as_json = cli("erasure", "run", str(request_id), "--dry-run", "--json")
    assert as_json.code == 0, as_json.text
    document = json.loads(as_json.out)
    assert (document["status"], document["outcome"], document["dry_run"]) == ("dry run: nothing changed", None, True)
    assert {row["domain"]: row["erased"] for row in document["rows"]}["quiz_responses"] == 1

    done = cli("erasure", "run", str(request_id))
    no_address(done)
    assert done.code == 0, done.text
    jobs, asset_events = instance_history()
    assert jobs == [ERASURE_JOB, ERASURE_DRY_RUN_JOB, ERASURE_DRY_RUN_JOB] and asset_events > 0
    lines = done.out.splitlines()
    quiz = next(line for line in lines if line.split()[:1] == ["quiz_responses"])
    assert quiz.split()[1] == "1"
    blacklist = next(line for line in lines if line.split()[:1] == ["email_blacklist"])
    assert blacklist.split()[1:6] == ["0", "0", "0", "1", "0"]  # erased, archived, held, kept until deadline, queued
    assert f"erasure request {request_id}: partially_blocked" in done.out and "unreadable" in done.out
    assert "email_blacklist: 1 kept until deadline by policy" in done.out
    assert table_rows(cli_env, "quiz_responses") == {rows["quiz_responses"][1]}
    assert table_rows(cli_env, "email_blacklist") == set(rows["email_blacklist"])  # never one second earlier

    status = cli("erasure", "status", str(request_id))
    no_address(status)
    until = ErasureRequests(cli_env).get(request_id).kept_by_policy[0].until
    assert "partially_blocked" in status.out and f"email_blacklist {until:%Y-%m-%d %H:%M}" in status.out

    again = cli("erasure", "run", str(request_id))
    no_address(again)
    assert again.code == 0 and f"erasure request {request_id}: partially_blocked" in again.out
    assert next(line for line in again.out.splitlines() if line.split()[:1] == ["quiz_responses"]).split()[1] == "0"


def test_an_unknown_request_is_refused_by_its_id(cli, cli_env):
    outcome = cli("erasure", "run", "999")
    assert outcome.code != 0 and "no erasure request 999" in outcome.err
