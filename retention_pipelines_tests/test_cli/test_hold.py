"""`retention hold add | list | release`: holds on records that exist, named in the key's canonical
form, placed and released by someone, audited; no personal data in them."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.app_rows import insert_quiz_rows, uuid_spellings
from retention_pipelines_tests.support.cli import EMAIL, run_script, with_password

KNOWN_DOMAINS = ["quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist"]
BY = ("--by", "legal-team")


@pytest.fixture
def holds_db(pg_url, monkeypatch):
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(pg_url))
    engine = sa.create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def record(pg_url, holds_db) -> str:
    """The id of a quiz answer that exists."""
    database = AppDatabase(pg_url)
    [record_id] = insert_quiz_rows(database, [timedelta(hours=1)])
    database.dispose()
    return record_id


def hold_rows(engine) -> list[dict]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(
            sa.select(schema.legal_holds).order_by(schema.legal_holds.c.id))]


def hold_audit(engine) -> list[dict]:
    audit = schema.audit_log
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.select(audit).where(
            audit.c.action.in_(("hold_placed", "hold_released"))).order_by(audit.c.id))]


def add(cli, record_id: str, *extra: str, domain: str = "quiz_responses", reason: str = "case 42"):
    return cli("hold", "add", "--domain", domain, "--record-id", record_id, "--reason", reason, *BY, *extra)


def release(cli, record_id: str, by: str = "legal-team", domain: str = "quiz_responses"):
    return cli("hold", "release", "--domain", domain, "--record-id", record_id, "--by", by)


def test_add_list_release_lifecycle(cli, holds_db, record):
    added = add(cli, record)
    assert added.code == 0, added.err
    assert record in added.out
    [row] = hold_rows(holds_db)
    assert (row["domain"], row["record_id"], row["reason"]) == ("quiz_responses", record, "case 42")
    assert row["placed_at"] is not None and row["released_at"] is None
    assert row["placed_by"] == "legal-team"
    assert str(row["id"]) in added.out

    listed = cli("hold", "list")
    assert listed.code == 0, listed.err
    for shown in (record, "case 42", "quiz_responses", "legal-team"):
        assert shown in listed.out

    again = add(cli, record, reason="case 43")
    assert again.code == 1
    assert again.err.startswith("retention: error: ")
    assert "already under legal hold" in again.err
    assert len(hold_rows(holds_db)) == 1

    released = release(cli, record, by="counsel")
    assert released.code == 0, released.err
    assert record in released.out
    [row] = hold_rows(holds_db)
    assert row["released_at"] is not None
    assert row["released_by"] == "counsel"

    active = cli("hold", "list")
    assert active.code == 0
    assert record not in active.out
    assert "(none)" in active.out

    everything = cli("hold", "list", "--all")
    assert everything.code == 0
    for shown in (record, "case 42", "legal-team", "counsel"):
        assert shown in everything.out

    twice = release(cli, record)
    assert twice.code == 1
    assert twice.err.startswith("retention: error: ")
    assert "no active legal hold" in twice.err
    assert record in twice.err


def test_placing_and_releasing_are_audited_with_who(cli, holds_db, record):
    assert add(cli, record).code == 0
    assert release(cli, record, by="counsel").code == 0
    placed, released = hold_audit(holds_db)
    assert (placed["action"], placed["record_id"], placed["actor"]) == ("hold_placed", record, "legal-team")
    assert (released["action"], released["record_id"], released["actor"]) == ("hold_released", record, "counsel")
    assert "case 42" in placed["detail"]


def test_a_released_record_can_be_held_again(cli, holds_db, record):
    assert add(cli, record).code == 0
    assert release(cli, record).code == 0
    assert add(cli, record).code == 0
    rows = hold_rows(holds_db)
    assert len(rows) == 2
    assert [r["released_at"] is None for r in rows] == [False, True]


@pytest.mark.parametrize("index", range(6))
def test_every_spelling_the_key_accepts_is_stored_in_its_canonical_form(cli, holds_db, record, index):
    given = uuid_spellings(record)[index]
    added = add(cli, given)
    assert added.code == 0, added.err
    assert hold_rows(holds_db)[0]["record_id"] == record
    assert record in added.out
    # Any other spelling finds the same hold: to add it again, or to release it.
    again = add(cli, uuid_spellings(record)[(index + 1) % 6])
    assert again.code == 1 and "already under legal hold" in again.err
    released = release(cli, uuid_spellings(record)[(index + 2) % 6])
    assert released.code == 0, released.err


@pytest.mark.parametrize("given", ["quiz-1", "3f1c9a52-0d5e-4f7b-9a61", "3f1c9a52-0d5e-4f7b-9a61-2b7c8e4d1a1g",
                                   "12345"])
def test_an_id_the_key_type_cannot_hold_is_refused_as_bad_input(cli, holds_db, given):
    outcome = add(cli, given)
    assert outcome.code == 2, outcome.text
    assert outcome.err.startswith("retention: error: --record-id")
    assert "key column" in outcome.err
    assert hold_rows(holds_db) == []
    assert release(cli, given).code == 2


def test_a_record_that_does_not_exist_is_refused_unless_forced(cli, holds_db):
    missing = str(uuid.uuid4())
    refused = add(cli, missing)
    assert refused.code == 1
    assert "no record" in refused.err and "--force" in refused.err
    assert hold_rows(holds_db) == []
    forced = add(cli, missing.upper(), "--force")
    assert forced.code == 0, forced.err
    assert [row["record_id"] for row in hold_rows(holds_db)] == [missing]
    assert "does not exist" in hold_audit(holds_db)[0]["detail"]


def test_list_filters_by_domain(cli, holds_db, record):
    plan = str(uuid.uuid4())
    assert add(cli, record).code == 0
    assert add(cli, plan, "--force", domain="meal_plans", reason="case 2").code == 0
    listed = cli("hold", "list", "--domain", "meal_plans")
    assert listed.code == 0
    assert plan in listed.out
    assert record not in listed.out


def test_unknown_domain_is_refused_naming_the_known_ones(cli, holds_db, record):
    outcome = add(cli, record, domain="quizzes")
    assert outcome.code == 2
    assert outcome.err.startswith("retention: error: ")
    assert "quizzes" in outcome.err
    for domain in KNOWN_DOMAINS:
        assert domain in outcome.err
    assert hold_rows(holds_db) == []


@pytest.mark.parametrize("field, record_id, reason, by", [
    ("--reason", None, "complaint by jane.doe@example.com", "legal-team"),
    ("--reason", None, "case 42 (x@y.z)", "legal-team"),
    ("--record-id", "jane.doe@example.com", "case 42", "legal-team"),
    ("--by", None, "case 42", "jane.doe@example.com"),
], ids=["reason", "reason-short-address", "record-id", "by"])
def test_personal_data_is_refused_and_nothing_is_written(cli, holds_db, record, field, record_id, reason, by):
    outcome = cli("hold", "add", "--domain", "quiz_responses", "--record-id", record_id or record,
                  "--reason", reason, "--by", by)
    assert outcome.code == 2
    assert outcome.err.startswith("retention: error: ")
    assert field in outcome.err
    assert "e-mail" in outcome.err
    # The refusal does not repeat the address it refused.
    assert not EMAIL.search(outcome.text), outcome.text
    assert "@" not in outcome.text
    assert hold_rows(holds_db) == []


@pytest.mark.parametrize("reason, by", [("   ", "legal-team"), ("case 42", "  ")], ids=["reason", "by"])
def test_empty_reason_or_name_is_refused(cli, holds_db, record, reason, by):
    outcome = cli("hold", "add", "--domain", "quiz_responses", "--record-id", record, "--reason", reason, "--by", by)
    assert outcome.code == 2
    assert hold_rows(holds_db) == []


def test_hold_on_an_unreachable_database_fails_without_traceback(cli, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RETENTION_DATABASE_URL",
                       with_password(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/nothing"))
    record = str(uuid.uuid4())
    for args in (("hold", "list"),
                 ("hold", "add", "--domain", "quiz_responses", "--record-id", record, "--reason", "case 42", *BY),
                 ("hold", "release", "--domain", "quiz_responses", "--record-id", record, *BY)):
        outcome = cli(*args)
        assert outcome.code == 1, args
        assert outcome.err.startswith("retention: error: "), outcome.err
        assert len(outcome.err.strip().splitlines()) == 1, outcome.err


def test_console_script_hold_exit_codes(holds_db, record):
    command = ("hold", "add", "--domain", "quiz_responses", "--record-id", record, "--reason", "case 42", *BY)
    first = run_script(*command)
    assert first.returncode == 0, first.stderr
    second = run_script(*command)
    assert second.returncode == 1
    assert "already under legal hold" in second.stderr
    assert "Traceback" not in second.stderr
    bad = run_script("hold", "add", "--domain", "nosuch", "--record-id", record, "--reason", "case 42", *BY)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
