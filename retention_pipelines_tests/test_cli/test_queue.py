"""`retention queue list | show | claim | resolve | dismiss | retry`: the operator's side of the
manual-resolution queue, in process on PostgreSQL (retry through Dagster on DAGSTER_HOME)."""

from __future__ import annotations

import getpass
from datetime import timedelta

import dagster as dg
import pytest

from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.policies import load_policies
from retention_pipelines_tests.support.app_rows import audit_entries, insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.cli import EMAIL, parse_items, with_password
from retention_pipelines_tests.support.engines import engine_for
from retention_pipelines_tests.support.queue_rows import (
    age_item,
    create_notes_table,
    drop_notes,
    place_hold,
    queue_audit,
    refer_to,
)

DAY = timedelta(days=1)


@pytest.fixture
def queue(cli_env) -> ManualQueue:
    return ManualQueue(cli_env, load_policies().policy_version)


def refused(outcome, words: str) -> None:
    """A refusal: exit 1 and one line on stderr, no traceback, nothing on stdout."""
    assert outcome.code == 1, outcome.text
    assert outcome.out == ""
    assert outcome.err.startswith("retention: error: ") and words in outcome.err, outcome.err
    assert len(outcome.err.strip().splitlines()) == 1, outcome.err
    assert "Traceback" not in outcome.err


# list ------------------------------------------------------------------------------------------------
def test_list_prints_every_item_soonest_due_first_and_filters(cli, cli_env, queue):
    late = queue.add("quiz_responses", "q-late", "delete_blocked", "fk", DAY).item
    plan = queue.add("meal_plans", "m-1", "blob_delete_failed", "AccessDenied", 2 * DAY).item
    claimed = queue.add("quiz_responses", "q-claimed", "delete_blocked", "fk", DAY).item
    queue.claim(claimed.id, "alice")
    done = queue.add("email_blacklist", "e-1", "delete_blocked", "fk", DAY).item
    queue.resolve(done.id, "alice", "deleted by hand")
    age_item(cli_env, late.id, DAY + timedelta(hours=2), DAY)
    queue.escalate("quiz_responses", [2.0, 4.0])

    outcome = cli("queue", "list")

    assert outcome.code == 0 and outcome.err == "", outcome.text
    items = parse_items(outcome.out)
    assert [int(i["id"]) for i in items] == [late.id, claimed.id, done.id, plan.id]  # by due date
    by_id = {int(i["id"]): i for i in items}
    assert by_id[late.id] | {"due_at": ""} == {
        "id": str(late.id), "domain": "quiz_responses", "record_id": "q-late", "reason": "delete_blocked",
        "status": "open", "due_at": "", "overdue": "True", "level": "1", "attempts": "1", "claimed_by": ""}
    assert by_id[late.id]["due_at"] == queue.get(late.id).due_at.strftime("%Y-%m-%d %H:%M")
    assert (by_id[claimed.id]["status"], by_id[claimed.id]["claimed_by"], by_id[claimed.id]["overdue"]) == (
        "claimed", "alice", "False")
    assert by_id[done.id]["status"] == "resolved" and by_id[plan.id]["domain"] == "meal_plans"

    only_plans = parse_items(cli("queue", "list", "--domain", "meal_plans").out)
    assert [int(i["id"]) for i in only_plans] == [plan.id]
    only_claimed = parse_items(cli("queue", "list", "--status", "claimed").out)
    assert [int(i["id"]) for i in only_claimed] == [claimed.id]
    overdue = parse_items(cli("queue", "list", "--overdue").out)
    assert [int(i["id"]) for i in overdue] == [late.id]
    open_quiz = parse_items(cli("queue", "list", "--domain", "quiz_responses", "--status", "open").out)
    assert [int(i["id"]) for i in open_quiz] == [late.id]


def test_list_of_an_empty_queue_and_a_bad_status(cli, cli_env):
    outcome = cli("queue", "list")
    assert outcome.code == 0 and outcome.out.strip() == "(none)"
    bad = cli("queue", "list", "--status", "closed")
    assert bad.code == 2 and "invalid choice: 'closed'" in bad.err


