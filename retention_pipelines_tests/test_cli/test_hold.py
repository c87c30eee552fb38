"""`retention hold add | list | release`: legal holds placed, listed, released; no personal data in them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines_tests.test_cli.conftest import EMAIL, run_script, with_password

KNOWN_DOMAINS = ["quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist"]
RECORD = "3f1c9a52-0d5e-4f7b-9a61-2b7c8e4d1a10"


@pytest.fixture
def holds_db(pg_url, monkeypatch):
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(pg_url))
    engine = sa.create_engine(pg_url)
    yield engine
    engine.dispose()


def hold_rows(engine) -> list[dict]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(
            sa.select(schema.legal_holds).order_by(schema.legal_holds.c.id))]


def test_add_list_release_lifecycle(cli, holds_db):
    added = cli("hold", "add", "--domain", "quiz_responses", "--record-id", RECORD, "--reason", "case 42")
    assert added.code == 0, added.err
    assert RECORD in added.out
    [row] = hold_rows(holds_db)
    assert (row["domain"], row["record_id"], row["reason"]) == ("quiz_responses", RECORD, "case 42")
    assert row["placed_at"] is not None and row["released_at"] is None
    assert str(row["id"]) in added.out

    listed = cli("hold", "list")
    assert listed.code == 0, listed.err
    assert RECORD in listed.out
    assert "case 42" in listed.out
    assert "quiz_responses" in listed.out

    again = cli("hold", "add", "--domain", "quiz_responses", "--record-id", RECORD, "--reason", "case 43")
    assert again.code == 1
    assert again.err.startswith("retention: error: ")
    assert "already under legal hold" in again.err
    assert len(hold_rows(holds_db)) == 1

    released = cli("hold", "release", "--domain", "quiz_responses", "--record-id", RECORD)
    assert released.code == 0, released.err
    assert RECORD in released.out
    [row] = hold_rows(holds_db)
    assert row["released_at"] is not None

    active = cli("hold", "list")
    assert active.code == 0
    assert RECORD not in active.out
    assert "(none)" in active.out

    everything = cli("hold", "list", "--all")
    assert everything.code == 0
    assert RECORD in everything.out
    assert "case 42" in everything.out

    twice = cli("hold", "release", "--domain", "quiz_responses", "--record-id", RECORD)
    assert twice.code == 1
    assert twice.err.startswith("retention: error: ")
    assert "no active legal hold" in twice.err
    assert RECORD in twice.err


def test_a_released_record_can_be_held_again(cli, holds_db):
    args = ("hold", "add", "--domain", "quiz_responses", "--record-id", RECORD, "--reason", "case 42")
    assert cli(*args).code == 0
    assert cli("hold", "release", "--domain", "quiz_responses", "--record-id", RECORD).code == 0
    assert cli(*args).code == 0
    rows = hold_rows(holds_db)
    assert len(rows) == 2
    assert [r["released_at"] is None for r in rows] == [False, True]


def test_list_filters_by_domain(cli, holds_db):
    assert cli("hold", "add", "--domain", "quiz_responses", "--record-id", "quiz-1", "--reason", "case 1").code == 0
    assert cli("hold", "add", "--domain", "meal_plans", "--record-id", "plan-1", "--reason", "case 2").code == 0
    listed = cli("hold", "list", "--domain", "meal_plans")
    assert listed.code == 0
    assert "plan-1" in listed.out
    assert "quiz-1" not in listed.out


def test_unknown_domain_is_refused_naming_the_known_ones(cli, holds_db):
    outcome = cli("hold", "add", "--domain", "quizzes", "--record-id", RECORD, "--reason", "case 42")
    assert outcome.code == 2
    assert outcome.err.startswith("retention: error: ")
    assert "quizzes" in outcome.err
    for domain in KNOWN_DOMAINS:
        assert domain in outcome.err
    assert hold_rows(holds_db) == []


@pytest.mark.parametrize("field, record_id, reason", [
    ("--reason", RECORD, "complaint by jane.doe@example.com"),
    ("--reason", RECORD, "case 42 (x@y.z)"),
    ("--record-id", "jane.doe@example.com", "case 42"),
], ids=["reason", "reason-short-address", "record-id"])
def test_personal_data_is_refused_and_nothing_is_written(cli, holds_db, field, record_id, reason):
    outcome = cli("hold", "add", "--domain", "quiz_responses", "--record-id", record_id, "--reason", reason)
    assert outcome.code == 2
    assert outcome.err.startswith("retention: error: ")
    assert field in outcome.err
    assert "e-mail" in outcome.err
    # The refusal does not repeat the address it refused.
    assert not EMAIL.search(outcome.text), outcome.text
    assert "@" not in outcome.text
    assert hold_rows(holds_db) == []


def test_empty_reason_is_refused(cli, holds_db):
    outcome = cli("hold", "add", "--domain", "quiz_responses", "--record-id", RECORD, "--reason", "   ")
    assert outcome.code == 2
    assert hold_rows(holds_db) == []


def test_hold_on_an_unreachable_database_fails_without_traceback(cli, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RETENTION_DATABASE_URL",
                       with_password(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/nothing"))
    for args in (("hold", "list"),
                 ("hold", "add", "--domain", "quiz_responses", "--record-id", RECORD, "--reason", "case 42"),
                 ("hold", "release", "--domain", "quiz_responses", "--record-id", RECORD)):
        outcome = cli(*args)
        assert outcome.code == 1, args
        assert outcome.err.startswith("retention: error: "), outcome.err
        assert len(outcome.err.strip().splitlines()) == 1, outcome.err


def test_console_script_hold_exit_codes(holds_db):
    add = ("hold", "add", "--domain", "quiz_responses", "--record-id", RECORD, "--reason", "case 42")
    first = run_script(*add)
    assert first.returncode == 0, first.stderr
    second = run_script(*add)
    assert second.returncode == 1
    assert "already under legal hold" in second.stderr
    assert "Traceback" not in second.stderr
    bad = run_script("hold", "add", "--domain", "nosuch", "--record-id", RECORD, "--reason", "case 42")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr


def test_release_matches_the_record_id_as_add_stored_it(cli, holds_db):
    """`hold add` strips the record id it stores; release must find the hold from the same argument."""
    padded = f" {RECORD} "
    assert cli("hold", "add", "--domain", "quiz_responses", "--record-id", padded, "--reason", "case 42").code == 0
    assert hold_rows(holds_db)[0]["record_id"] == RECORD
    released = cli("hold", "release", "--domain", "quiz_responses", "--record-id", padded)
    assert released.code == 0, released.err
    assert hold_rows(holds_db)[0]["released_at"] is not None
