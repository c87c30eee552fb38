"""`retention erasure request | status | extend`, in process on PostgreSQL: the address given is
never printed back (stdout or stderr), refusals and their exit codes, RETENTION_ERASURE_DUE_DAYS,
and the hash key: RETENTION_ERASURE_HASH_KEY, or a key file made once in RETENTION_HOME."""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import re
import stat
import threading
from datetime import timedelta

import pytest

from retention_pipelines.engine.gdpr.requests import ErasureRequests
from retention_pipelines.schema.tables import VERSION_TABLE
from retention_pipelines.stores import load_settings
from retention_pipelines_tests.support.cli import EMAIL

ADDRESS = "Dana.Subject@Example.org"
OTHER = "erin.subject@example.net"
GIVEN = [ADDRESS, OTHER, "dana.subject@example.org", "frank@example.com"]
RECEIVED = re.compile(r"^erasure request (\d+) received; due (\d{4}-\d\d-\d\d \d\d:\d\d) UTC$")
NOW_DUE = re.compile(r"^erasure request (\d+) now due (\d{4}-\d\d-\d\d \d\d:\d\d) UTC$")
STATUS_COLUMNS = ["id", "status", "received", "due", "days_left", "completed", "extended", "kept_until_deadline",
                  "outcome"]
KEY = "cli-erasure-hash-key-0123456789"


@pytest.fixture(autouse=True)
def no_erasure_settings(monkeypatch):
    for name in ("RETENTION_ERASURE_DUE_DAYS", "RETENTION_ERASURE_HASH_KEY"):
        monkeypatch.setenv(name, "unset-by-test")
        monkeypatch.delenv(name)


@pytest.fixture
def erasure(cli):
    """cli('erasure', …) that also proves no address (given or any other) is in its output."""

    def invoke(*args: str):
        outcome = cli("erasure", *args)
        for address in GIVEN:
            assert address.lower() not in outcome.text.lower(), outcome.text
        assert not EMAIL.search(outcome.text), outcome.text
        return outcome

    return invoke


def requested(erasure, address: str = ADDRESS) -> tuple[int, str]:
    outcome = erasure("request", "--email", address)
    assert outcome.code == 0 and outcome.err == "", outcome.text
    match = RECEIVED.match(outcome.out.strip())
    assert match, outcome.out
    return int(match[1]), match[2]


def row(database, request_id: int) -> dict:
    with database.connect() as connection:
        return dict(connection.exec_driver_sql(
            f"SELECT * FROM gdpr_erasure_requests WHERE id = {int(request_id)}").one()._mapping)


def refused(outcome, code: int, words: str) -> None:
    assert outcome.code == code, outcome.text
    assert outcome.out == ""
    assert outcome.err.startswith("retention: error: ") and words in outcome.err, outcome.err
    assert len(outcome.err.strip().splitlines()) == 1, outcome.err


def status_rows(text: str) -> dict[int, list[str]]:
    header, *lines = [line.split() for line in text.strip().splitlines()]
    assert header == STATUS_COLUMNS, text
    return {int(tokens[0]): tokens for tokens in lines}


# request ---------------------------------------------------------------------------------------------
def test_request_prints_the_id_and_due_date_but_never_the_address(erasure, cli_env):
    request_id, due = requested(erasure)
    stored = row(cli_env, request_id)
    assert stored["email"] == ADDRESS.lower() and stored["status"] == "received"
    assert stored["due_at"] - stored["received_at"] == timedelta(days=30)
    assert due == cli_env.read_time(stored["due_at"]).strftime("%Y-%m-%d %H:%M")


def test_the_address_read_from_standard_input_is_taken_as_given_on_the_line(erasure, cli_env, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(ADDRESS + "\n"))
    request_id, _ = requested(erasure, "-")
    assert row(cli_env, request_id)["email"] == ADDRESS.lower()


@pytest.mark.parametrize("given", ["", "\n", "  \n", f"{ADDRESS}\n{OTHER}\n"], ids=["empty", "blank line", "spaces",
                                                                                    "two lines"])
def test_standard_input_without_one_address_is_refused_with_exit_2(erasure, cli_env, monkeypatch, given):
    monkeypatch.setattr("sys.stdin", io.StringIO(given))
    refused(erasure("request", "--email", "-"), 2, "--email -: standard input must hold the address alone")
    with cli_env.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM gdpr_erasure_requests").scalar_one() == 0