# show ------------------------------------------------------------------------------------------------
def test_show_prints_the_item_and_its_history(cli, cli_env, queue):
    item = queue.add("meal_plans", "m-7", "blob_delete_failed", "the object store refused the delete: AccessDenied",
                     2 * DAY, "run-42").item
    queue.add("meal_plans", "m-7", "blob_delete_failed", "the object store refused the delete: AccessDenied",
              2 * DAY, "run-43")
    queue.claim(item.id, "alice")
    queue.retry_failed(item.id, "alice", "AccessDenied", "retry-run-1")

    outcome = cli("queue", "show", str(item.id))

    assert outcome.code == 0 and outcome.err == "", outcome.text
    fields, _, history = outcome.out.partition("history (audit log):")
    values = dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "")
                  for line in (raw.strip() for raw in fields.strip().splitlines()))
    assert values["id"] == str(item.id) and values["domain"] == "meal_plans" and values["record_id"] == "m-7"
    assert values["reason"] == "blob_delete_failed" and values["status"] == "claimed"
    assert values["claimed_by"] == "alice" and values["attempts"] == "3" and values["escalation_level"] == "0"
    assert values["detail"] == "the object store refused the delete: AccessDenied"
    assert values["resolved_by"] == "" and values["closed_at"] == ""
    lines = [line for line in history.strip().splitlines()[1:]]
    assert len(lines) == 3, history
    for line, (action, by, run_id) in zip(lines, [("queue_opened", "retention", "run-42"),
                                                   ("queue_claimed", "alice", "manual"),
                                                   ("queue_retry_failed", "alice", "retry-run-1")]):
        assert action in line and by in line and run_id in line, line
    assert "open → claimed" in history and "retry failed (AccessDenied); stays claimed" in history


def test_show_an_unknown_item_is_refused(cli, cli_env):
    refused(cli("queue", "show", "4242"), "no queue item 4242")


# claim / resolve / dismiss ----------------------------------------------------------------------------
def test_claim_then_resolve_and_every_refusal_on_the_way(cli, cli_env, queue):
    item = queue.add("quiz_responses", "q-1", "delete_blocked", "fk", DAY).item

    claimed = cli("queue", "claim", str(item.id), "--by", "alice")
    assert claimed.code == 0 and claimed.err == "", claimed.text
    assert claimed.out.strip() == f"queue item {item.id} (quiz_responses, delete_blocked) is now claimed by alice"
    refused(cli("queue", "claim", str(item.id), "--by", "bob"),
            f"queue item {item.id} is claimed by alice: it cannot be claimed")
    refused(cli("queue", "resolve", str(item.id), "--note", "   ", "--by", "alice"), "a note saying what was done")
    refused(cli("queue", "resolve", str(item.id), "--note", "done", "--by", "alice@example.com"), "personal data")
    note = "called jane.doe@example.com about it"
    outcome = cli("queue", "resolve", str(item.id), "--note", note, "--by", "alice")
    refused(outcome, "must not contain personal data")
    assert not EMAIL.search(outcome.err)
    assert queue.get(item.id).status == "claimed"

    resolved = cli("queue", "resolve", str(item.id), "--note", "removed the reference", "--by", "alice")
    assert resolved.code == 0 and resolved.out.strip() == (
        f"queue item {item.id} (quiz_responses, delete_blocked) is now resolved")
    refused(cli("queue", "dismiss", str(item.id), "--note", "x", "--by", "bob"),
            f"queue item {item.id} is resolved: it cannot be dismissed")
    refused(cli("queue", "claim", "777", "--by", "bob"), "no queue item 777")

    final = queue.get(item.id)
    assert (final.status, final.claimed_by, final.resolved_by, final.resolution_note) == (
        "resolved", "alice", "alice", "removed the reference")
    assert [(e["action"], e["actor"]) for e in queue_audit(cli_env)] == [
        ("queue_opened", "retention"), ("queue_claimed", "alice"), ("queue_resolved", "alice")]


def test_dismiss_defaults_to_the_login_and_a_missing_note_or_name_is_a_usage_error(cli, cli_env, queue):
    item = queue.add("meal_plans", "m-1", "blob_delete_failed", "AccessDenied", DAY).item
    no_note = cli("queue", "dismiss", str(item.id))
    assert no_note.code == 2 and "--note" in no_note.err
    no_name = cli("queue", "claim", str(item.id))
    assert no_name.code == 2 and "--by" in no_name.err
    not_a_number = cli("queue", "show", "seven")
    assert not_a_number.code == 2 and "argument id: must be a whole number" in not_a_number.err

    dismissed = cli("queue", "dismiss", str(item.id), "--note", "the PDF was removed by support")
    assert dismissed.code == 0, dismissed.text
    final = queue.get(item.id)
    assert final.status == "dismissed" and final.resolved_by == getpass.getuser()
    [entry] = [e for e in queue_audit(cli_env) if e["action"] == "queue_dismissed"]
    assert entry["actor"] == getpass.getuser() and entry["detail"].endswith("open → dismissed")


