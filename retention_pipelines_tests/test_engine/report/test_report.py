"""The monthly compliance report: every number in it reconciles with the audit log and the
retention tables, counted again here by SQL of the test's own; the month's bounds are exact on
PostgreSQL and on the SQLite demo database; the files hold no address."""

from __future__ import annotations

import base64
import csv
import io
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
import sqlalchemy as sa
import yaml

from retention_pipelines.engine.report.figures import ReportRefused, build_report, month_bounds
from retention_pipelines.engine.report.render import html_name, render_report
from retention_pipelines.policies import default_policy_path
from retention_pipelines.policies.model import parse_duration
from retention_pipelines_tests.support.app_rows import insert_quiz_rows
from retention_pipelines_tests.support.engines import engine_for
from retention_pipelines_tests.support.report_rows import (
    ADDRESSES,
    END,
    MONTH,
    START,
    TICK,
    month_of_activity,
    place_hold,
    redate_run,
)

# Written out here, not imported: the test's own idea of what counts as what.
REMOVAL = ("deleted", "redacted", "redacted_blob_missing", "erased")
GROUPS = {"removed": REMOVAL, "held": ("skipped_legal_hold",), "failed": ("blob_delete_failed",),
          "keys_destroyed": ("key_destroyed",), "archives_expired": ("archive_expired",), "restored": ("restored",)}
EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
SECTIONS = ("overview", "schedule", "removals", "breaches", "queue", "erasure", "legal-holds", "audit-chain")
CHAIN = {"intact": True, "rows_checked": 1234, "first_broken": None}


# reading the outputs --------------------------------------------------------------------------------
def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