def test_retention_erasure_due_days_sets_the_deadline(erasure, cli_env, monkeypatch):
    monkeypatch.setenv("RETENTION_ERASURE_DUE_DAYS", "45")
    request_id, due = requested(erasure)
    stored = row(cli_env, request_id)
    assert stored["due_at"] - stored["received_at"] == timedelta(days=45)
    assert due == cli_env.read_time(stored["due_at"]).strftime("%Y-%m-%d %H:%M")
    assert status_rows(erasure("status", str(request_id)).out)[request_id][6] == "45.0"


def test_a_second_request_for_the_same_address_in_another_case_is_refused(erasure, cli_env):
    request_id, _ = requested(erasure)
    for again in (ADDRESS.upper(), ADDRESS.lower(), f"  {ADDRESS}  "):
        refused(erasure("request", "--email", again), 2, "exists already")
    with cli_env.connect() as connection:
        assert connection.exec_driver_sql("SELECT id FROM gdpr_erasure_requests").scalars().all() == [request_id]
    requested(erasure, OTHER)  # another address is taken


@pytest.mark.parametrize("address", [
    "", "frank@example.com,erin.subject@example.net", "frank@example.com erin.subject@example.net",
    "frank smith@example.com", "frank@", "frank@example", "frank.example.com", "f" * 60 + "@" + "e" * 235 + ".com",
], ids=["empty", "two addresses", "two addresses with a space", "spaces", "no domain", "no dot in the domain",
        "no @", "300 characters"])
def test_a_bad_address_is_refused_with_exit_2(erasure, cli_env, address):
    outcome = erasure("request", "--email", address)
    refused(outcome, 2, "not an e-mail address")
    assert address not in outcome.text or address == ""
    with cli_env.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM gdpr_erasure_requests").scalar_one() == 0


def test_a_new_request_is_taken_once_the_previous_one_is_complete(erasure, cli_env):
    first, _ = requested(erasure)
    ErasureRequests(cli_env, load_settings().resolved_erasure_hash_key()).complete(first, "erased")
    second, _ = requested(erasure, ADDRESS.upper())
    assert second != first
    rows = status_rows(erasure("status").out)
    assert rows[first][1] == "completed" and rows[second][1] == "received"


# status ----------------------------------------------------------------------------------------------
def test_status_lists_requests_with_days_left(erasure, cli_env):
    assert erasure("status").out.strip() == "(none)"
    first, _ = requested(erasure)
    second, _ = requested(erasure, OTHER)
    assert erasure("extend", str(first), "--days", "10", "--reason", "backlog").code == 0

    outcome = erasure("status")
    assert outcome.code == 0 and outcome.err == "", outcome.text
    rows = status_rows(outcome.out)
    assert list(rows) == [second, first]  # soonest due first
    assert rows[second][1] == "received" and rows[second][6] == "30.0"
    assert rows[first][6] == "40.0" and rows[first][7] == "backlog"
    stored = row(cli_env, second)
    assert rows[second][2:4] == cli_env.read_time(stored["received_at"]).strftime("%Y-%m-%d %H:%M").split()

    only = status_rows(erasure("status", str(first)).out)
    assert list(only) == [first]


def test_status_of_a_completed_request_shows_its_outcome_and_no_days_left(erasure, cli_env):
    request_id, _ = requested(erasure)
    ErasureRequests(cli_env, b"k").complete(request_id, "erased", partially_blocked=True)
    outcome = erasure("status", str(request_id))
    [line] = outcome.out.strip().splitlines()[1:]
    assert "partially_blocked" in line and line.rstrip().endswith("erased")
    assert not re.search(r"\s-?\d+\.\d\s", line), line  # no days_left once completed


def test_status_of_an_unknown_request_exits_1(erasure, cli_env):
    refused(erasure("status", "404"), 1, "no erasure request 404")


# extend ----------------------------------------------------------------------------------------------
def test_extend_moves_the_deadline_once(erasure, cli_env):
    request_id, _ = requested(erasure)
    before = row(cli_env, request_id)["due_at"]

    outcome = erasure("extend", str(request_id), "--days", "60", "--reason", "large backlog in the archive")
    assert outcome.code == 0 and outcome.err == "", outcome.text
    match = NOW_DUE.match(outcome.out.strip())
    assert match and int(match[1]) == request_id, outcome.out
    after = row(cli_env, request_id)
    assert after["due_at"] - before == timedelta(days=60)
    assert after["extension_reason"] == "large backlog in the archive"
    assert match[2] == cli_env.read_time(after["due_at"]).strftime("%Y-%m-%d %H:%M")

    refused(erasure("extend", str(request_id), "--days", "5", "--reason", "again"), 1, "extended already")
    assert row(cli_env, request_id)["due_at"] == after["due_at"]


