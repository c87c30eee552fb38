"""The audit log's hash chains: every batch linked in the transaction that writes it, by the database
on PostgreSQL and in Python otherwise, to the same link; and the verifier naming the first broken
link of every kind of tampering (a changed, deleted or added record or batch; a rewritten chain,
caught by an anchor), on PostgreSQL and SQLite."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_pipelines import schema
from retention_pipelines.engine.audit.anchor import anchor
from retention_pipelines.engine.audit.entries import Action, AuditStamp, audited_from, link_batch, write_entries
from retention_pipelines.engine.audit.links import FIELDS, python_link, utc_text
from retention_pipelines.engine.audit.verify import BrokenLink, verify
from retention_pipelines.stores.archive import LocalArchiveStore
from retention_pipelines_tests.support.app_rows import insert_quiz_rows
from retention_pipelines_tests.support.audit_rows import batch_of, execute, ids_of, relink, write_audit_rows
from retention_pipelines_tests.support.engines import engine_for

log = schema.audit_log


def only_broken(verification, domain: str = "alpha") -> BrokenLink:
    """The first broken link of the one broken domain."""
    assert not verification.intact
    [link] = verification.broken
    assert link.domain == domain
    return link


def positions(database) -> dict[str, int]:
    with database.connect() as connection:
        return dict(connection.execute(sa.select(schema.audit_chain_heads.c.domain,
                                                 schema.audit_chain_heads.c.last_seq)).all())


@pytest.fixture
def written(any_database):
    """30 entries in two domains, seven to a run: alpha's 15 in 9 batches (run and archive object)."""
    write_audit_rows(any_database, 30)
    return any_database


# a sound chain ----------------------------------------------------------------------------------------
def test_every_entry_is_in_the_chain_the_moment_it_is_written(written):
    verification = verify(written)
    assert verification.intact, verification.broken
    assert verification.rows_checked == 30 and verification.outside_chain == 0
    with written.connect() as connection:
        batches = dict(connection.execute(sa.select(schema.audit_batches.c.domain, sa.func.count()).group_by(
            schema.audit_batches.c.domain)).all())
    assert positions(written) == batches and set(batches) == {"alpha", "beta"}
    assert {c.domain: c.rows_checked for c in verification.domains} == {"alpha": 15, "beta": 15}


def test_a_rolled_back_write_leaves_the_chain_as_it_was(written):
    before = positions(written)
    stamp = AuditStamp("alpha", Action.HOLD_PLACED, "manual", "v1", actor="ops", detail="case 1")
    with pytest.raises(RuntimeError), written.begin() as connection:
        write_entries(connection, [stamp.row("r-1")])
        raise RuntimeError("the caller's transaction rolls back")
    assert positions(written) == before and verify(written).intact


def test_one_domain_only(written):
    execute(written, "UPDATE retention_audit_batches SET detail = 'x' WHERE domain = 'beta'")
    assert verify(written, domains=["alpha"]).intact
    assert only_broken(verify(written, domains=["beta"]), "beta").kind == "content_changed"


def test_the_link_spells_every_value_apart():
    """`<length>:<value>` and `-` for NULL in the fields, a length before every record value: no two
    batches share a link by moving a separator or a character from one value to the next."""
    batch = dict.fromkeys(FIELDS, "x") | {"seq": 1, "records": 1, "archive_uri": None}
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    assert python_link("00" * 32, batch, [(1, "ab", None), (2, "c", None)]) != python_link(
        "00" * 32, batch, [(1, "a", None), (2, "bc", None)])
    assert python_link("00" * 32, batch, [(1, "a", None)]) != python_link("00" * 32, batch, [(1, "a", epoch)])
    assert python_link("00" * 32, batch, [(12, "a", None)]) != python_link("00" * 32, batch, [(1, "2a", None)])
    assert python_link("00" * 32, batch, [(1, "a", None), (2, "b", None)]) != python_link(
        "00" * 32, batch, [(1, "a", None), (2, "b", None), (3, "", None)])
    assert python_link("00" * 32, batch | {"detail": None}, [(1, "a", None)]) != python_link(
        "00" * 32, batch | {"detail": "-"}, [(1, "a", None)])