class Tables(HTMLParser):
    """The page's tables by their data-table name, as lists of rows of cell text, header first;
    and the at-a-glance figures."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.figures: dict[str, str] = {}
        self.ids: list[str] = []
        self.images: list[str] = []
        self._current, self._cell, self._term = None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "table":
            self._current = self.tables.setdefault(attrs["data-table"], [])
        elif tag == "tr" and self._current is not None:
            self._current.append([])
        elif tag in ("td", "th") and self._current is not None:
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag in ("dt", "dd"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._current = None
        elif tag in ("td", "th") and self._current is not None:
            self._current[-1].append(self._cell)
            self._cell = None
        elif tag == "dt":
            self._term, self._cell = self._cell, None
        elif tag == "dd":
            self.figures[self._term], self._cell = self._cell, None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def page(files: dict[str, bytes]) -> Tables:
    parsed = Tables()
    parsed.feed(files[html_name(MONTH)].decode())
    return parsed


# the test's own SQL (PostgreSQL) ------------------------------------------------------------------------
BOUNDS = {"start": START, "end": END}


def sql(database, query: str, **params) -> list[tuple]:
    with database.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(query), {**BOUNDS, **params})]


def count(database, query: str, **params) -> int:
    return int(sql(database, query, **params)[0][0])


def audit_count(database, actions, domain: str | None = None) -> int:
    return count(database, "SELECT count(*) FROM retention_audit_log "
                 "WHERE occurred_at >= :start AND occurred_at < :end "
                 "AND action = ANY(:actions) AND (CAST(:domain AS text) IS NULL OR domain = :domain)",
                 actions=list(actions), domain=domain)


AT_MONTH_END = "(closed_at IS NOT NULL AND closed_at < :end)"
BREACHES_IN_MONTH = ("((opened_at >= :start AND opened_at < :end) OR "
                     "(opened_at < :start AND (closed_at IS NULL OR closed_at > :start)))")
BREACH_SECONDS = (f"extract(epoch FROM LEAST(CASE WHEN {AT_MONTH_END} THEN closed_at ELSE :end END, :end) "
                  "- GREATEST(opened_at, :start))")
HOLDS_AT_MONTH_END = "placed_at < :end AND (released_at IS NULL OR released_at >= :end)"
QUEUE_DEADLINE = (f"CASE WHEN {AT_MONTH_END} THEN (CASE WHEN closed_at <= due_at THEN 'met' ELSE 'missed' END) "
                  "WHEN due_at < :end THEN 'missed' ELSE 'open' END")
ERASURE_DONE = "(completed_at IS NOT NULL AND completed_at < :end)"
ERASURE_DEADLINE = (f"CASE WHEN {ERASURE_DONE} THEN (CASE WHEN completed_at <= due_at THEN 'met' ELSE 'missed' END) "
                    "WHEN due_at < :end THEN 'missed' ELSE 'open' END")
ERASURE_IN_MONTH = ("((received_at >= :start AND received_at < :end) OR (due_at >= :start AND due_at < :end) "
                    "OR (completed_at >= :start AND completed_at < :end))")
# Its status at the month's end: a request the blacklist kept partially blocked, completed when
# checked again after the month, was partially blocked then.
ERASURE_STATUS = (f"CASE WHEN NOT {ERASURE_DONE} THEN 'received' WHEN status = 'completed' AND "
                  "(outcome::jsonb ->> 'completed_on_recheck_at')::timestamptz >= :end THEN 'partially_blocked' "
                  "ELSE status END")
ERASURE_KEPT = "COALESCE(jsonb_array_length(outcome::jsonb -> 'kept_by_policy'), 0) > 0"


@pytest.fixture
def october(pg_database, policies, local_archive_url, tmp_path):
    scenario = month_of_activity(pg_database, policies, local_archive_url, tmp_path)
    report = build_report(pg_database, policies, MONTH, chain_status=CHAIN, erasure_due=timedelta(days=30))
    return scenario, report, render_report(report)


def test_removals_per_day_reconcile_with_the_audit_log(pg_database, october):
    _, _, files = october
    rows = read_csv(files["removals_per_day.csv"])
    assert [r["day"] for r in rows[::len(rows) // 31]] == [f"2026-10-{d:02}" for d in range(1, 32)]
    expected = {(day, domain, action): n for day, domain, action, n in sql(pg_database, """
        SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), domain, action, count(*)
        FROM retention_audit_log WHERE occurred_at >= :start AND occurred_at < :end AND action = ANY(:actions)
        GROUP BY 1, 2, 3""", actions=list(REMOVAL))}
    reported = {(r["day"], r["domain"], action): int(r[action]) for r in rows for action in REMOVAL if int(r[action])}
    assert reported == expected
    removed = dict(((day, domain), n) for day, domain, n in sql(pg_database, """
        SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), domain, count(*) FROM retention_audit_log
        WHERE occurred_at >= :start AND occurred_at < :end AND action = ANY(:actions) GROUP BY 1, 2""",
                                                   actions=list(REMOVAL)))
    for row in rows:
        assert int(row["removed"]) == removed.get((row["day"], row["domain"]), 0), row
    # Each kind of removal is there, from real runs of every domain and the erasure run's entries.
    assert {action for _, _, action in expected} == set(REMOVAL)
    assert {domain for _, domain, _ in expected} == {"quiz_responses", "magic_link_tokens", "meal_plans",
                                                     "email_blacklist"}


def test_the_bounds_of_the_month_are_exact(pg_database, october):
    scenario, report, files = october
    by_run = Counter(run for (run,) in sql(pg_database, "SELECT run_id FROM retention_audit_log WHERE action = ANY(:a)",
                                           a=list(REMOVAL)))
    rows = {(r["day"], r["domain"]): int(r["removed"]) for r in read_csv(files["removals_per_day.csv"])}
    assert rows[("2026-10-01", "quiz_responses")] == by_run["quiz-oct-01"] > 0  # at 00:00 of the 1st: in
    assert rows[("2026-10-31", "magic_link_tokens")] == by_run["tokens-oct-31"] > 0  # a microsecond before the end
    quiz = [t for t in report.totals() if t.domain == "quiz_responses"][0]
    erased_in_october = 2
    assert quiz.actions["removed"] == by_run["quiz-oct-01"] + by_run["quiz-oct-15"] + erased_in_october
    tokens = [t for t in report.totals() if t.domain == "magic_link_tokens"][0]
    assert tokens.actions["removed"] == by_run["tokens-oct-31"]  # not tokens-nov-01, at 00:00 of November
    assert {b.id for b in report.breaches} == {scenario.breaches[name] for name in (
        "within the month", "from the month before", "open", "over the whole month", "opened as the month began")}
    assert {q.id for q in report.queue_items} == {id_ for name, id_ in scenario.queue.items()
                                                  if name not in ("before the month", "after the month")}
    assert {e.id for e in report.erasure_requests} == {id_ for name, id_ in scenario.erasure.items()
                                                       if name not in ("before the month", "after the month")}
    assert {h.id for h in report.legal_holds} == {scenario.holds[name] for name in (
        "quiz held", "released as the month ended", "placed at the month's last instant", "reason with an address")}


def test_the_totals_per_domain_reconcile_with_the_audit_log_and_tables(pg_database, october):
    _, _, files = october
    rows = read_csv(files["summary.csv"])
    assert rows[-1]["domain"] == "all domains"
    for row in rows:
        domain = None if row["domain"] == "all domains" else row["domain"]
        where = "(CAST(:domain AS text) IS NULL OR domain = :domain)"
        for group, actions in GROUPS.items():
            assert int(row[group]) == audit_count(pg_database, actions, domain), (row, group)
        assert int(row["queue_items"]) == count(pg_database, f"""SELECT count(*) FROM retention_manual_queue
            WHERE created_at >= :start AND created_at < :end AND {where}""", domain=domain), row
        # Each queue item of the month was opened, in the audit log, in the month.
        assert int(row["queue_items"]) == audit_count(pg_database, ["queue_opened"], domain), row
        assert int(row["queue_items_open"]) == count(pg_database, f"""SELECT count(*) FROM retention_manual_queue
            WHERE created_at >= :start AND created_at < :end AND NOT {AT_MONTH_END} AND {where}""",
                                                     domain=domain), row
        assert int(row["sla_breaches"]) == count(pg_database, f"""SELECT count(*) FROM retention_sla_breaches
            WHERE {BREACHES_IN_MONTH} AND {where}""", domain=domain), row
        assert int(row["seconds_in_breach"]) == round(sql(pg_database, f"""SELECT coalesce(sum({BREACH_SECONDS}), 0)
            FROM retention_sla_breaches WHERE {BREACHES_IN_MONTH} AND {where}""", domain=domain)[0][0]), row
        assert int(row["legal_holds_active"]) == count(pg_database, f"""SELECT count(*) FROM retention_legal_holds
            WHERE {HOLDS_AT_MONTH_END} AND {where}""", domain=domain), row
    seen = {domain for (domain,) in sql(pg_database, """SELECT DISTINCT domain FROM retention_audit_log
        WHERE occurred_at >= :start AND occurred_at < :end AND action = ANY(:a)""",
                                        a=[a for group in GROUPS.values() for a in group])}
    assert seen <= {row["domain"] for row in rows}
    assert int(rows[-1]["held"]) > 0 and int(rows[-1]["failed"]) == 0 and int(rows[-1]["keys_destroyed"]) == 1


def test_breaches_reconcile_with_their_table(pg_database, october):
    _, _, files = october
    expected = {str(id_): (domain, kind, "open" if closed is None else "closed",
                           "" if closed is None else str(round(duration)), str(round(in_month)))
                for id_, domain, kind, closed, duration, in_month in sql(pg_database, f"""
                SELECT id, domain, kind, CASE WHEN {AT_MONTH_END} THEN closed_at END, duration_seconds,
                       {BREACH_SECONDS} FROM retention_sla_breaches WHERE {BREACHES_IN_MONTH}""")}
    reported = {r["id"]: (r["domain"], r["kind"], r["status"], r["duration_seconds"], r["seconds_in_month"])
                for r in read_csv(files["breaches.csv"])}
    assert reported == expected
    assert "still open" in {r["duration"] for r in read_csv(files["breaches.csv"])}


def test_queue_items_and_resolutions_reconcile_with_their_table(pg_database, october):
    _, _, files = october
    expected = {str(id_): (domain, record, reason, status, "" if seconds is None else str(round(seconds)), deadline)
                for id_, domain, record, reason, status, seconds, deadline in sql(pg_database, f"""
                SELECT id, domain, record_id, reason, CASE WHEN {AT_MONTH_END} THEN status ELSE 'open' END,
                       CASE WHEN {AT_MONTH_END} THEN extract(epoch FROM closed_at - created_at) END, {QUEUE_DEADLINE}
                FROM retention_manual_queue WHERE created_at >= :start AND created_at < :end""")}
    reported = {r["id"]: (r["domain"], r["record_id"], r["reason"], r["status"], r["seconds_to_close"], r["deadline"])
                for r in read_csv(files["queue_items.csv"])}
    assert reported == expected
    assert {status for *_, status, _, _ in expected.values()} == {"resolved", "dismissed", "open"}
    by_reason = {reason: tuple(str(v) for v in values) for reason, *values in sql(pg_database, f"""
        SELECT reason, count(*), count(*) FILTER (WHERE {AT_MONTH_END} AND status = 'resolved'),
               count(*) FILTER (WHERE {AT_MONTH_END} AND status = 'dismissed'),
               count(*) FILTER (WHERE NOT {AT_MONTH_END}),
               count(*) FILTER (WHERE {QUEUE_DEADLINE} = 'met'), count(*) FILTER (WHERE {QUEUE_DEADLINE} = 'missed')
        FROM retention_manual_queue WHERE created_at >= :start AND created_at < :end GROUP BY reason""")}
    assert {r["reason"]: (r["items"], r["resolved"], r["dismissed"], r["open"], r["deadline_met"],
                          r["deadline_missed"]) for r in read_csv(files["queue_by_reason.csv"])} == by_reason


def test_erasure_requests_reconcile_with_their_table(pg_database, october):
    scenario, _, files = october
    expected = {str(id_): (status, deadline, "yes" if extended else "no", kept)
                for id_, status, deadline, extended, kept in sql(pg_database, f"""
                SELECT id, {ERASURE_STATUS}, {ERASURE_DEADLINE}, extension_reason IS NOT NULL,
                       {ERASURE_STATUS} = 'partially_blocked' AND {ERASURE_KEPT}
                FROM gdpr_erasure_requests WHERE {ERASURE_IN_MONTH}""")}
    reported = {r["id"]: (r["status"], r["deadline"], r["extended"], bool(r["kept_until_deadline"]))
                for r in read_csv(files["erasure_requests.csv"])}
    assert reported == expected
    [summary] = read_csv(files["erasure_summary.csv"])
    counted = Counter(deadline for _, deadline, _, _ in expected.values())
    assert summary == {"requests": str(len(expected)), "deadline_met": str(counted["met"]),
                       "deadline_missed": str(counted["missed"]), "open": str(counted["open"]),
                       "partially_blocked": str(count(pg_database, f"""SELECT count(*) FROM gdpr_erasure_requests
                           WHERE {ERASURE_IN_MONTH} AND {ERASURE_STATUS} = 'partially_blocked'""")),
                       "kept_until_deadline": str(count(pg_database, f"""SELECT count(*) FROM gdpr_erasure_requests
                           WHERE {ERASURE_IN_MONTH} AND {ERASURE_STATUS} = 'partially_blocked' AND {ERASURE_KEPT}"""))}
    assert all(counted[k] for k in ("met", "missed", "open")) and summary["partially_blocked"] == "3"
    assert summary["kept_until_deadline"] == "2"
    # Completed after the month ended: still open in October's report.
    assert reported[str(scenario.erasure["completed next month"])][:2] == ("received", "open")
    # Kept by the blacklist: until when, shown; completed on being checked again after the month, still
    # partially blocked in October's report.
    rows = {r["id"]: r for r in read_csv(files["erasure_requests.csv"])}
    assert rows[str(scenario.erasure["kept until deadline"])]["kept_until_deadline"] == \
        "email_blacklist until 2026-12-29 12:00"
    assert rows[str(scenario.erasure["kept, completed after the month"])]["status"] == "partially_blocked"


def test_legal_holds_at_month_end_reconcile_with_their_table(pg_database, october):
    _, _, files = october
    expected = {str(id_): (domain, record) for id_, domain, record in sql(
        pg_database, f"SELECT id, domain, record_id FROM retention_legal_holds WHERE {HOLDS_AT_MONTH_END}")}
    rows = read_csv(files["legal_holds.csv"])
    assert {r["id"]: (r["domain"], r["record_id"]) for r in rows} == expected
    assert any("<redacted e-mail>" in r["reason"] for r in rows)


def test_the_schedule_is_the_policy_files_own(october):
    _, _, files = october
    written = yaml.safe_load(default_policy_path().read_text())["domains"]
    rows = {r["domain"]: r for r in read_csv(files["schedule.csv"])}
    assert set(rows) == set(written)
    for domain, entry in written.items():
        row = rows[domain]
        assert (row["table"], row["counted_from"]) == (entry["table"], entry["clock_column"])
        # The same periods, spelt as format_duration spells them (24h is '1d').
        assert parse_duration(row["retain_for"]) == parse_duration(entry["retain_for"])
        assert parse_duration(row["sla_max_lag"]) == parse_duration(entry["sla"]["max_lag"])
        assert row["archived"] == ("yes" if entry["archive"]["enabled"] else "no")
        assert row["action"].startswith("delete" if entry["action"] == "delete" else "redact")
        assert row["erasure_time_limit"] == ("30d" if entry.get("subject_column") else "")
        kept = entry.get("on_erasure") == "keep_until_deadline"
        assert row["on_erasure"] == ("" if not entry.get("subject_column") else "erase" if not kept else
                                     f"keep until deadline: {' '.join(entry['on_erasure_reason'].split())}")


def test_the_page_shows_the_csvs_cell_for_cell_with_charts_and_every_section(october):
    _, report, files = october
    parsed = page(files)
    assert set(SECTIONS) <= set(parsed.ids)
    for name, data in files.items():
        if name.endswith(".csv"):
            rows = list(csv.reader(io.StringIO(data.decode())))
            assert parsed.tables[name.removesuffix(".csv")] == rows, name
    assert len(parsed.images) == 4
    for source in parsed.images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    total = read_csv(files["summary.csv"])[-1]
    assert parsed.figures["records removed or redacted"] == total["removed"]
    assert parsed.figures["legal holds in force"] == total["legal_holds_active"]
    [erasure] = read_csv(files["erasure_summary.csv"])
    assert parsed.figures["erasure deadlines met / missed"] == (
        f"{erasure['deadline_met']} / {erasure['deadline_missed']}")
    assert parsed.figures["audit chain"] == "intact"
    assert read_csv(files["audit_chain.csv"]) == [{"result": "intact", "rows_checked": "1234",
                                                    "rows_outside_chain": "0", "first_broken": ""}]
    assert "<script" not in files[html_name(MONTH)].decode() and "http:" not in files[html_name(MONTH)].decode()
    assert "https:" not in files[html_name(MONTH)].decode()  # no network: nothing fetched


def test_no_address_appears_in_any_file(pg_database, october):
    _, _, files = october
    with pg_database.engine.connect() as connection:  # the addresses are in the database…
        kept = connection.exec_driver_sql("SELECT count(*) FROM gdpr_erasure_requests WHERE email IS NOT NULL").scalar()
    assert kept > 0
    for name, data in files.items():  # …and in no file of the report
        text = data.decode()
        assert not EMAIL.search(text), (name, EMAIL.search(text))
        assert not any(address.lower() in text.lower() for address in ADDRESSES), name


def test_the_chain_is_not_verified_until_it_is_wired_and_a_break_shows(pg_database, policies):
    report = build_report(pg_database, policies, MONTH)
    files = render_report(report)
    assert read_csv(files["audit_chain.csv"]) == [{"result": "not verified", "rows_checked": "",
                                                    "rows_outside_chain": "", "first_broken": ""}]
    assert "was not verified" in files[html_name(MONTH)].decode()
    broken = render_report(build_report(pg_database, policies, MONTH, chain_status={
        "intact": False, "rows_checked": 77, "first_broken": "entry 41"}))
    assert read_csv(broken["audit_chain.csv"]) == [{"result": "BROKEN", "rows_checked": "77",
                                                     "rows_outside_chain": "0", "first_broken": "entry 41"}]
    assert "audit chain is broken" in broken[html_name(MONTH)].decode()


def test_an_empty_month_has_every_section_and_no_chart(pg_database, policies):
    files = render_report(build_report(pg_database, policies, MONTH))
    parsed = page(files)
    assert set(SECTIONS) <= set(parsed.ids) and parsed.images == []
    assert {int(r["removed"]) for r in read_csv(files["removals_per_day.csv"])} == {0}
    assert read_csv(files["breaches.csv"]) == [] and "None in October 2026." in files[html_name(MONTH)].decode()


def _redate_text(database, run_id: str, spelling: str) -> None:
    """As CURRENT_TIMESTAMP spells it in SQLite (no microseconds); a timestamptz literal in PostgreSQL."""
    value = spelling if database.is_sqlite else spelling + "+00"
    with database.engine.begin() as connection:
        connection.execute(sa.text("UPDATE retention_audit_batches SET occurred_at = :v WHERE run_id = :r"),
                           {"v": value, "r": run_id})


def test_bounds_are_exact_in_both_databases_whatever_the_spelling(any_database, policies, quiz_policy,
                                                                  local_archive_url):
    """SQLite keeps times as text, spelt with microseconds by SQLAlchemy and without by the audit log's
    CURRENT_TIMESTAMP default: an entry at 00:00:00 of the 1st is in the month either way."""
    engine = engine_for(quiz_policy, policies, any_database, local_archive_url)
    runs = {"first-instant-text": 3, "first-instant-bound": 2, "last-instant": 4, "next-month-text": 5,
            "next-month-bound": 6, "month-before": 7}
    for run_id, rows in runs.items():
        insert_quiz_rows(any_database, [timedelta(days=2)] * rows, email=ADDRESSES[0])
        assert engine.run(run_id).acted.acted_on == rows
    _redate_text(any_database, "first-instant-text", "2026-10-01 00:00:00")
    redate_run(any_database, "first-instant-bound", START)
    redate_run(any_database, "last-instant", END - TICK)
    _redate_text(any_database, "next-month-text", "2026-11-01 00:00:00")
    redate_run(any_database, "next-month-bound", END)
    redate_run(any_database, "month-before", START - TICK)
    held = insert_quiz_rows(any_database, [timedelta(days=2)])[0]
    place_hold(any_database, "quiz_responses", held, "case 1", START - timedelta(days=1), END)

    report = build_report(any_database, policies, MONTH)
    quiz = [t for t in report.totals() if t.domain == "quiz_responses"][0]
    assert quiz.actions["removed"] == runs["first-instant-text"] + runs["first-instant-bound"] + runs["last-instant"]
    days = {day.day: report.count("quiz_responses", REMOVAL, day) for day in report.days}
    assert days[1] == runs["first-instant-text"] + runs["first-instant-bound"] and days[31] == runs["last-instant"]
    assert [h.record_id for h in report.legal_holds] == [held]  # released at the end: in force until then


@pytest.mark.parametrize("month", ["2026-13", "nov", "2026-1", "2026-00", "26-11", "", "2026-11-01"])
def test_a_month_that_is_not_one_is_refused_naming_it(month):
    with pytest.raises(ReportRefused, match="is not a month: write it as YYYY-MM"):
        month_bounds(month)


def test_bounds_of_december_and_a_month_not_begun(pg_database, policies):
    assert month_bounds("2026-12") == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    with pytest.raises(ReportRefused, match="has not begun"):
        build_report(pg_database, policies, f"{pg_database.now().year + 1}-01")


def test_the_month_in_progress_is_reported_as_of_now(pg_database, policies):
    now = pg_database.now()
    report = build_report(pg_database, policies, f"{now:%Y-%m}")
    assert report.in_progress and report.start <= report.as_of <= pg_database.now()
    assert report.days[-1] == now.date()
    assert "The month is not over" in render_report(report)[html_name(f"{now:%Y-%m}")].decode()