@pytest.mark.parametrize("days", ["0", "61", "-3", "ten", "1.5"])
def test_extend_days_out_of_range_are_bad_input_exit_2(erasure, cli_env, days):
    request_id, _ = requested(erasure)
    before = row(cli_env, request_id)
    outcome = erasure("extend", str(request_id), f"--days={days}", "--reason", "backlog")
    assert outcome.code == 2 and "argument --days: must be a whole number from 1 to 60 days" in outcome.err
    assert row(cli_env, request_id) == before


@pytest.mark.parametrize("days, reason, words", [
    ("10", "", "needs its reason"),
    ("10", "asked by frank@example.com", "must not contain personal data"),
])
def test_extend_refusals_exit_1(erasure, cli_env, days, reason, words):
    request_id, _ = requested(erasure)
    before = row(cli_env, request_id)
    refused(erasure("extend", str(request_id), "--days", days, "--reason", reason), 1, words)
    assert row(cli_env, request_id) == before


def test_extend_an_unknown_or_completed_request_exits_1(erasure, cli_env):
    refused(erasure("extend", "404", "--days", "5", "--reason", "backlog"), 1, "no erasure request 404")
    request_id, _ = requested(erasure)
    ErasureRequests(cli_env, b"k").complete(request_id, "erased")
    refused(erasure("extend", str(request_id), "--days", "5", "--reason", "backlog"), 1, "cannot be extended")


# The hash key ----------------------------------------------------------------------------------------
def test_the_key_file_is_made_once_with_mode_0600_and_reused(erasure, cli_env, tmp_path):
    key_file = tmp_path / "retention_home" / "erasure_hash.key"
    assert not key_file.exists()
    requested(erasure)
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", key.strip()), "a random 256-bit key"
    first = key_file.stat()

    requested(erasure, OTHER)
    assert erasure("status").code == 0
    assert key_file.read_text() == key
    second = key_file.stat()
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert stat.S_IMODE(second.st_mode) == 0o600

    # The key the CLI uses is the file's: completion hashes under it.
    settings_key = load_settings().resolved_erasure_hash_key()
    assert settings_key == key.strip().encode()
    [request_id] = [int(line.split()[0]) for line in erasure("status").out.splitlines()[1:2]]
    ErasureRequests(cli_env, settings_key).complete(request_id, "erased")
    stored = row(cli_env, request_id)
    assert stored["email"] is None
    assert stored["subject_hash"] in {hmac.new(key.strip().encode(), address.lower().encode(), hashlib.sha256)
                                      .hexdigest() for address in (ADDRESS, OTHER)}


def test_retention_erasure_hash_key_is_used_instead_of_a_key_file(erasure, cli_env, tmp_path, monkeypatch):
    monkeypatch.setenv("RETENTION_ERASURE_HASH_KEY", KEY)
    requested(erasure)
    assert erasure("status").code == 0
    assert not (tmp_path / "retention_home" / "erasure_hash.key").exists()
    settings = load_settings()
    assert settings.resolved_erasure_hash_key() == KEY.encode()
    assert KEY not in repr(settings) and KEY not in str(settings)  # a secret, not shown


def test_concurrent_first_use_of_the_key_file_agrees_on_one_key(tmp_path):
    """Two workers starting at once (Dagster runs, the CLI) must not each make their own key: requests
    completed under the loser's key would no longer match a repeat request's hash."""
    for trial in range(20):
        home = tmp_path / f"home_{trial}"
        settings = [load_settings(home=home) for _ in range(8)]
        barrier = threading.Barrier(8)
        keys: list[bytes] = []

        def resolve(one) -> None:
            barrier.wait(timeout=30)
            keys.append(one.resolved_erasure_hash_key())

        threads = [threading.Thread(target=resolve, args=(one,)) for one in settings]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        final = (home / "erasure_hash.key").read_text().strip().encode()
        assert len(keys) == 8 and all(keys), keys
        assert set(keys) == {final}, f"trial {trial}: {len(set(keys))} different keys handed out"
        assert stat.S_IMODE(os.stat(home / "erasure_hash.key").st_mode) == 0o600


def test_erasure_against_a_database_behind_its_migrations_says_to_upgrade(erasure, cli_env):
    with cli_env.begin() as connection:
        connection.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = '0004'")
    for args in (("status",), ("request", "--email", ADDRESS)):
        refused(erasure(*args), 2, "retention db upgrade")
