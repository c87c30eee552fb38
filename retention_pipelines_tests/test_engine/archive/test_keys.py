"""The data keys of the encrypted archives (engine/archive/keys.py): wrapped by the master key, one live key
per subject (whatever the case or spaces of their address, however many runs make it at once), a
batch's key found again by its name, destroyed with one audit entry in the caller's transaction,
and the master key's configuration (hex, base64, the demo's key file) — on PostgreSQL and SQLite."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import stat
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from retention_pipelines.engine.archive.keys import KEY_BYTES, NONCE_BYTES, ArchiveKeys
from retention_pipelines.schema import audit_log, data_keys
from retention_pipelines.stores import ConfigurationError, load_settings
from retention_pipelines_tests.support.audit_rows import audit_rows
from retention_pipelines_tests.support.repository import REPOSITORY

MASTER = bytes(range(32))
HASH_KEY = b"h" * 32
ANN = "ann.subject@example.org"


@pytest.fixture
def keys(any_database) -> ArchiveKeys:
    return ArchiveKeys(any_database, MASTER, HASH_KEY)


def key_rows(database) -> list[dict]:
    with database.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.select(data_keys).order_by(data_keys.c.id))]


# wrapping ----------------------------------------------------------------------------------------
def test_a_key_is_kept_only_wrapped_and_unwraps_to_itself(any_database, keys):
    hashed = keys.subject_hash(ANN)
    made = keys.for_subjects({hashed})[hashed]
    assert len(made.key) == KEY_BYTES

    [row] = key_rows(any_database)
    wrapped = bytes(row["wrapped_key"])
    assert row["key_id"] == made.key_id and row["subject_hash"] == hashed and row["destroyed_at"] is None
    assert len(wrapped) == NONCE_BYTES + KEY_BYTES + 16  # nonce, ciphertext, GCM tag
    assert made.key not in wrapped and MASTER not in wrapped
    # Another instance (another run) with the same master key reads the same key back.
    again = ArchiveKeys(any_database, MASTER, HASH_KEY)
    assert again.unwrap({made.key_id}) == {made.key_id: made.key}
    assert again.live_subject_keys({hashed})[hashed] == made
    # An id this database never had reads as nothing, not as an error.
    assert again.unwrap({"0" * 32}) == {"0" * 32: None}


def test_a_wrapped_key_is_bound_to_its_id(any_database, keys):
    """A wrapped key copied onto another key's row does not unwrap there (the id is authenticated)."""
    first, second = (keys.for_batch(name) for name in ("quiz_responses:a", "quiz_responses:b"))
    with any_database.engine.begin() as connection:
        wrapped = connection.execute(sa.select(data_keys.c.wrapped_key).where(
            data_keys.c.key_id == first.key_id)).scalar_one()
        connection.execute(sa.update(data_keys).where(data_keys.c.key_id == second.key_id).values(wrapped_key=wrapped))
    with pytest.raises(ValueError, match=second.key_id):
        keys.unwrap({second.key_id})


def test_a_wrong_master_key_is_refused_naming_the_variable_not_the_key(any_database, keys):
    hashed = keys.subject_hash(ANN)
    made = keys.for_subjects({hashed})[hashed]
    batch = keys.for_batch("email_blacklist:0123")
    other_master = secrets.token_bytes(32)
    wrong = ArchiveKeys(any_database, other_master, HASH_KEY)

    for read in (lambda: wrong.unwrap({made.key_id}), lambda: wrong.for_subjects({hashed}),
                 lambda: wrong.live_subject_keys({hashed}), lambda: wrong.for_batch("email_blacklist:0123")):
        with pytest.raises(ValueError) as refused:
            read()
        message = str(refused.value)
        assert "RETENTION_ARCHIVE_MASTER_KEY" in message and "cannot be unwrapped" in message
        assert made.key_id in message or batch.key_id in message
        for secret in (other_master, MASTER, made.key, batch.key):
            assert secret.hex() not in message and base64.b64encode(secret).decode() not in message
    # Nothing was made or changed by the refused reads.
    assert len(key_rows(any_database)) == 2


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_a_master_key_of_the_wrong_length_is_refused(any_database, length):
    with pytest.raises(ValueError, match="32 bytes"):
        ArchiveKeys(any_database, b"k" * length, HASH_KEY)


