"""The compliance report's retention schedule: how long each archive copy lives (archive keep_for)
beside retain_for, and the record of processing (purpose, lawful basis with the Art. 9 condition,
data categories, recipients) beside both, in the CSVs and on the page; and a screenshot of that
section in a real headless Chromium (test-artifacts/report/schedule.png)."""

from __future__ import annotations

import csv
import io
from html.parser import HTMLParser

import yaml

from retention_pipelines.engine.report.figures import build_report
from retention_pipelines.engine.report.render import html_name, render_report
from retention_pipelines.policies import default_policy_path, load_policies
from retention_pipelines.policies.model import parse_duration
from retention_pipelines.policies.processing import COLUMNS
from retention_pipelines_tests.support.browser import chromium
from retention_pipelines_tests.support.report_rows import MONTH
from retention_pipelines_tests.support.repository import REPOSITORY

SCREENSHOTS = REPOSITORY / "test-artifacts" / "report"
# The section as it opens, and the record of processing's table scrolled to its last columns (the
# page is 1100 pixels wide; the tables scroll sideways inside it).
SCREENSHOT, SCROLLED = SCREENSHOTS / "schedule.png", SCREENSHOTS / "schedule-processing-scrolled.png"


def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


class SectionTables(HTMLParser):
    """The tables of one section of the page (by its id), by their data-table name: rows of cell text."""

    def __init__(self, section: str):
        super().__init__()
        self.section, self.tables = section, {}
        self._depth, self._rows, self._cell = 0, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._depth = self._depth + 1 if self._depth or attrs.get("id") == self.section else 0
        elif self._depth and tag == "table":
            self._rows = self.tables.setdefault(attrs["data-table"], [])
        elif self._rows is not None and tag == "tr":
            self._rows.append([])
        elif self._rows is not None and tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "section" and self._depth:
            self._depth -= 1
        elif tag == "table":
            self._rows = None
        elif tag in ("td", "th") and self._cell is not None:
            self._rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def schedule_section(files: dict[str, bytes]) -> dict[str, list[list[str]]]:
    parser = SectionTables("schedule")
    parser.feed(files[html_name(MONTH)].decode())
    return parser.tables


def test_the_schedule_shows_each_archive_copys_keep_for_beside_retain_for(pg_database):
    files = render_report(build_report(pg_database, load_policies(), MONTH))
    written = yaml.safe_load(default_policy_path().read_text())["domains"]
    rows = {row["domain"]: row for row in read_csv(files["schedule.csv"])}
    assert set(rows) == set(written)
    for domain, entry in written.items():
        columns = list(rows[domain])
        assert columns.index("archive_keep_for") == columns.index("archived") + 1
        if entry["archive"]["enabled"]:
            assert parse_duration(rows[domain]["archive_keep_for"]) == parse_duration(entry["archive"]["keep_for"])
        else:
            assert rows[domain]["archive_keep_for"] == ""
    assert rows["meal_plans"]["archive_keep_for"] == "3650d"  # ten years of PDFs, visible to an auditor


def test_the_record_of_processing_stands_beside_both_time_limits_on_the_page_and_in_its_csv(pg_database):
    policies = load_policies()
    files = render_report(build_report(pg_database, policies, MONTH))
    rows = read_csv(files["processing.csv"])
    assert [row["domain"] for row in rows] == list(policies.domains)
    assert list(rows[0]) == list(COLUMNS)
    for row in rows:
        policy = policies.domains[row["domain"]]
        assert parse_duration(row["retain_for"]) == policy.retain_for
        if policy.archive.enabled:
            assert parse_duration(row["archive_keep_for"]) == policy.archive.keep_for
        else:
            assert row["archive_keep_for"] == "not archived"
        assert row["purpose"] == policy.purpose
        assert row["lawful_basis"] == policy.lawful_basis.cited()
        assert row["data_categories"].split("; ") == policy.data_categories
        assert row["recipients"].split("; ") == policy.recipients
    quiz = rows[0]
    assert (quiz["lawful_basis"], quiz["special_category_condition"]) == (
        "Art. 6(1)(a) consent", "Art. 9(2)(a) explicit consent")
    assert all(row["special_category_condition"] == "" for row in rows[1:])
    # On the page, in the schedule's section, cell for cell as the CSVs
    shown = schedule_section(files)
    assert list(shown) == ["schedule", "processing"]
    for name, table in shown.items():
        assert table == list(csv.reader(io.StringIO(files[f"{name}.csv"].decode()))), name


def test_a_field_left_out_is_a_blank_cell(pg_database, tmp_path):
    data = yaml.safe_load(default_policy_path().read_text())
    data["domains"]["email_blacklist"].pop("lawful_basis")
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    files = render_report(build_report(pg_database, load_policies(path), MONTH))
    blacklist = {row["domain"]: row for row in read_csv(files["processing.csv"])}["email_blacklist"]
    assert (blacklist["lawful_basis"], blacklist["special_category_condition"]) == ("", "")
    assert blacklist["purpose"] and blacklist["archive_keep_for"] == "365d"


def test_a_screenshot_of_the_schedule_in_chromium_shows_keep_for_and_the_record(pg_database, tmp_path):
    from selenium.webdriver.common.by import By

    files = render_report(build_report(pg_database, load_policies(), MONTH))
    page = tmp_path / html_name(MONTH)
    page.write_bytes(files[html_name(MONTH)])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for picture in (SCREENSHOT, SCROLLED):
        picture.unlink(missing_ok=True)
    driver = chromium()
    try:
        driver.set_window_size(1600, 2400)  # the whole section in one picture
        driver.get(page.as_uri())
        section = driver.find_element(By.ID, "schedule")
        driver.execute_script("arguments[0].scrollIntoView()", section)
        text = section.text
        assert section.screenshot(str(SCREENSHOT))
        processing = driver.find_element(By.CSS_SELECTOR, "table[data-table=processing]")
        scroll = processing.find_element(By.XPATH, "..")
        driver.execute_script("arguments[0].scrollLeft = arguments[0].scrollWidth", scroll)
        last = processing.find_element(By.XPATH, ".//tbody/tr[last()]/td[last()]")
        assert last.is_displayed() and "payment provider" in last.text, last.text  # the recipients, in view
        assert processing.find_element(By.XPATH, "..").screenshot(str(SCROLLED))
    finally:
        driver.quit()
    for shown in ("Retention schedule", "archive_keep_for", "3650d", "Record of processing",
                  "Art. 9(2)(a) explicit consent", "Art. 6(1)(f) legitimate interests", "data_categories",
                  "recipients"):
        assert shown in text, shown
    for path in (SCREENSHOT, SCROLLED):
        picture = path.read_bytes()
        assert picture.startswith(b"\x89PNG\r\n\x1a\n")
        width, height = int.from_bytes(picture[16:20], "big"), int.from_bytes(picture[20:24], "big")
        assert width > 800 and height > 400, (path.name, width, height)