# the link the database computes is the link Python computes ---------------------------------------------
# Text PostgreSQL can hold (no NUL, no lone surrogate), and spellings that look like the link's own.
TEXT = st.one_of(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1,
                         max_size=12),
                 st.sampled_from(["-", "1:-", "0:", "2:ab", "a\u0301", "\u00e1", "😀", "'; --", "ß", "ẞ", " "]))
RECORD = st.tuples(TEXT,
                   st.one_of(st.none(), st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                                                     timezones=st.just(UTC))))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(RECORD, min_size=1, max_size=12), detail=st.one_of(st.none(), TEXT))
def test_the_statement_that_acts_links_its_batch_as_the_verifier_does(pg_database, records, detail):
    """Hostile record ids (quotes, separators, lookalikes, non-ASCII), NULL and odd deadlines, a
    NUL-free detail: the batch written by one statement with a DELETE … RETURNING verifies."""
    with pg_database.begin() as connection:
        connection.exec_driver_sql("CREATE TEMP TABLE IF NOT EXISTS acted_on (id text, due timestamptz) "
                                   "ON COMMIT DROP")
        connection.execute(sa.text("INSERT INTO acted_on VALUES (:id, :due)"),
                           [{"id": record_id, "due": due} for record_id, due in records])
        acted_on = sa.table("acted_on", sa.column("id", sa.Text), sa.column("due", sa.DateTime(timezone=True)))
        gone = sa.delete(acted_on).returning(acted_on.c.id, acted_on.c.due).cte("gone")
        stamp = AuditStamp("alpha", Action.DELETED, "run-property", "v1", archive_uri="s3://a/b", detail=detail)
        row = connection.execute(audited_from(connection, gone.c.id, gone.c.due)).one()
        assert link_batch(connection, stamp, row.batch_id, row.records, row.digest) == len(records)
    verification = verify(pg_database, domains=["alpha"])
    assert verification.intact, verification.broken


def test_postgresql_and_sqlite_link_the_same_batch_alike(pg_database, sqlite_database):
    """What each database keeps of a timestamp is spelt alike in the link."""
    moment = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    links = []
    for database in (pg_database, sqlite_database):
        stamp = AuditStamp("alpha", Action.DELETED, "r", "v", detail='a "b"\n', actor="ops")
        with database.begin() as connection:
            write_entries(connection, [stamp.row("rec 😀", database.bind_time(moment)), stamp.row("2")])
            batch = connection.execute(sa.select(schema.audit_batches)).one()._mapping
            records = [(r.id, r.record_id, utc_text(r.deadline))
                       for r in connection.execute(sa.select(schema.audit_records))]
        occurred = utc_text(batch["occurred_at"])
        assert python_link(batch["prev_link"], {**batch, "occurred_at": occurred}, records) == batch["link"]
        links.append(python_link(batch["prev_link"], {**batch, "occurred_at": "t"}, records))
    assert links[0] == links[1]


# tampering ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("column, value", [
    ("action", "redacted"), ("run_id", "forged-run"), ("occurred_at", datetime(2025, 1, 1, tzinfo=UTC)),
    ("policy_version", "v0"), ("archive_uri", "s3://elsewhere"), ("actor", "mallory"), ("detail", "nothing happened"),
    ("records", 99),
])
def test_a_change_to_any_field_of_a_batch_is_named(written, column, value):
    target = batch_of(written, ids_of(written, "alpha")[6])
    with written.begin() as connection:
        connection.execute(sa.update(schema.audit_batches).where(schema.audit_batches.c.id == target).values(
            {column: written.bind_time(value) if isinstance(value, datetime) else value}))
    link = only_broken(verify(written))
    assert link.audit_id == target and link.kind in ("content_changed", "row_deleted")
    assert f"batch id {target}" in link.message


@pytest.mark.parametrize("column, value", [
    ("record_id", "someone-else"), ("deadline", datetime(2030, 1, 1, tzinfo=UTC)), ("id", 100000)])