# one live key per subject --------------------------------------------------------------------------
def test_the_same_subject_in_any_case_or_spacing_has_one_live_key(any_database, keys):
    spellings = [ANN, ANN.upper(), f"  {ANN}\t", "Ann.Subject@Example.ORG "]
    hashes = {keys.subject_hash(spelling) for spelling in spellings}
    assert len(hashes) == 1
    [hashed] = hashes
    made = [keys.for_subjects({keys.subject_hash(spelling)})[hashed] for spelling in spellings]
    assert len({key.key_id for key in made}) == 1 and len({key.key for key in made}) == 1
    assert len(key_rows(any_database)) == 1
    # Another subject gets a key of their own; the hash names neither in clear.
    bob = keys.subject_hash("bob@example.org")
    assert keys.for_subjects({hashed, bob})[bob].key_id != made[0].key_id
    assert len(key_rows(any_database)) == 2
    assert all("@" not in (row["subject_hash"] or "") for row in key_rows(any_database))
    # The hash is keyed: another hash key names the same subject differently.
    assert ArchiveKeys(any_database, MASTER, b"x" * 32).subject_hash(ANN) != hashed


@contextlib.contextmanager
def key_inserts_blocked(database):
    """A transaction that lets everyone read retention_data_keys but makes every insert wait until
    it ends: so that every competitor finds no key before any of them makes one."""
    if database.is_sqlite:
        import sqlite3

        blocker = sqlite3.connect(database.engine.url.database, timeout=30, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # a RESERVED lock: readers go on, writers wait
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        return
    blocker = database.engine.raw_connection()
    try:
        with blocker.cursor() as cursor:
            cursor.execute("LOCK TABLE retention_data_keys IN SHARE MODE")  # conflicts with INSERT only
        yield
    finally:
        blocker.rollback()
        blocker.close()


def waiting_on_locks(database, application_name: str) -> int:
    with database.engine.connect() as connection:
        return connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %(name)s AND wait_event_type = 'Lock'",
            {"name": application_name}).scalar_one()


@pytest.fixture
def race_database(any_database):
    """The same database, its PostgreSQL sessions named so that their waits can be seen."""
    if any_database.is_sqlite:
        yield any_database
        return
    from retention_pipelines.stores import AppDatabase

    database = AppDatabase(any_database.engine.url.set(query={"application_name": "keys-race"}).render_as_string(
        hide_password=False))
    yield database
    database.dispose()


def test_threads_making_the_same_subjects_key_at_once_keep_one(any_database, race_database):
    """Eight runs archive the same new subject at the same moment: each finds no key, each makes
    one; the database keeps one, and every run encrypts with that one."""
    competitors = 8
    keys = [ArchiveKeys(race_database, MASTER, HASH_KEY) for _ in range(competitors)]
    hashed = keys[0].subject_hash(ANN)
    found, errors = [], []

    def make(index: int) -> None:
        try:
            found.append(keys[index].for_subjects({hashed})[hashed])
        except Exception as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(competitors)]
    try:
        with key_inserts_blocked(any_database):
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            if any_database.is_sqlite:
                time.sleep(1.5)  # SQLite shows no waiters: time for every thread to reach its insert
            else:
                while waiting_on_locks(any_database, "keys-race") < competitors and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert waiting_on_locks(any_database, "keys-race") == competitors
            assert not found, "a thread made its key while inserts were blocked"
    finally:
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert len(found) == competitors and len({key.key_id for key in found}) == 1
    assert len({key.key for key in found}) == 1
    [row] = key_rows(any_database)
    assert row["key_id"] == found[0].key_id


MAKE_KEY = """
import sys
from retention_pipelines.engine.archive.keys import ArchiveKeys
from retention_pipelines.stores import AppDatabase
keys = ArchiveKeys(AppDatabase(sys.argv[1]), bytes(range(32)), b"h" * 32)
hashed = keys.subject_hash(sys.argv[2])
print(keys.for_subjects({hashed})[hashed].key_id, flush=True)
"""