# retry -------------------------------------------------------------------------------------------------
@pytest.fixture
def blocked(cli_env, policies, quiz_policy, tmp_path):
    """Two quiz responses another table refers to: two delete_blocked items."""
    create_notes_table(cli_env)
    rows = insert_quiz_rows(cli_env, [timedelta(hours=30)] * 3)
    refer_to(cli_env, rows[0])
    refer_to(cli_env, rows[1])
    engine_for(quiz_policy, policies, cli_env, (tmp_path / "archive").as_uri()).run("scheduled")
    items = {i.record_id: i for i in ManualQueue(cli_env).list()}
    return rows, items[rows[0]], items[rows[1]]


def dagster_runs():
    with dg.DagsterInstance.get() as instance:
        return [(run.run_id, run.job_name, run.status) for run in instance.get_runs()]


def test_retry_runs_the_items_through_dagster_and_resolves_them(cli, cli_env, queue, blocked):
    rows, first, second = blocked
    drop_notes(cli_env)

    outcome = cli("queue", "retry", str(first.id), str(second.id), "--by", "oncall-ana")

    assert outcome.code == 0, outcome.text
    [(run_id, job, status)] = dagster_runs()
    assert job == "manual_queue_retry" and status == dg.DagsterRunStatus.SUCCESS
    assert outcome.out.strip().endswith(f"run {run_id[:8]}: every item resolved")
    table = parse_items(outcome.out.strip().rsplit("\n", 1)[0])
    assert [(int(i["id"]), i["status"]) for i in table] == [(first.id, "resolved"), (second.id, "resolved")]
    assert remaining_ids(cli_env) == set()
    assert {e["run_id"] for e in audit_entries(cli_env)
            if e["record_id"] in rows[:2] and e["action"] in ("deleted", "queue_resolved")} == {run_id}
    assert {e["actor"] for e in queue_audit(cli_env) if e["action"] == "queue_resolved"} == {"oncall-ana"}


def test_retry_fails_with_one_line_naming_the_item_that_stays_open(cli, cli_env, queue, blocked):
    rows, first, second = blocked
    drop_notes(cli_env, rows[0])

    outcome = cli("queue", "retry", str(first.id), str(second.id), "--by", "oncall-ana")

    assert outcome.code == 1, outcome.text
    [(run_id, job, status)] = dagster_runs()
    assert status == dg.DagsterRunStatus.FAILURE
    errors = [line for line in outcome.err.splitlines() if line.startswith("retention: error: ")]
    assert errors == [f"retention: error: run {run_id[:8]}: item {second.id}: 1 rows could not be deleted yet"]
    table = parse_items(outcome.out)
    assert [(int(i["id"]), i["status"], i["attempts"]) for i in table] == [(first.id, "resolved", "1"),
                                                                          (second.id, "open", "2")]
    assert remaining_ids(cli_env) == {rows[1]}


def test_a_retry_that_leaves_an_item_open_says_so_in_one_line_without_a_stack_trace(cli, cli_env, queue, blocked):
    """An item still blocked is an outcome the operator expects, not a crash: one line, as every refusal."""
    rows, first, second = blocked

    outcome = cli("queue", "retry", str(second.id), "--by", "oncall-ana")

    assert outcome.code == 1
    [(run_id, _, _)] = dagster_runs()
    assert "Stack Trace" not in outcome.err and "File \"" not in outcome.err, outcome.err
    assert outcome.err.strip().splitlines() == [
        f"retention: error: run {run_id[:8]}: item {second.id}: 1 rows could not be deleted yet"]


def test_retry_of_a_closed_or_unknown_item_is_refused_before_any_run(cli, cli_env, queue, blocked):
    rows, first, second = blocked
    queue.dismiss(first.id, "alice", "not needed")
    refused(cli("queue", "retry", str(second.id), str(first.id)),
            f"queue item {first.id} is dismissed: there is nothing to retry")
    refused(cli("queue", "retry", "31337"), "no queue item 31337")
    hold = queue.add("quiz_responses", rows[2], "legal_hold_conflict", "held", DAY).item
    place_hold(cli_env, "quiz_responses", rows[2])
    refused(cli("queue", "retry", str(hold.id)), "a retry cannot override a hold")
    assert dagster_runs() == []
    assert queue.get(second.id).attempts == 1


def test_queue_commands_need_the_retention_tables(cli, postgres_server, tmp_path, monkeypatch):
    url = postgres_server.create_database("no_tables_for_queue")
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(url))
    outcome = cli("queue", "list")
    assert outcome.code == 2 and "retention db upgrade" in outcome.err
    assert len(outcome.err.strip().splitlines()) == 1
