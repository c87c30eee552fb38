"""`retention audit show`: the evidence for one record, from the audit log."""

from __future__ import annotations

from datetime import timedelta

import pytest

from retention_pipelines.engine.audit.evidence import record_evidence
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.policies import load_policies
from retention_pipelines_tests.support.app_rows import insert_quiz_rows, uuid_spellings

DUE, NOT_DUE = [timedelta(hours=30)] * 3, [timedelta(hours=2)]


@pytest.fixture
def after_a_run(cli, cli_env):
    due = insert_quiz_rows(cli_env, DUE, email="evidence.subject@example.com")
    kept = insert_quiz_rows(cli_env, NOT_DUE)
    ran = cli("run", "quiz_responses")
    assert ran.code == 0, ran.err
    return due, kept


def test_show_says_when_why_by_which_run_and_where(cli, cli_env, after_a_run):
    due, _ = after_a_run
    shown = cli("audit", "show", "--record-id", due[0])
    assert shown.code == 0, shown.err
    [entry] = record_evidence(cli_env, due[0])
    assert entry["action"] == "deleted" and entry["domain"] == "quiz_responses"
    policies = load_policies()
    # when, what, the rule and the policy version, the deadline and the run.
    for part in (entry["occurred_at"].isoformat(timespec="seconds"), "deleted", "created_at + 1d",
                 policies.policy_version, entry["run_id"], entry["deadline"].isoformat(timespec="seconds")):
        assert part in shown.out, (part, shown.out)
    assert "@" not in shown.out + shown.err


def test_show_lists_a_records_whole_history_in_order(cli, cli_env, after_a_run):
    due, _ = after_a_run
    queue = ManualQueue(cli_env, load_policies().policy_version)
    item = queue.add("quiz_responses", due[1], "delete_blocked", "the database refused: notes_fk", timedelta(days=1))
    queue.claim(item.item.id, "oncall-ana")
    entries = record_evidence(cli_env, due[1], "quiz_responses")
    assert [e["action"] for e in entries] == ["deleted", "queue_opened", "queue_claimed"]
    shown = cli("audit", "show", "--record-id", due[1], "--domain", "quiz_responses")
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    order = [next(i for i, line in enumerate(lines) if action in line)
             for action in ("deleted", "queue_opened", "queue_claimed")]
    assert order == sorted(order)
    assert "by oncall-ana" in shown.out


def test_a_record_without_entries_is_said_plainly(cli, cli_env, after_a_run):
    _, kept = after_a_run
    shown = cli("audit", "show", "--record-id", kept[0])
    assert shown.code == 1
    assert f"no audit entry for record {kept[0]}" in shown.out
    other_domain = cli("audit", "show", "--record-id", after_a_run[0][0], "--domain", "meal_plans")
    assert other_domain.code == 1 and "in meal_plans" in other_domain.out


def test_usage_errors_exit_2(cli, cli_env):
    missing = cli("audit", "show")
    assert missing.code == 2 and "--record-id" in missing.err


def test_show_finds_a_record_by_any_spelling_of_its_key(cli, cli_env, after_a_run):
    due, _ = after_a_run
    for spelling in uuid_spellings(due[2]):
        shown = cli("audit", "show", "--record-id", spelling)
        assert shown.code == 0, (spelling, shown.text)
        assert "deleted" in shown.out
    typo = cli("audit", "show", "--record-id", due[2], "--domain", "quiz_responsez")
    assert typo.code == 2 and "unknown domain 'quiz_responsez'" in typo.err
