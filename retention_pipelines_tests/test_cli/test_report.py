"""`retention report --month YYYY-MM [--out DIR]`: the report's files written locally, the same
figures as the engine's report, no address anywhere; a month that is not one refused naming the
argument, with nothing written; the SQLite demo database reported like PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention_pipelines.engine.audit.verify import verify
from retention_pipelines.engine.report.figures import build_report
from retention_pipelines.engine.report.render import html_name, render_report
from retention_pipelines.policies import load_policies
from retention_pipelines.stores import archive_store_from_url
from retention_pipelines_tests.support.cli import EMAIL, dagster_home
from retention_pipelines_tests.support.report_rows import ADDRESSES, MONTH, month_of_activity

REMOVAL = ("deleted", "redacted", "redacted_blob_missing", "erased")
FILES = {html_name(MONTH), "summary.csv", "schedule.csv", "processing.csv", "removals_per_day.csv", "breaches.csv",
         "queue_by_reason.csv", "queue_items.csv", "erasure_summary.csv", "erasure_requests.csv", "legal_holds.csv",
         "audit_chain.csv"}


def summary_total(folder: Path) -> dict[str, str]:
    return list(csv.DictReader(io.StringIO((folder / "summary.csv").read_text())))[-1]


def removed_in(database, start: str, end: str) -> int:
    with database.engine.connect() as connection:
        return connection.execute(sa.text(
            "SELECT count(*) FROM retention_audit_log WHERE occurred_at >= :s AND occurred_at < :e "
            f"AND action IN ({', '.join(repr(a) for a in REMOVAL)})"), {"s": start, "e": end}).scalar_one()


def assert_no_address(folder: Path) -> None:
    for path in folder.iterdir():
        text = path.read_text()
        assert not EMAIL.search(text), (path.name, EMAIL.search(text))
        assert not any(address in text.lower() for address in ADDRESSES), path.name


def test_report_writes_the_engines_report_to_the_folder_given(cli, cli_env, tmp_path):
    month_of_activity(cli_env, load_policies(), (tmp_path / "archive").as_uri(), tmp_path)
    out = tmp_path / "reports" / "october"

    outcome = cli("report", "--month", MONTH, "--out", str(out))
    assert outcome.code == 0, outcome.text
    assert {path.name for path in out.iterdir()} == FILES
    assert f"written to {out.resolve()}" in outcome.out and html_name(MONTH) in outcome.out
    assert not EMAIL.search(outcome.text)
    assert_no_address(out)
    # The same figures as the engine's own report of the month, cell for cell (the CSVs hold no clock time).
    chain = verify(cli_env, archive_store_from_url((tmp_path / "archive").as_uri())).as_status()
    assert chain["intact"] and chain["outside_chain"] == 0  # every entry chained as it was written
    expected = render_report(build_report(cli_env, load_policies(), MONTH, chain_status=chain,
                                          erasure_due=timedelta(days=30)))
    for name in FILES - {html_name(MONTH)}:
        assert (out / name).read_bytes() == expected[name], name
    assert int(summary_total(out)["removed"]) == removed_in(cli_env, "2026-10-01 00:00+00", "2026-11-01 00:00+00") > 0
    [verified] = csv.DictReader(io.StringIO((out / "audit_chain.csv").read_text()))
    assert verified["result"] == "intact" and int(verified["rows_outside_chain"]) == chain["outside_chain"]

    skipped = cli("report", "--month", MONTH, "--out", str(tmp_path / "unverified"), "--no-chain")
    assert skipped.code == 0 and "not verified" in (tmp_path / "unverified" / html_name(MONTH)).read_text()


def test_report_writes_to_the_months_folder_by_default(cli, cli_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RETENTION_ERASURE_DUE_DAYS", "21")
    outcome = cli("report", "--month", MONTH)
    assert outcome.code == 0, outcome.text
    folder = tmp_path / f"compliance-report-{MONTH}"
    assert {path.name for path in folder.iterdir()} == FILES
    schedule = list(csv.DictReader(io.StringIO((folder / "schedule.csv").read_text())))
    assert {row["erasure_time_limit"] for row in schedule} == {"21d"}


@pytest.mark.parametrize("month", ["2026-13", "nov", "2026-1", "2026/10"])
def test_a_wrong_month_is_refused_naming_the_argument_and_nothing_is_written(cli, cli_env, tmp_path, monkeypatch,
                                                                             month):
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())
    outcome = cli("report", "--month", month, "--out", str(tmp_path / "out"))
    assert outcome.code == 2 and outcome.out == ""
    assert f"--month {month!r} is not a month" in outcome.err and "YYYY-MM" in outcome.err
    assert set(tmp_path.iterdir()) == before
    outcome = cli("report", "--month", month)  # nor the default folder
    assert outcome.code == 2 and set(tmp_path.iterdir()) == before


def test_a_month_not_begun_and_an_out_that_is_a_file_are_refused(cli, cli_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    future = f"{cli_env.now().year + 1}-03"
    outcome = cli("report", "--month", future)
    assert outcome.code == 2 and "has not begun" in outcome.err and f"--month {future}" in outcome.err
    assert not (tmp_path / f"compliance-report-{future}").exists()
    (tmp_path / "taken").write_text("not a folder")
    outcome = cli("report", "--month", MONTH, "--out", str(tmp_path / "taken"))
    assert outcome.code == 2 and "is a file" in outcome.err
    assert cli("report").code == 2  # --month is required


def test_the_demo_database_is_reported_for_the_month_in_progress(cli, tmp_path, monkeypatch):
    """The SQLite demo: its runs' entries (stamped by CURRENT_TIMESTAMP) are counted like PostgreSQL's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path / "dagster")))
    assert cli("demo", "--rows", "90").code == 0
    database_file = tmp_path / ".retention" / "demo.db"
    engine = sa.create_engine(f"sqlite:///{database_file}")
    with engine.connect() as connection:
        now = connection.exec_driver_sql("SELECT CURRENT_TIMESTAMP").scalar_one()
    month = now[:7]
    following = f"{int(month[:4]) + int(month[5:]) // 12}-{int(month[5:]) % 12 + 1:02}"

    outcome = cli("report", "--month", month)
    assert outcome.code == 0, outcome.text
    folder = tmp_path / f"compliance-report-{month}"
    assert "month in progress" in outcome.out
    with engine.connect() as connection:
        expected = connection.exec_driver_sql(
            "SELECT count(*) FROM retention_audit_log WHERE occurred_at >= ? AND occurred_at < ? "
            f"AND action IN ({', '.join(repr(a) for a in REMOVAL)})", (f"{month}-01", f"{following}-01")).scalar_one()
    engine.dispose()
    assert int(summary_total(folder)["removed"]) == expected > 0
    assert_no_address(folder)