def test_a_change_to_a_record_row_is_named(written, column, value):
    target = ids_of(written, "alpha")[6]
    batch = batch_of(written, target)
    with written.begin() as connection:
        connection.execute(sa.update(schema.audit_records).where(schema.audit_records.c.id == target).values(
            {column: written.bind_time(value) if isinstance(value, datetime) else value}))
    link = only_broken(verify(written))
    assert (link.kind, link.audit_id) == ("content_changed", batch)


def test_a_deleted_record_row_is_named(written):
    target = ids_of(written, "alpha")[6]
    batch = batch_of(written, target)
    execute(written, "DELETE FROM retention_audit_records WHERE id = :id", id=target)
    link = only_broken(verify(written))
    assert (link.kind, link.audit_id) == ("row_deleted", batch)


def test_a_record_row_added_to_a_batch_is_named(written):
    batch = batch_of(written, ids_of(written, "alpha")[6])
    execute(written, "INSERT INTO retention_audit_records (id, batch_id, record_id) VALUES (100000, :b, 'forged')",
            b=batch)
    link = only_broken(verify(written))
    assert (link.kind, link.audit_id) == ("inserted", batch)


def test_a_record_row_of_no_batch_is_outside_the_chain(written):
    execute(written, "INSERT INTO retention_audit_records (id, batch_id, record_id) VALUES (100000, 99999, 'x')")
    verification = verify(written)
    assert verification.outside_chain == 1 and not verification.intact
    [link] = verification.broken
    assert link.kind == "inserted" and "batch ids 99999" in link.message


def test_a_batch_moved_to_another_domain_is_named_in_both(written):
    target = batch_of(written, ids_of(written, "alpha")[6])
    execute(written, "UPDATE retention_audit_batches SET domain = 'beta' WHERE id = :id", id=target)
    assert {link.domain for link in verify(written).broken} == {"alpha", "beta"}


def test_a_deleted_middle_batch_is_a_jump_in_positions(written):
    target = batch_of(written, ids_of(written, "alpha")[6])
    execute(written, "DELETE FROM retention_audit_records WHERE batch_id = :id", id=target)
    execute(written, "DELETE FROM retention_audit_batches WHERE id = :id", id=target)
    link = only_broken(verify(written))
    assert link.kind == "position_missing"
    assert f"jump from {link.position - 1} to {link.position + 1}" in link.message


def test_a_deleted_last_batch_shows_at_the_head(written):
    end = positions(written)["alpha"]
    execute(written, "DELETE FROM retention_audit_records WHERE batch_id IN (SELECT id FROM retention_audit_batches "
                     "WHERE domain = 'alpha' AND seq = :seq)", seq=end)
    execute(written, "DELETE FROM retention_audit_batches WHERE domain = 'alpha' AND seq = :seq", seq=end)
    link = only_broken(verify(written))
    assert (link.kind, link.position) == ("head_mismatch", end)
    assert f"head says last position {end}" in link.message


def test_a_forged_batch_with_a_forged_link_breaks_the_chain_after_it(written):
    """The forger writes a batch that links right, between two others: the next no longer follows."""
    with written.connect() as connection:
        second = connection.execute(sa.select(schema.audit_batches).where(
            schema.audit_batches.c.domain == "alpha", schema.audit_batches.c.seq == 2)).one()._mapping
    # Moved up one position, in two steps past the one-batch-per-position constraint.
    execute(written, "UPDATE retention_audit_batches SET seq = seq + 1000 WHERE domain = 'alpha' AND seq >= 3")
    execute(written, "UPDATE retention_audit_batches SET seq = seq - 999 WHERE domain = 'alpha' AND seq >= 1000")
    forged = {**{name: second[name] for name in FIELDS}, "seq": 3, "records": 1, "run_id": "forged",
              "occurred_at": utc_text(second["occurred_at"])}
    link = python_link(second["link"], forged, [(100000, "forged", None)])
    with written.begin() as connection:
        batch_id = connection.execute(sa.insert(schema.audit_batches).values(
            {**forged, "occurred_at": second["occurred_at"], "prev_link": second["link"], "link": link},
        ).returning(schema.audit_batches.c.id)).scalar_one()
        connection.execute(sa.insert(schema.audit_records).values(id=100000, batch_id=batch_id, record_id="forged"))
    broken = only_broken(verify(written))
    # Batches are checked in position order: the forged one links right, the one after it no longer does.
    assert (broken.kind, broken.position) == ("hash_broken", 4), broken