def test_processes_making_the_same_subjects_key_at_once_keep_one(pg_database):
    url = pg_database.engine.url.set(query={"application_name": "keys-race-process"}).render_as_string(
        hide_password=False)
    with key_inserts_blocked(pg_database):
        processes = [subprocess.Popen([sys.executable, "-c", MAKE_KEY, url, spelling], cwd=REPOSITORY,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for spelling in (ANN, ANN.upper(), f" {ANN} ")]
        deadline = time.monotonic() + 60
        while waiting_on_locks(pg_database, "keys-race-process") < len(processes) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting_on_locks(pg_database, "keys-race-process") == len(processes)
    outputs = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err for _, err in outputs]
    made = {out.strip() for out, _ in outputs}
    [row] = key_rows(pg_database)
    assert made == {row["key_id"]}


# batch keys -----------------------------------------------------------------------------------------
def test_a_batch_key_is_found_again_by_its_batch_name(any_database, keys):
    first = keys.for_batch("email_blacklist:abc")
    assert keys.for_batch("email_blacklist:abc") == first
    assert ArchiveKeys(any_database, MASTER, HASH_KEY).for_batch("email_blacklist:abc") == first
    other = keys.for_batch("email_blacklist:abd")
    assert other.key_id != first.key_id and other.key != first.key
    rows = key_rows(any_database)
    assert [(r["batch"], r["subject_hash"]) for r in rows] == [("email_blacklist:abc", None),
                                                              ("email_blacklist:abd", None)]
    # A batch key is no subject's: destroying a subject never touches it.
    with any_database.begin() as connection:
        assert keys.destroy_subject(connection, keys.subject_hash(ANN), "run", "v", "erasure request 1") == []
    assert keys.unwrap({first.key_id}) == {first.key_id: first.key}


# destruction -----------------------------------------------------------------------------------------
def test_destroying_a_subject_audits_each_key_once_and_a_returning_subject_gets_a_new_key(any_database, keys):
    ann, bob = keys.subject_hash(ANN), keys.subject_hash("bob@example.org")
    made = keys.for_subjects({ann, bob})
    with any_database.begin() as connection:
        destroyed = keys.destroy_subject(connection, ann, "erasure-run-1", "2026-11-30.1", "erasure request 7")
    assert destroyed == [made[ann].key_id]

    [entry] = audit_rows(any_database, "key_destroyed")
    assert (entry["domain"], entry["record_id"], entry["run_id"], entry["policy_version"], entry["detail"]) == (
        "gdpr", made[ann].key_id, "erasure-run-1", "2026-11-30.1", "erasure request 7")
    assert "@" not in " ".join(str(value) for value in entry.values())
    assert keys.unwrap({made[ann].key_id, made[bob].key_id}) == {made[ann].key_id: None,
                                                                  made[bob].key_id: made[bob].key}
    row = next(r for r in key_rows(any_database) if r["key_id"] == made[ann].key_id)
    assert row["wrapped_key"] is None and row["destroyed_at"] is not None  # the record that it was destroyed

    # A second destruction finds nothing live: no second audit entry.
    with any_database.begin() as connection:
        assert keys.destroy_subject(connection, ann, "erasure-run-2", "2026-11-30.1", "erasure request 7") == []
    assert len(audit_rows(any_database, "key_destroyed")) == 1

    # Ann comes back (a new purchase, archived later): a NEW key, never the destroyed one.
    again = keys.for_subjects({ann})[ann]
    assert again.key_id != made[ann].key_id and again.key != made[ann].key
    assert keys.live_subject_keys({ann}) == {ann: again}
    assert len(key_rows(any_database)) == 3


def test_a_destruction_rolled_back_with_its_transaction_leaves_the_key_and_no_audit_entry(any_database, keys):
    ann = keys.subject_hash(ANN)
    made = keys.for_subjects({ann})[ann]

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned):
        with any_database.begin() as connection:
            assert keys.destroy_subject(connection, ann, "erasure-run", "v", "erasure request 3") == [made.key_id]
            # Inside the transaction the key is gone and audited...
            assert connection.execute(sa.select(sa.func.count()).select_from(audit_log).where(
                audit_log.c.action == "key_destroyed")).scalar_one() == 1
            raise Abandoned  # ...and the caller's transaction fails after it
    assert audit_rows(any_database, "key_destroyed") == []
    assert keys.unwrap({made.key_id}) == {made.key_id: made.key}
    assert keys.live_subject_keys({ann}) == {ann: made}


