"""`retention erasure run ID [--dry-run]`: the erasure job for one request, in process on the
DAGSTER_HOME instance, against PostgreSQL: a table per domain, the outcome (the blacklist entry
kept until its deadline, and until when), no address printed."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from retention_pipelines.engine.gdpr.requests import ErasureRequests
from retention_pipelines_tests.support.app_rows import _insert
from retention_pipelines_tests.support.cli import EMAIL

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


def test_dry_run_then_run_then_rerun(cli, cli_env):
    rows = subject_rows(cli_env)
    requested = cli("erasure", "request", "--email", ADDRESS)
    assert requested.code == 0
    request_id = int(requested.out.split()[2])

    dry = cli("erasure", "run", str(request_id), "--dry-run")
    no_address(dry)
    assert dry.code == 0, dry.text
    assert "would be erased (dry run: nothing changed)" in dry.out
    assert table_rows(cli_env, "quiz_responses") == set(rows["quiz_responses"])
    assert ErasureRequests(cli_env).get(request_id).status == "received"

    done = cli("erasure", "run", str(request_id))
    no_address(done)
    assert done.code == 0, done.text
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