# anchors ------------------------------------------------------------------------------------------------
def test_a_chain_recomputed_in_the_database_is_caught_by_an_anchor(written, tmp_path):
    store = LocalArchiveStore(tmp_path / "archive")
    key = anchor(written, store)
    assert {h["domain"]: h["last_seq"] for h in json.loads(store.get(key))["heads"]} == positions(written)
    assert verify(written, store).intact and verify(written, store).anchors_checked == 2
    # The attacker changes an entry and writes every link again: the database alone agrees.
    target = batch_of(written, ids_of(written, "alpha")[2])
    execute(written, "UPDATE retention_audit_batches SET action = 'kept' WHERE id = :id", id=target)
    relink(written, "alpha")
    assert verify(written).intact
    link = only_broken(verify(written, store))
    assert link.kind == "anchor_mismatch" and "the chain was rewritten" in link.message


def test_a_chain_cut_short_with_its_head_is_caught_by_an_anchor(written, tmp_path):
    store = LocalArchiveStore(tmp_path / "archive")
    anchor(written, store)
    end = positions(written)["alpha"]
    execute(written, "DELETE FROM retention_audit_batches WHERE domain = 'alpha' AND seq = :seq", seq=end)
    with written.connect() as connection:
        last = connection.execute(sa.select(schema.audit_batches).where(
            schema.audit_batches.c.domain == "alpha", schema.audit_batches.c.seq == end - 1)).one()
    execute(written, "UPDATE retention_audit_chain_heads SET last_seq = :seq, last_id = :id, last_hash = :link "
                     "WHERE domain = 'alpha'", seq=end - 1, id=last.id, link=last.link)
    execute(written, "DELETE FROM retention_audit_records WHERE batch_id NOT IN (SELECT id FROM "
                     "retention_audit_batches)")
    assert verify(written).intact
    link = only_broken(verify(written, store))
    assert (link.kind, link.position) == ("anchor_missing", end)


# writers at once, and the retention engine ---------------------------------------------------------------
def test_writers_of_one_domain_at_once_each_extend_the_chain(pg_database):
    """Each waits for the head's lock in turn: no two batches at one position, every batch chained."""
    errors = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                with pg_database.begin() as connection:
                    write_entries(connection, [AuditStamp("alpha", Action.QUEUE_OPENED, f"w{n}", "v").row(f"{n}-{i}")])
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    verification = verify(pg_database)
    assert verification.intact and verification.rows_checked == 40 and positions(pg_database) == {"alpha": 40}


def acted_on_statement(connection, stamp: AuditStamp, record_ids: list[str]):
    """audited_from's statement over a DELETE … RETURNING of these ids from a temporary table:
    (batch_id, records, digest)."""
    connection.exec_driver_sql("CREATE TEMP TABLE IF NOT EXISTS acted_on (id text, due timestamptz)")
    connection.execute(sa.text("INSERT INTO acted_on VALUES (:id, now())"), [{"id": r} for r in record_ids])
    acted_on = sa.table("acted_on", sa.column("id", sa.Text), sa.column("due", sa.DateTime(timezone=True)))
    gone = sa.delete(acted_on).where(acted_on.c.id.in_(record_ids)).returning(acted_on.c.id, acted_on.c.due).cte("gone")
    return connection.execute(audited_from(connection, gone.c.id, gone.c.due)).one()