# the master key's configuration ------------------------------------------------------------------------
def test_the_master_key_is_accepted_as_hex_or_base64(monkeypatch, tmp_path):
    key = secrets.token_bytes(32)
    for written in (key.hex(), key.hex().upper(), base64.b64encode(key).decode()):
        monkeypatch.setenv("RETENTION_ARCHIVE_MASTER_KEY", written)
        assert load_settings(home=tmp_path).resolved_archive_master_key() == key
    assert not (tmp_path / "archive_master.key").exists()  # a configured key makes no file


@pytest.mark.parametrize("written", [
    pytest.param(secrets.token_bytes(16).hex(), id="16-bytes-hex"),
    pytest.param(secrets.token_bytes(33).hex()[:64] + "ab", id="33-bytes-hex"),
    pytest.param(base64.b64encode(secrets.token_bytes(24)).decode(), id="24-bytes-base64"),
    pytest.param(base64.b64encode(secrets.token_bytes(48)).decode(), id="48-bytes-base64-64-chars"),
    pytest.param("zz" + secrets.token_hex(31), id="64-chars-not-hex"),
    pytest.param("correct horse battery staple, a passphrase", id="passphrase"),
])
def test_a_master_key_that_is_not_32_bytes_is_refused_naming_the_variable_never_its_value(monkeypatch, tmp_path,
                                                                                           written):
    monkeypatch.setenv("RETENTION_ARCHIVE_MASTER_KEY", written)
    with pytest.raises(ConfigurationError) as refused:
        load_settings(home=tmp_path).resolved_archive_master_key()
    message = str(refused.value)
    assert "RETENTION_ARCHIVE_MASTER_KEY" in message and "32" in message
    assert written not in message and written[:16] not in message
    assert not (tmp_path / "archive_master.key").exists()


def test_the_demo_key_file_is_made_once_private_and_reused(monkeypatch, tmp_path):
    monkeypatch.delenv("RETENTION_ARCHIVE_MASTER_KEY", raising=False)
    home = tmp_path / "home"  # not there yet: made with the file
    first = load_settings(home=home).resolved_archive_master_key()
    key_file = home / "archive_master.key"
    assert len(first) == 32 and key_file.read_text().strip() == first.hex()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    made = key_file.stat()

    assert load_settings(home=home).resolved_archive_master_key() == first
    assert key_file.stat().st_ino == made.st_ino and key_file.stat().st_mtime_ns == made.st_mtime_ns
    assert sorted(p.name for p in home.iterdir()) == ["archive_master.key"]  # no draft left behind
    # Another home, another key.
    assert load_settings(home=tmp_path / "other").resolved_archive_master_key() != first


def test_processes_starting_together_share_one_demo_key_file(monkeypatch, tmp_path):
    monkeypatch.delenv("RETENTION_ARCHIVE_MASTER_KEY", raising=False)
    script = ("from retention_pipelines.stores import load_settings; import sys; "
              "print(load_settings(home=sys.argv[1]).resolved_archive_master_key().hex())")
    env = {k: v for k, v in os.environ.items() if k != "RETENTION_ARCHIVE_MASTER_KEY"}
    processes = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "home")], cwd=REPOSITORY, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1
    assert (tmp_path / "home" / "archive_master.key").read_text().strip() == outputs[0][0].strip()


def test_a_damaged_demo_key_file_is_refused_naming_the_file(monkeypatch, tmp_path):
    monkeypatch.delenv("RETENTION_ARCHIVE_MASTER_KEY", raising=False)
    tmp_path.joinpath("archive_master.key").write_text("abc123\n")
    with pytest.raises(ConfigurationError) as refused:
        load_settings(home=tmp_path).resolved_archive_master_key()
    assert str(tmp_path / "archive_master.key") in str(refused.value) and "abc123" not in str(refused.value)
    assert tmp_path.joinpath("archive_master.key").read_text() == "abc123\n"  # never replaced: it may be the only copy
