"""What a run works on is the selection it is handed, and nothing else: the rows past their deadline,
an erasure's subject's rows, or the records a retry names; the engine keeps no trace of one
selection into the next run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention_pipelines.engine import DUE, RetentionEngine, Selection, SubjectRows
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.app_rows import insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.databases import new_database
from retention_pipelines_tests.support.engines import archiving, engine_for

ANN, BOB = "ann@example.invalid", "bob@example.invalid"
DUE_AGE, YOUNG_AGE = timedelta(hours=30), timedelta(hours=2)  # quiz_responses keeps its rows 24 hours
MALFORMED = "not-a-record"


@st.composite
def cases(draw) -> dict:
    rows = draw(st.lists(st.tuples(st.booleans(), st.sampled_from([ANN, BOB])), min_size=1, max_size=6))
    return {
        "rows": rows,  # (due, subject) of each row
        "kind": draw(st.sampled_from(["due", "erase", "erase_by_id"])),
        "retry": draw(st.booleans()),
        "named": draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows))),
        "named_extra": draw(st.sampled_from([[], [MALFORMED], ["random"]])),
        "policy": draw(st.sampled_from(["delete", "archive", "keep_until_deadline"])),
        "dry_run": draw(st.booleans()),
    }


def selection_of(case: dict, ids: list[str], request: SubjectRows) -> tuple[Selection, set[str]]:
    """The case's selection and the ids of the rows it chooses, by the model of what each means."""
    by_id = dict(zip(ids, case["rows"]))
    extra = [str(uuid.uuid4()) if name == "random" else name for name in case["named_extra"]]
    named = [rid for rid, chosen in zip(ids, case["named"]) if chosen] + extra
    if case["kind"] == "due":
        selection, chosen = DUE, {rid for rid, (due, _) in by_id.items() if due}
    else:
        selection = Selection.erasing(request)
        chosen = set(ids) if case["kind"] == "erase_by_id" else {rid for rid, (_, who) in by_id.items() if who == ANN}
        if case["policy"] == "keep_until_deadline":
            chosen = {rid for rid in chosen if by_id[rid][0]}
    if case["retry"] or case["kind"] == "erase_by_id":  # an erasure by id always names its records
        selection = selection.retry(named)
        chosen &= set(named)
    return selection, chosen


@given(case=cases())
def test_a_run_acts_on_exactly_the_rows_its_selection_chooses_and_keeps_no_trace_of_it(
        postgres_server, policies, tmp_path_factory, case):
    database = AppDatabase(new_database(postgres_server))
    try:
        policy = policies.domains["quiz_responses"]
        if case["policy"] == "archive":
            policy = archiving(policy)
        elif case["policy"] == "keep_until_deadline":
            policy = policy.model_copy(update={"on_erasure": "keep_until_deadline"})
        engine: RetentionEngine = engine_for(policy, policies, database,
                                             tmp_path_factory.mktemp("selection").as_uri())
        ids = []
        for due, who in case["rows"]:
            ids += insert_quiz_rows(database, [DUE_AGE if due else YOUNG_AGE], email=who)
        request = SubjectRows(None if case["kind"] == "erase_by_id" else (ANN,), 7,
                              database.now() + timedelta(days=30))
        selection, chosen = selection_of(case, ids, request)

        report = engine.run("selected", dry_run=case["dry_run"], selection=selection)

        assert report.acted.acted_on == len(chosen)
        assert report.acted.action == ("erased" if selection.subject else "deleted")
        with database.engine.connect() as connection:
            audited = connection.exec_driver_sql(
                "SELECT record_id, action, detail, deadline FROM retention_audit_log WHERE run_id = 'selected'").all()
            queued = connection.exec_driver_sql("SELECT count(*) FROM retention_manual_queue").scalar_one()
        assert queued == 0
        if case["dry_run"]:  # nothing changes anywhere
            assert remaining_ids(database) == set(ids) and audited == []
        else:
            assert remaining_ids(database) == set(ids) - chosen
            assert sorted(rid for rid, *_ in audited) == sorted(chosen)
            for _, action, detail, deadline in audited:
                assert action == report.acted.action
                if selection.subject:  # an erasure's entries name its request and its due date
                    assert detail == "erasure request 7" and deadline == request.due_at
                else:
                    assert detail is None and deadline <= report.found.cutoff
            assert engine.count_remaining(database.now(), None, selection) == 0

        # The next run of the same engine works on every due row left, whatever came before it.
        left = remaining_ids(database)
        after = engine.run("after")
        due_left = {rid for rid, (due, _) in zip(ids, case["rows"]) if due and rid in left}
        assert after.acted.acted_on == len(due_left)
        assert remaining_ids(database) == left - due_left
    finally:
        database.dispose()


def test_an_erasure_selection_in_a_domain_without_subjects_is_refused(pg_database, policies, quiz_policy,
                                                                      local_archive_url):
    nobody = quiz_policy.model_copy(update={"subject_column": None})
    engine = engine_for(nobody, policies, pg_database, local_archive_url)
    erasing = Selection.erasing(SubjectRows((ANN,), 1, pg_database.now()))
    with pytest.raises(ValueError, match="has no subject column"):
        engine.find(selection=erasing)


def test_an_erasure_without_addresses_must_name_its_records(pg_database, quiz_policy, policies, local_archive_url):
    insert_quiz_rows(pg_database, [DUE_AGE], email=ANN)
    engine = engine_for(quiz_policy, policies, pg_database, local_archive_url)
    by_id = Selection.erasing(SubjectRows(None, 1, pg_database.now()))
    with pytest.raises(ValueError, match="must name its records"):
        engine.find(selection=by_id)
    assert engine.find(selection=by_id.retry([])).rows == 0  # named, but none: nothing chosen


def test_a_selection_says_what_it_is_and_never_whom():
    request = SubjectRows((ANN, ANN.upper()), 12, datetime(2026, 1, 1, tzinfo=UTC))
    erasing = Selection.erasing(request)
    retry = erasing.retry(["a", "b"])
    assert (DUE.subject, DUE.record_ids, DUE.retrying, DUE.audit_detail, DUE.erasure_request_id) == (
        None, None, False, None, None)
    assert (erasing.retrying, erasing.audit_detail, erasing.erasure_request_id) == (False, "erasure request 12", 12)
    assert (retry.subject, retry.record_ids, retry.retrying) == (request, ("a", "b"), True)
    assert DUE.retry(None) == Selection(retrying=True)
    assert ANN not in repr(retry) and ANN.upper() not in repr(retry)
    assert request.placeholder == "erased-by-request-12@erased.invalid"
