"""The compliance report as files: one self-contained HTML page (CSS inline, charts as embedded
PNGs) and one CSV per table. Both are drawn from the same tables, cell for cell, so that what an
auditor reads on the page is what a spreadsheet adds up.

Every text cell passes through the e-mail filter on its way out: the figures hold ids, but a
hold's reason or a record id typed by a person is text all the same.
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

import jinja2

from retention_pipelines.engine.report.figures import ComplianceReport
from retention_pipelines.policies.processing import COLUMNS, ProcessingEntry
from retention_pipelines.redaction import without_personal_data
from retention_pipelines.stores import ArchiveStore

# Under this prefix of the archive store: reports/2026-11/compliance-report-2026-11.html, …
REPORTS_PREFIX = "reports"
# A spreadsheet reads a cell beginning with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PROCESSING_TITLE = ("Record of processing (GDPR Art. 30(1)(b)-(d), (f)): purpose, lawful basis, data and "
                    "recipients beside the time limits")


def html_name(month: str) -> str:
    return f"compliance-report-{month}.html"


def report_key(month: str, name: str) -> str:
    return f"{REPORTS_PREFIX}/{month}/{name}"


@dataclass(frozen=True)
class Table:
    name: str  # the CSV's file name without .csv
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def cell(value: object) -> str:
    """The one spelling of a value on the page and in the CSV."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int | float):
        return str(value)
    return without_personal_data(str(value))


def _table(name: str, title: str, columns: Iterable[str], rows: Iterable[Iterable[object]]) -> Table:
    return Table(name, title, tuple(columns), tuple(tuple(cell(value) for value in row) for row in rows))


def processing_table(entries: list[ProcessingEntry]) -> Table:
    """The record of processing: the report's table, and `retention policies schedule`'s."""
    return _table("processing", PROCESSING_TITLE, COLUMNS,
                  [entry.cells().values() for entry in entries])


