"""An erasure run killed by SIGKILL — in the middle of a domain's batches, between two domains, or
inside the transaction that destroys the key and completes the request — and run again: every row
of the subject erased exactly once (one `erased` entry each, archived first where the policy
archives), her key destroyed once, the request completed once, nobody else's rows touched."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from retention_pipelines.engine.archive.format import read_manifest, read_rows, verify
from retention_pipelines_tests.support.app_rows import _insert
from retention_pipelines_tests.support.erasure_rows import (
    ANN,
    ANN_SPELLINGS,
    DOMAINS,
    PDF,
    Erasure,
    audit,
    data_key_rows,
    insert_subject_rows,
    no_address_in_audit,
    table_rows,
)
from retention_pipelines_tests.support.runners.process import RunnerProcess, backend_gone

BATCH = 20
MANY = {"meal_plans": 300, "email_blacklist": 3000}  # Ann's rows beyond the few of insert_subject_rows


class ErasureRunner(RunnerProcess):
    MODULE = "retention_pipelines_tests.support.runners.erasure_run"


class Killed:
    """Ann with many rows in the archiving domains, beside Bob; her request; the erasure machinery."""

    def __init__(self, database, folder):
        self.database, self.folder = database, folder
        self.erasure = Erasure(database, folder, batch_size=BATCH)
        # Every blacklist entry of hers past its 90 days: nothing is kept by policy, the request completes.
        self.rows = insert_subject_rows(database, self.erasure.blob_store, ann_recently_blacklisted=False)
        now = database.now()
        plans = []
        for i in range(MANY["meal_plans"]):
            key = f"plans/ann-many-{i}.pdf"
            self.erasure.blob_store.put(key, PDF + key.encode())
            plans.append({"payment_id": f"pay_many_{i}", "email": ANN_SPELLINGS[i % 3], "pdf_blob_key": key,
                          "created_at": database.bind_time(now - timedelta(days=i % 200, minutes=i))})
        self.rows["meal_plans"]["ann"] += _insert(database, "meal_plans", plans)
        self.rows["email_blacklist"]["ann"] += _insert(database, "email_blacklist", [
            {"email": ANN_SPELLINGS[i % 3], "reason": "refund_abuse",
             "created_at": database.bind_time(now - timedelta(days=91 + i % 30, minutes=i))}
            for i in range(MANY["email_blacklist"])])
        self.others = {domain: {rid: row for rid, row in table_rows(database, domain).items()
                                if rid in self.rows[domain]["others"]} for domain in DOMAINS}
        self.request = self.erasure.requests.request(ANN)

    def runner(self, url: str, **extra) -> ErasureRunner:
        return ErasureRunner(database_url=url, folder=str(self.folder), request_id=self.request.id,
                             run_id="killed-run", batch_size=BATCH, **extra)

    def erased(self, domain: str | None = None) -> int:
        with self.database.engine.connect() as connection:
            query = "SELECT count(*) FROM retention_audit_log WHERE action = 'erased'"
            if domain:
                query += f" AND domain = '{domain}'"
            return connection.exec_driver_sql(query).scalar_one()

    def assert_erased_exactly_once(self) -> None:
        """The state every kill and rerun must end in."""
        everything = {rid for domain in DOMAINS for rid in self.rows[domain]["ann"]}
        counts = Counter(e["record_id"] for e in audit(self.database, "erased"))
        assert {rid: n for rid, n in counts.items() if n != 1} == {}, "records erased twice"
        assert set(counts) == everything
        for domain in DOMAINS:
            rows = table_rows(self.database, domain)
            assert {rid: rows[rid] for rid in self.others[domain]} == self.others[domain]
            if domain == "meal_plans":
                for rid in self.rows[domain]["ann"]:
                    assert rows[rid]["email"] == f"erased-by-request-{self.request.id}@erased.invalid"
                    assert rows[rid]["pdf_blob_key"] is None and rows[rid]["pdf_deleted_at"] is not None
            else:
                assert not set(rows) & set(self.rows[domain]["ann"])
        blobs = {p.name for p in (self.folder / "blobs" / "plans").iterdir()}
        assert not any(name.startswith("ann-") for name in blobs) and {"bob-new.pdf", "bob-old.pdf"} <= blobs
        # Every erased row of an archiving domain is in the intact object its entry names, under her
        # key, now destroyed: the copies are there and unreadable.
        store, keys = self.erasure.archive_store, self.erasure.keys
        [destroyed] = audit(self.database, "key_destroyed")
        manifests: dict[str, dict] = {}
        for entry in audit(self.database, "erased", "email_blacklist"):
            key = store.key_of(entry["archive_uri"])
            if key not in manifests:
                manifests[key] = read_manifest(store.get(key + ".manifest.json"))
                assert verify(store.get(key), manifests[key]) is None
                assert {s["key"] for s in manifests[key]["segments"]} == {destroyed["record_id"]}
            assert entry["record_id"] in manifests[key]["record_ids"]
        for key, manifest in manifests.items():
            assert all(row is None for _, row in read_rows(store.get(key), manifest,
                                                          keys.unwrap({destroyed["record_id"]})))
        [ann_key] = [k for k in data_key_rows(self.database) if k["subject_hash"] == self.erasure.ann_key_hash()]
        assert ann_key["key_id"] == destroyed["record_id"] and ann_key["destroyed_at"] is not None
        request = self.erasure.requests.get(self.request.id)
        assert request.status == "completed" and request.completed_at is not None
        no_address_in_audit(self.database)

    def rerun_finishes_and_a_third_run_does_nothing(self) -> None:
        outcome = self.erasure.run(self.request.id, "rerun")
        assert outcome.status == "completed"
        self.assert_erased_exactly_once()
        completed = self.erasure.requests.get(self.request.id)
        entries = len(audit(self.database))
        again = self.erasure.run(self.request.id, "third-run")
        assert (again.status, again.keys_destroyed) == ("completed", 0)
        assert len(audit(self.database)) == entries and self.erasure.requests.get(self.request.id) == completed


@pytest.fixture
def killed(pg_database, tmp_path) -> Killed:
    return Killed(pg_database, tmp_path)


@pytest.mark.parametrize("domain", ["meal_plans", "email_blacklist"])
def test_killed_during_a_domains_batches(pg_url, pg_database, killed, domain):
    name = f"erasure-killed-{domain}"
    runner = killed.runner(f"{pg_url}?application_name={name}")
    try:
        runner.wait_for("ready")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and killed.erased(domain) == 0:
            time.sleep(0.002)
        runner.kill()
    finally:
        runner.close()
    assert runner.process.returncode == -9, "the run ended before it could be killed"
    backend_gone(pg_database, name)
    done = killed.erased(domain)
    assert 0 < done < len(killed.rows[domain]["ann"]), f"killed after {done} of the domain's rows"
    assert killed.erased() == done + sum(len(killed.rows[d]["ann"]) for d in DOMAINS[:DOMAINS.index(domain)])
    assert killed.erasure.requests.get(killed.request.id).status == "received"
    assert audit(pg_database, "key_destroyed") == []

    killed.rerun_finishes_and_a_third_run_does_nothing()


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_killed_between_two_domains(request, tmp_path, database):
    db = request.getfixturevalue("pg_database" if database == "postgresql" else "sqlite_database")
    killed = Killed(db, tmp_path)
    runner = killed.runner(db.engine.url.render_as_string(hide_password=False), pause_after="meal_plans")
    try:
        runner.wait_for("ready")
        assert runner.wait_for("erased meal_plans", 120)["rows"] == len(killed.rows["meal_plans"]["ann"])
        time.sleep(0.2)  # it waits for a "go" that never comes
        runner.kill()
    finally:
        runner.close()
    assert [e["event"] for e in runner.seen if e["event"].startswith("erased")] == [
        "erased quiz_responses", "erased magic_link_tokens", "erased meal_plans"]
    assert killed.erased("meal_plans") == len(killed.rows["meal_plans"]["ann"])
    assert killed.erased("email_blacklist") == 0
    assert audit(db, "key_destroyed") == [] and killed.erasure.requests.get(killed.request.id).status == "received"

    killed.rerun_finishes_and_a_third_run_does_nothing()


def test_killed_inside_the_transaction_that_destroys_the_key_and_completes(pg_url, pg_database, killed):
    """The run is stopped after it destroyed the key and before it completed the request, in their
    one transaction (held there by a lock on the audit log's batches), and killed: neither happened."""
    name = "erasure-killed-completing"
    runner = killed.runner(f"{pg_url}?application_name={name}", pause_before_complete=True)
    blocker = pg_database.engine.raw_connection()
    try:
        runner.wait_for("completing", 180)
        with blocker.cursor() as cursor:  # reads go on; the key's audit entry waits
            cursor.execute("LOCK TABLE retention_audit_batches IN EXCLUSIVE MODE")
        runner.go()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not waits_holding_the_keys(pg_database, name):
            time.sleep(0.02)
        assert waits_holding_the_keys(pg_database, name), "the run never reached the key's audit entry"
        runner.kill()
    finally:
        runner.close()
        blocker.rollback()
        blocker.close()
    assert runner.process.returncode == -9
    backend_gone(pg_database, name)

    assert audit(pg_database, "key_destroyed") == []
    assert killed.erasure.keys.live_subject_keys({killed.erasure.ann_key_hash()}), "the key went without its audit"
    request = killed.erasure.requests.get(killed.request.id)
    assert request.status == "received" and request.completed_at is None
    assert killed.erased() == sum(len(killed.rows[d]["ann"]) for d in DOMAINS)

    killed.rerun_finishes_and_a_third_run_does_nothing()


def waits_holding_the_keys(database, application_name: str) -> bool:
    """The run's backend waits on a lock while it holds a row-exclusive lock on retention_data_keys
    (it has updated the key) and on gdpr_erasure_requests' row (FOR UPDATE)."""
    with database.engine.connect() as connection:
        held = connection.execute(sa.text(
            "SELECT c.relname, l.mode, l.granted, a.wait_event_type FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid JOIN pg_class c ON c.oid = l.relation "
            "WHERE a.application_name = :name"), {"name": application_name}).all()
    granted = {(relation, mode) for relation, mode, was_granted, _ in held if was_granted}
    waiting = any(not was_granted and relation == "retention_audit_batches" for relation, _, was_granted, _ in held)
    return waiting and ("retention_data_keys", "RowExclusiveLock") in granted and (
        "gdpr_erasure_requests", "RowShareLock") in granted