def test_batches_linked_in_another_order_than_their_ids_were_drawn_verify(pg_database):
    """Two lanes of a run: the first draws its batch id, the second draws a later one and links and
    commits first; the first links after it. Positions then run against ids, and the chain holds."""
    stamp = AuditStamp("alpha", Action.DELETED, "lanes", "v1")
    first = pg_database.engine.connect()
    try:
        first.begin()
        early = acted_on_statement(first, stamp, ["a-1", "a-2"])
        with pg_database.begin() as second:
            late = acted_on_statement(second, stamp, ["b-1"])
            assert link_batch(second, stamp, late.batch_id, late.records, late.digest) == 1
        assert link_batch(first, stamp, early.batch_id, early.records, early.digest) == 2
        first.commit()
    finally:
        first.close()
    assert early.batch_id < late.batch_id
    with pg_database.connect() as connection:
        order = connection.execute(sa.select(schema.audit_batches.c.id).order_by(schema.audit_batches.c.seq)).scalars()
        assert list(order) == [late.batch_id, early.batch_id]
    verification = verify(pg_database)
    assert verification.intact, verification.broken
    assert verification.rows_checked == 3


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.integers(2, 5).flatmap(lambda k: st.permutations(range(k))))
def test_writers_that_link_in_any_order_leave_an_intact_chain(pg_database, order):
    """However the writers' link-and-commit interleaves with the order their batch ids were drawn in."""
    stamp = AuditStamp("alpha", Action.DELETED, "lanes", "v1")
    connections = [pg_database.engine.connect() for _ in order]
    try:
        acted = []
        for n, connection in enumerate(connections):
            connection.begin()
            acted.append(acted_on_statement(connection, stamp, [f"{len(order)}-{n}-{i}" for i in range(n + 1)]))
        for n in order:
            row = acted[n]
            assert link_batch(connections[n], stamp, row.batch_id, row.records, row.digest) == n + 1
            connections[n].commit()
    finally:
        for connection in connections:
            connection.close()
    verification = verify(pg_database)
    assert verification.intact, verification.broken


def test_a_position_missing_for_good_is_named_once_however_many_batches_follow(written, monkeypatch):
    """The verifier holds back batches that come before their turn, up to a bound: past it, the
    missing position is a gap, named once, and the batches after it are checked as ever."""
    monkeypatch.setattr("retention_pipelines.engine.audit.verify.REORDER_LIMIT", 2)
    target = batch_of(written, ids_of(written, "alpha")[1])
    execute(written, "DELETE FROM retention_audit_records WHERE batch_id = :id", id=target)
    execute(written, "DELETE FROM retention_audit_batches WHERE id = :id", id=target)
    verification = verify(written)
    link = only_broken(verification)
    assert link.kind == "position_missing"
    [alpha] = [chain for chain in verification.domains if chain.domain == "alpha"]
    # The gap, and the batch after it, which links to what is no longer there.
    assert alpha.problems == 2, alpha


def test_a_runs_entries_are_in_the_chain_when_it_ends(any_database, policies, quiz_policy, local_archive_url):
    """No seal job between the run and a tamperer: the entry changed right after the run is caught."""
    insert_quiz_rows(any_database, [timedelta(days=2, minutes=i) for i in range(7)])
    report = engine_for(quiz_policy, policies, any_database, local_archive_url).run("run-chain")
    assert report.acted.acted_on == 7
    verification = verify(any_database)
    assert verification.intact and verification.outside_chain == 0 and verification.rows_checked == 7
    target = ids_of(any_database, "quiz_responses")[3]
    execute(any_database, "UPDATE retention_audit_records SET record_id = 'someone-else' WHERE id = :id", id=target)
    link = only_broken(verify(any_database), "quiz_responses")
    assert (link.kind, link.audit_id) == ("content_changed", batch_of(any_database, target))


def test_a_dry_run_writes_no_batch(any_database, policies, quiz_policy, local_archive_url):
    insert_quiz_rows(any_database, [timedelta(days=2, minutes=i) for i in range(4)])
    engine_for(quiz_policy, policies, any_database, local_archive_url).run("dry", dry_run=True)
    with any_database.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(schema.audit_batches)).scalar_one() == 0
    assert positions(any_database) == {}


def test_verifying_streams_in_constant_memory(pg_database):
    """Batches and records through two server-side cursors."""
    stamp = AuditStamp("alpha", Action.DELETED, "r", "v")
    with pg_database.begin() as connection:
        for start in range(0, 50_000, 10_000):
            write_entries(connection, [stamp.row(str(i)) for i in range(start, start + 10_000)])
    verification = verify(pg_database)
    assert verification.intact and verification.rows_checked == 50_000
    assert verification.domains[0].positions == 5