def report_tables(report: ComplianceReport) -> dict[str, Table]:
    """Every table of the report, by CSV name, in the order the page shows them."""
    groups = list(report.action_groups)
    removal = report.action_groups["removed"]
    totals = report.totals()
    chain = report.chain
    erasure = report.erasure_summary()
    tables = [
        _table("summary", "Totals per domain", [
            "domain", *groups, "queue_items", "queue_items_open", "sla_breaches", "seconds_in_breach",
            "legal_holds_active"], [
            [t.domain, *(t.actions[g] for g in groups), t.queue_items, t.queue_items_open, t.sla_breaches,
             t.seconds_in_breach, t.legal_holds_active] for t in totals]),
        _table("schedule", "Retention schedule (GDPR Art. 30(1)(f): the envisaged time limits for erasure)", [
            "domain", "enabled", "table", "what", "retain_for", "counted_from", "action", "archived",
            "archive_keep_for", "subject_column", "sla_max_lag", "erasure_time_limit", "on_erasure"], [
            [s.domain, s.enabled, s.table, s.what, s.retain_for, s.counted_from, s.action, s.archived,
             s.archive_keep_for, s.subject_column, s.sla_max_lag, s.erasure_time_limit, s.on_erasure]
            for s in report.schedule]),
        processing_table(report.processing),
        _table("removals_per_day", "Records removed or redacted, per day and domain", [
            "day", "domain", *removal, "removed"], [
            [day, domain, *(report.count(domain, (action,), day) for action in removal),
             report.count(domain, removal, day)] for day in report.days for domain in report.domains]),
        _table("breaches", "SLA breaches opened in the month or open when it began", [
            "id", "domain", "kind", "opened_at", "closed_at", "status", "escalation_level", "duration_seconds",
            "duration", "seconds_in_month"], [
            [b.id, b.domain, b.kind, b.opened_at, b.closed_at, "closed" if b.closed_at else "open",
             b.escalation_level, b.duration_seconds, _human(b.duration_seconds) if b.closed_at else "still open",
             b.seconds_in_month] for b in report.breaches]),
        _table("queue_by_reason", "Manual-resolution queue: items created in the month, by reason", [
            "reason", "items", "resolved", "dismissed", "open", "deadline_met", "deadline_missed",
            "median_seconds_to_close"], [
            [r.reason, r.items, r.resolved, r.dismissed, r.open, r.met, r.missed, r.median_seconds_to_close]
            for r in report.queue_by_reason()]),
        _table("queue_items", "Manual-resolution queue: the items", [
            "id", "domain", "record_id", "reason", "created_at", "due_at", "status", "closed_at",
            "seconds_to_close", "time_to_close", "deadline"], [
            [q.id, q.domain, q.record_id, q.reason, q.created_at, q.due_at, q.status, q.closed_at,
             q.seconds_to_close, _human(q.seconds_to_close), q.deadline] for q in report.queue_items]),
        _table("erasure_summary", "Requests for erasure: deadlines", [
            "requests", "deadline_met", "deadline_missed", "open", "partially_blocked", "kept_until_deadline"], [
            [erasure["requests"], erasure["met"], erasure["missed"], erasure["open"], erasure["partially_blocked"],
             erasure["kept_until_deadline"]]]),
        _table("erasure_requests", "Requests for erasure received, due or completed in the month", [
            "id", "received_at", "due_at", "extended", "status", "completed_at", "deadline", "kept_until_deadline"], [
            [e.id, e.received_at, e.due_at, e.extended, e.status, e.completed_at, e.deadline, e.kept_until_deadline]
            for e in report.erasure_requests]),
        _table("legal_holds", "Legal holds in force at the month's end", [
            "id", "domain", "record_id", "reason", "placed_at"], [
            [h.id, h.domain, h.record_id, h.reason, h.placed_at] for h in report.legal_holds]),
        _table("audit_chain", "Audit-chain verification", [
            "result", "rows_checked", "rows_outside_chain", "first_broken"], [
            [chain.label, chain.rows_checked, chain.outside_chain, chain.first_broken]]),
    ]
    return {table.name: table for table in tables}


def _human(seconds: int | None) -> str:
    """3 d 4 h, 2 h 5 min, 45 s: for people; the seconds beside it are for sums."""
    if seconds is None:
        return ""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d"] * bool(days) + [f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(minutes)
    return " ".join(parts[:2]) or f"{secs} s"


def to_csv(table: Table) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow(["'" + value if value.startswith(FORMULA_STARTS) and not _number(value) else value
                         for value in row])
    return buffer.getvalue().encode()


def _number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("retention_pipelines", "engine/report/templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def to_html(report: ComplianceReport, tables: dict[str, Table], pngs: dict[str, bytes]) -> bytes:
    images = {name: base64.b64encode(data).decode("ascii") for name, data in pngs.items()}
    return _templates.get_template("compliance_report.html.j2").render(
        report=report, tables=tables, images=images, totals=dict(zip(tables["summary"].columns,
                                                                      tables["summary"].rows[-1])),
        erasure=dict(zip(tables["erasure_summary"].columns, tables["erasure_summary"].rows[0])),
    ).encode()


def render_report(report: ComplianceReport) -> dict[str, bytes]:
    """File name → bytes: the CSVs, then the HTML page (last, so that a store written in this
    order never holds a page whose tables are missing)."""
    from retention_pipelines.engine.report.charts import charts  # matplotlib: only when a report is drawn

    tables = report_tables(report)
    files = {f"{name}.csv": to_csv(table) for name, table in tables.items()}
    files[html_name(report.month)] = to_html(report, tables, charts(report))
    return files


def store_report(files: dict[str, bytes], store: ArchiveStore, month: str) -> dict[str, str]:
    """Each file to the archive store under reports/YYYY-MM/; file name → URI."""
    uris = {}
    for name, data in files.items():
        key = report_key(month, name)
        store.put(key, data)
        uris[name] = store.uri(key)
    return uris
