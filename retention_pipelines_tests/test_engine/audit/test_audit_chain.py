"""The audit log's hash chains: sealing, and the verifier naming the first broken link of every kind
of tampering (an updated, deleted or inserted row; a rewritten chain, caught by an anchor), on
PostgreSQL and SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.engine.audit.anchor import anchor
from retention_pipelines.engine.audit.links import (
    CONTENT_COLUMNS,
    canonical,
    content_reader,
    content_sql,
    link_hash,
    pack_ids,
    unpack_ids,
)
from retention_pipelines.engine.audit.seal import seal
from retention_pipelines.engine.audit.verify import BrokenLink, verify
from retention_pipelines.stores import AppDatabase
from retention_pipelines.stores.archive import LocalArchiveStore
from retention_pipelines_tests.support.app_rows import insert_quiz_rows
from retention_pipelines_tests.support.audit_rows import execute, ids_of, write_audit_rows
from retention_pipelines_tests.support.engines import engine_for
from retention_pipelines_tests.support.repository import REPOSITORY

log = schema.audit_log


def chain_blocks(database: AppDatabase, domain: str) -> list[dict]:
    with database.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.select(schema.audit_chain).where(
            schema.audit_chain.c.domain == domain).order_by(schema.audit_chain.c.block))]


def only_broken(verification, domain: str = "alpha") -> BrokenLink:
    """The first broken link of the one broken domain."""
    assert not verification.intact
    [link] = verification.broken
    assert link.domain == domain
    return link


def broken_in(verification, domain: str = "alpha") -> BrokenLink:
    return {link.domain: link for link in verification.broken}[domain]


@pytest.fixture
def sealed(any_database):
    """30 rows in two domains (alpha has 15: positions 1–15), sealed in blocks of 4."""
    write_audit_rows(any_database, 30)
    report = seal(any_database, chunk_rows=4)
    assert report.sealed == {"alpha": 15, "beta": 15}
    return any_database


# a sound chain ----------------------------------------------------------------------------------------
def test_a_fresh_chain_verifies(sealed):
    verification = verify(sealed)
    assert verification.intact, verification.broken
    assert verification.rows_checked == 30 and verification.unsealed == 0
    assert {c.domain: (c.positions, c.rows_checked) for c in verification.domains} == {
        "alpha": (15, 15), "beta": (15, 15)}
    assert len(chain_blocks(sealed, "alpha")) == 4  # 4 + 4 + 4 + 3


def test_sealing_twice_seals_nothing_twice(sealed):
    before = chain_blocks(sealed, "alpha")
    assert seal(sealed, chunk_rows=4).rows == 0
    assert chain_blocks(sealed, "alpha") == before
    write_audit_rows(sealed, 3, start=100)
    assert seal(sealed, chunk_rows=4).sealed == {"alpha": 2, "beta": 1}
    assert seal(sealed).rows == 0
    verification = verify(sealed)
    assert verification.intact and verification.rows_checked == 33


def test_rows_written_after_the_seal_are_counted_as_not_yet_sealed(sealed):
    write_audit_rows(sealed, 5, start=100)
    verification = verify(sealed)
    assert verification.intact and verification.unsealed == 5 and verification.rows_checked == 30


def test_one_domain_only(sealed):
    execute(sealed, "UPDATE retention_audit_log SET detail = 'x' WHERE domain = 'beta'")
    assert verify(sealed, domains=["alpha"]).intact
    assert only_broken(verify(sealed, domains=["beta"]), "beta").kind == "content_changed"


def test_the_canonical_form_is_the_standard_librarys_compact_json():
    tricky = (7, "d", 'quote " backslash \\ newline \n tab \t bell \x07 del \x7f é 😀 \u2028', None,
              "2026-01-01T00:00:00.000001Z")
    assert canonical(tricky) == json.dumps(list(tricky), ensure_ascii=False,
                                                       separators=(",", ":")).encode()


def test_postgresql_and_sqlite_chain_the_same_rows_to_the_same_hash(pg_database, sqlite_database):
    """Timestamps are canonicalised alike whichever way each database keeps them."""
    moment = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    rows = [{"domain": "alpha", "record_id": "rec 😀", "action": "deleted", "run_id": "r", "policy_version": "v",
             "occurred_at": moment, "deadline": moment - timedelta(days=30), "actor": "ops", "detail": 'a "b"\n'},
            {"domain": "alpha", "record_id": "2", "action": "deleted", "run_id": "r", "policy_version": "v",
             "occurred_at": moment.replace(microsecond=0), "deadline": None, "actor": None, "detail": None}]
    heads = []
    for database in (pg_database, sqlite_database):
        with database.begin() as connection:
            connection.execute(sa.insert(log), [dict(row, id=n + 1) for n, row in enumerate(rows)])
        seal(database)
        with database.connect() as connection:
            heads.append(connection.execute(sa.select(schema.audit_chain_heads.c.last_hash)).scalar_one())
    assert heads[0] == heads[1]


# tampering with a sealed row ----------------------------------------------------------------------------
@pytest.mark.parametrize("column, value", [
    ("domain", "beta"), ("record_id", "someone-else"), ("action", "redacted"), ("run_id", "forged-run"),
    ("occurred_at", datetime(2025, 1, 1, tzinfo=UTC)), ("policy_version", "v0"), ("archive_uri", "s3://elsewhere"),
    ("deadline", datetime(2030, 1, 1, tzinfo=UTC)), ("actor", "mallory"), ("detail", "nothing happened"),
])
def test_an_update_of_any_content_column_is_named(sealed, column, value):
    target = ids_of(sealed, "alpha")[6]  # chain position 7, inside the second block
    with sealed.begin() as connection:
        connection.execute(sa.update(log).where(log.c.id == target).values({column: value}))
    link = broken_in(verify(sealed))
    assert (link.position, link.audit_id) == (7, target)
    if column == "domain":  # gone from alpha's chain; found in beta's below its head
        assert link.kind == "row_deleted"
        assert {b.domain: b.kind for b in verify(sealed).broken} == {
            "alpha": "row_deleted", "beta": "inserted"}
    else:
        assert link.kind == "content_changed" and len(verify(sealed).broken) == 1
        assert link.message == f"domain alpha, audit row id {target} (chain position 7): content changed"


def test_an_update_of_a_rows_id_is_a_deletion_and_an_insertion(sealed):
    alpha = ids_of(sealed, "alpha")
    execute(sealed, "UPDATE retention_audit_log SET id = 0 WHERE id = :old", old=alpha[2])
    verification = verify(sealed)
    link = only_broken(verification)
    assert (link.kind, link.audit_id) == ("inserted", 0)  # before position 1, so named first
    assert "between chain positions 0 and 1" in link.message
    assert verification.domains[0].problems == 2  # and position 3's row gone


def test_a_deleted_middle_row_is_named(sealed):
    target = ids_of(sealed, "alpha")[5]
    execute(sealed, "DELETE FROM retention_audit_log WHERE id = :id", id=target)
    link = only_broken(verify(sealed))
    assert (link.kind, link.position, link.audit_id) == ("row_deleted", 6, target)
    assert "chain position 6" in link.message and "deleted" in link.message


def test_a_deleted_last_row_is_named(sealed):
    last = ids_of(sealed, "alpha")[-1]
    execute(sealed, "DELETE FROM retention_audit_log WHERE id = :id", id=last)
    link = only_broken(verify(sealed))
    assert (link.kind, link.position, link.audit_id) == ("row_deleted", 15, last)


def test_a_deleted_last_row_with_its_block_shows_at_the_head(sealed):
    """The last block gone too: the head still says where the chain ended."""
    alpha = ids_of(sealed, "alpha")
    execute(sealed, "DELETE FROM retention_audit_log WHERE id >= :id AND domain = 'alpha'", id=alpha[12])
    execute(sealed, "DELETE FROM retention_audit_chain WHERE domain = 'alpha' AND block = 4")
    link = only_broken(verify(sealed))
    assert (link.kind, link.position) == ("head_mismatch", 13)
    assert "head says last position 15" in link.message and "ends at 12" in link.message


def test_a_missing_block_in_the_middle_is_a_jump_in_positions(sealed):
    alpha = ids_of(sealed, "alpha")
    execute(sealed, "DELETE FROM retention_audit_log WHERE id >= :a AND id <= :b AND domain = 'alpha'",
            a=alpha[4], b=alpha[7])
    execute(sealed, "DELETE FROM retention_audit_chain WHERE domain = 'alpha' AND block = 2")
    link = only_broken(verify(sealed))
    assert (link.kind, link.position) == ("position_missing", 5)
    assert "jump from 4 to 9" in link.message


def test_a_forged_row_inserted_below_the_head_is_named(sealed):
    """No hash: its id sits between two sealed rows of the domain (another domain's id, reused)."""
    alpha, beta = ids_of(sealed, "alpha"), ids_of(sealed, "beta")
    gap = beta[3]  # between alpha's 4th and 5th rows
    assert alpha[3] < gap < alpha[4]
    execute(sealed, "DELETE FROM retention_audit_log WHERE id = :id", id=gap)
    execute(sealed, "INSERT INTO retention_audit_log (id, domain, record_id, action, run_id, policy_version) "
                    "VALUES (:id, 'alpha', 'forged', 'deleted', 'forged-run', 'v1+test')", id=gap)
    verification = verify(sealed)
    link = broken_in(verification)
    assert (link.kind, link.audit_id) == ("inserted", gap)
    assert link.message == (f"domain alpha, audit row id {gap}: inserted after sealing (unsealed row below the "
                            "sealed head, between chain positions 4 and 5)")


def test_a_forged_row_with_a_forged_hash_breaks_the_chain(sealed):
    """The forger adds the row to its block with hashes recomputed: the next block no longer follows."""
    beta = ids_of(sealed, "beta")
    gap = beta[3]
    execute(sealed, "DELETE FROM retention_audit_log WHERE id = :id", id=gap)
    execute(sealed, "INSERT INTO retention_audit_log (id, domain, record_id, action, run_id, policy_version) "
                    "VALUES (:id, 'alpha', 'forged', 'deleted', 'forged-run', 'v1+test')", id=gap)
    block = chain_blocks(sealed, "alpha")[1]  # positions 5–8: the forged row goes first
    forged_ids = [gap, *unpack_ids(block["ids"])]
    state, hashes = bytes.fromhex(block["prev_hash"]), []
    select_list = content_sql(sealed.dialect, "a")
    reader = content_reader(sealed.dialect)
    with sealed.connect() as connection:
        for audit_id in forged_ids:
            row = connection.exec_driver_sql(
                f"SELECT {select_list} FROM retention_audit_log a WHERE a.id = {audit_id}").one()
            state = link_hash(state, reader(tuple(row)))
            hashes.append(state[:16])
    with sealed.begin() as connection:
        connection.execute(sa.update(schema.audit_chain).where(
            schema.audit_chain.c.domain == "alpha", schema.audit_chain.c.block == 2).values(
            ids=pack_ids(forged_ids), row_hashes=b"".join(hashes), rows=5, first_id=gap,
            last_hash=state.hex()))
    link = broken_in(verify(sealed))
    assert link.kind in ("hash_broken", "position_missing")
    assert link.position == 9  # the next block: its positions and its hash no longer follow


def test_a_row_hash_replaced_in_its_block_is_named(sealed):
    block = chain_blocks(sealed, "alpha")[2]  # positions 9–12
    hashes = bytearray(block["row_hashes"])
    hashes[16:32] = bytes(16)
    with sealed.begin() as connection:
        connection.execute(sa.update(schema.audit_chain).where(
            schema.audit_chain.c.domain == "alpha", schema.audit_chain.c.block == 3).values(row_hashes=bytes(hashes)))
    link = only_broken(verify(sealed))
    assert (link.position, link.audit_id) == (10, ids_of(sealed, "alpha")[9])


# anchors -------------------------------------------------------------------------------------------------
def test_an_anchor_holds_every_head_and_a_later_one_the_same_day_is_another_object(sealed, tmp_path):
    store = LocalArchiveStore(tmp_path / "archive")
    first = anchor(sealed, store)
    assert first.startswith(f"audit_anchors/{sealed.now():%Y/%m/%d}/") and first.endswith(".json")
    assert list(store.keys("audit_anchors/")) == [first]
    document = json.loads(store.get(first))
    assert {h["domain"]: h["last_seq"] for h in document["heads"]} == {"alpha": 15, "beta": 15}
    write_audit_rows(sealed, 2, start=100)
    seal(sealed)
    second = anchor(sealed, store)
    assert second != first and sorted(store.keys("audit_anchors/")) == sorted([first, second])
    assert {h["domain"]: h["last_seq"] for h in json.loads(store.get(first))["heads"]} == {"alpha": 15, "beta": 15}
    assert {h["domain"]: h["last_seq"] for h in json.loads(store.get(second))["heads"]} == {"alpha": 16, "beta": 16}
    verification = verify(sealed, store)
    assert verification.intact, verification.broken
    assert verification.anchors_checked == 4


def test_a_chain_recomputed_in_the_database_is_caught_by_an_anchor(sealed, tmp_path):
    store = LocalArchiveStore(tmp_path / "archive")
    anchor(sealed, store)
    target = ids_of(sealed, "alpha")[2]
    execute(sealed, "UPDATE retention_audit_log SET action = 'kept' WHERE id = :id", id=target)
    # The attacker throws the chains away and seals everything again: the database alone agrees.
    execute(sealed, "DELETE FROM retention_audit_chain")
    execute(sealed, "DELETE FROM retention_audit_chain_heads")
    seal(sealed, chunk_rows=4)
    assert verify(sealed).intact
    link = only_broken(verify(sealed, store))
    assert link.kind == "anchor_mismatch" and link.position == 15
    assert "the chain was rewritten" in link.message


def test_a_chain_cut_short_with_its_head_is_caught_by_an_anchor(sealed, tmp_path):
    store = LocalArchiveStore(tmp_path / "archive")
    anchor(sealed, store)
    alpha = ids_of(sealed, "alpha")
    execute(sealed, "DELETE FROM retention_audit_log WHERE domain = 'alpha' AND id >= :id", id=alpha[12])
    execute(sealed, "DELETE FROM retention_audit_chain WHERE domain = 'alpha' AND block = 4")
    block = chain_blocks(sealed, "alpha")[-1]
    execute(sealed, "UPDATE retention_audit_chain_heads SET last_block = 3, last_seq = 12, last_id = :id, "
                    "last_hash = :hash WHERE domain = 'alpha'", id=block["last_id"], hash=block["last_hash"])
    assert verify(sealed).intact
    link = only_broken(verify(sealed, store))
    assert (link.kind, link.position) == ("anchor_missing", 15)


def test_the_s3_archive_store_lists_anchors(sealed, s3_archive_url):
    from retention_pipelines.stores import archive_store_from_url

    store = archive_store_from_url(s3_archive_url)
    key = anchor(sealed, store)
    store.put("audit_anchors_not/x.json", b"{}")
    assert list(store.keys("audit_anchors/")) == [key]
    assert verify(sealed, store).anchors_checked == 2


# concurrency and kills -----------------------------------------------------------------------------------
def test_rows_committed_out_of_id_order_are_all_sealed_in_id_order(pg_database):
    """A transaction that drew a lower id commits after one with a higher id: the sealer waits for
    it (or, past its wait, seals nothing), never sealing past a row that may still come."""
    write_audit_rows(pg_database, 4)
    slow = pg_database.engine.connect()
    slow_transaction = slow.begin()
    [low] = slow.execute(sa.insert(log).returning(log.c.id), [
        {"domain": "alpha", "record_id": "late", "action": "deleted", "run_id": "r", "policy_version": "v"}]).scalars()
    [high] = write_audit_rows(pg_database, 1, start=50)
    assert high > low
    assert not seal(pg_database, settle_seconds=0.2).settled  # waited, then left it all unsealed
    assert verify(pg_database).intact

    committer = threading.Timer(0.5, slow_transaction.commit)
    committer.start()
    report = seal(pg_database, settle_seconds=30)
    committer.join()
    slow.close()
    assert report.settled and report.rows == 6
    alpha = chain_blocks(pg_database, "alpha")
    assert list(unpack_ids(alpha[-1]["ids"])) == sorted(ids_of(pg_database, "alpha"))
    verification = verify(pg_database)
    assert verification.intact and verification.rows_checked == 6


class Killed(Exception):
    pass


def test_a_seal_killed_inside_a_chunk_leaves_the_chain_verifying(any_database):
    write_audit_rows(any_database, 20, domains=("alpha",))

    def kill_on_the_third_chunk(domain, rows):
        chunks.append(rows)
        if len(chunks) == 3:
            raise Killed

    chunks = []
    with pytest.raises(Killed):
        seal(any_database, chunk_rows=4, after_chunk=kill_on_the_third_chunk)
    assert len(chain_blocks(any_database, "alpha")) == 2  # the third chunk rolled back with its head
    verification = verify(any_database)
    assert verification.intact and verification.rows_checked == 8 and verification.unsealed == 12
    assert seal(any_database, chunk_rows=4).rows == 12
    verification = verify(any_database)
    assert verification.intact and verification.rows_checked == 20


SEALER = """
import sys, time
from retention_pipelines.engine.audit.seal import seal
from retention_pipelines.stores import AppDatabase

def pause(domain, rows):
    print(rows, flush=True)
    time.sleep(60 if rows and pause.calls else 0)
    pause.calls = True
pause.calls = False
seal(AppDatabase(sys.argv[1]), chunk_rows=5, after_chunk=pause)
"""


def test_a_sealer_process_killed_mid_chunk_leaves_the_chain_verifying(any_database):
    write_audit_rows(any_database, 20, domains=("alpha",))
    url = any_database.engine.url.render_as_string(hide_password=False)
    process = subprocess.Popen([sys.executable, "-c", SEALER, url], cwd=REPOSITORY, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    try:
        assert process.stdout.readline().strip() == "5"  # the first chunk, committed
        assert process.stdout.readline().strip() == "5"  # the second, in its transaction: killed there
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    time.sleep(0.2)
    verification = verify(any_database)
    assert verification.intact and verification.rows_checked == 5 and verification.unsealed == 15
    assert seal(any_database).rows == 15
    assert verify(any_database).intact


# the retention engine ---------------------------------------------------------------------------------------
def test_a_runs_audit_rows_are_sealed_by_the_next_seal(any_database, policies, quiz_policy, local_archive_url):
    """Runs do not seal (it would cost them a third of their speed, benchmarks/): the seal job does,
    every 15 minutes; until then the verifier counts the rows as not yet sealed."""
    insert_quiz_rows(any_database, [timedelta(days=2, minutes=i) for i in range(7)])
    report = engine_for(quiz_policy, policies, any_database, local_archive_url).run("run-chain")
    assert report.acted.acted_on == 7
    assert verify(any_database).unsealed == 7
    assert seal(any_database).rows == 7
    verification = verify(any_database)
    assert verification.intact and verification.unsealed == 0
    assert {c.domain: c.positions for c in verification.domains} == {"quiz_responses": 7}


def test_a_run_seals_nothing_itself(any_database, policies, quiz_policy, local_archive_url):
    write_audit_rows(any_database, 3, domains=("quiz_responses",))
    insert_quiz_rows(any_database, [timedelta(days=2, minutes=i) for i in range(4)])
    engine_for(quiz_policy, policies, any_database, local_archive_url).run("dry", dry_run=True)
    with any_database.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(schema.audit_chain)).scalar_one() == 0
        assert connection.execute(sa.select(sa.func.count()).select_from(schema.audit_chain_heads)).scalar_one() == 0
    assert verify(any_database).unsealed == 3
    engine_for(quiz_policy, policies, any_database, local_archive_url).run("real")
    assert verify(any_database).unsealed == 7


def test_verifying_streams_in_constant_memory(pg_database):
    """Many blocks, read a few at a time; the rows through a server-side cursor."""
    with pg_database.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO retention_audit_log (domain, record_id, action, run_id, policy_version) "
            "SELECT 'alpha', i::text, 'deleted', 'r', 'v' FROM generate_series(1, 50000) AS i")
    assert seal(pg_database, chunk_rows=1000).rows == 50_000
    verification = verify(pg_database)
    assert verification.intact and verification.rows_checked == 50_000
    assert verification.domains[0].positions == 50_000


def test_every_column_of_the_audit_log_is_hashed_and_the_migration_leaves_it_alone():
    """A column added to the audit log one day must be added to the hash (CONTENT_COLUMNS); the
    chains add no column, index or trigger to it: its writers write what they wrote before."""
    assert [c.name for c in log.columns] == ["id", *CONTENT_COLUMNS[1:]]
    migration = (Path(schema.__file__).parent / "migrations" / "versions" / "0007_audit_chain.py").read_text()
    assert "retention_audit_log" not in migration.split('"""', 2)[2]
