"""Issue 9, part 5: the leak scan. Unique, recognisable addresses (`leakcanary-<uuid4 hex>@example.invalid`)
are seeded in every domain's rows; then everything runs the way an operator runs it, through the
real `retention` command on a persistent Dagster instance (DAGSTER_HOME with SQLite storage):
every domain's job, a delete blocked by a foreign key (→ manual queue), a legal hold, a request for
erasure and its run (→ a legal_hold_conflict item), the queue listed and shown, and the monthly
report. Logs at DEBUG, so that every structured line is written.

Then every place the system writes is searched for the addresses and their lower-case local parts:
the whole DAGSTER_HOME folder byte by byte (event log and run storage, compute logs, schedules),
the instance's runs, tags and every event record (materialization and check metadata included),
the structured logs and output of every command, the audit log, the manual queue and every other
retention table, the archive store and the report's files. Target: 0 occurrences.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from retention_pipelines.stores import AppDatabase, blob_store_from_url
from retention_pipelines_tests.app_rows import _insert
from retention_pipelines_tests.conftest import new_database
from retention_pipelines_tests.queue_rows import create_notes_table, queue_rows, refer_to
from retention_pipelines_tests.reliability.figures import record
from retention_pipelines_tests.test_cli.conftest import RETENTION_SCRIPT, dagster_home
from retention_pipelines_tests.test_engine.helpers import dump_all_tables

PDF = b"%PDF-1.4 meal plan\n"


def canary() -> str:
    return f"leakcanary-{uuid.uuid4().hex}@example.invalid"


class Scene:
    """The database, the stores, the environment of every command and what each command printed."""

    def __init__(self, folder: Path, url: str):
        self.folder, self.url = folder, url
        self.database = AppDatabase(url)
        self.blobs_url = (folder / "blobs").as_uri()
        (folder / "archive").mkdir()
        self.dagster_home = dagster_home(folder / "dagster_home")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RETENTION_", "DAGSTER_"))}
        self.env.update({
            "RETENTION_DATABASE_URL": url, "RETENTION_ARCHIVE_URL": (folder / "archive").as_uri(),
            "RETENTION_BLOB_URL": self.blobs_url, "RETENTION_HOME": str(folder / "home"),
            "RETENTION_LOG_LEVEL": "DEBUG", "DAGSTER_HOME": str(self.dagster_home)})
        self.outputs: list[str] = []

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([str(RETENTION_SCRIPT), *args], capture_output=True, text=True, env=self.env,
                                cwd=self.folder, timeout=300)
        # What the command printed, not its arguments (an address given on the command line is the input).
        self.outputs.append(f"$ retention {args[0] if args else ''} …\n{result.stdout}\n{result.stderr}")
        return result


def seed(scene: Scene, runs: str, erased: str) -> dict[str, str]:
    """`runs` in every domain with rows past their deadline (one quiz answer held by a foreign key),
    `erased` in every domain with young rows (one meal plan under a legal hold). Their ids."""
    database, blobs = scene.database, blob_store_from_url(scene.blobs_url)
    now, at = database.now(), database.bind_time
    young, old = now - timedelta(hours=1), now - timedelta(days=100)

    def quiz(email, when):
        return {"session_id": uuid.uuid4(), "email": email, "answers": {"note": "keto"}, "created_at": at(when)}

    def token(email, expires):
        return {"email": email, "token_hash": uuid.uuid4().hex, "created_at": at(expires - timedelta(minutes=15)),
                "expires_at": at(expires)}

    def plan(email, when, name):
        blobs.put(f"plans/{name}.pdf", PDF)
        return {"payment_id": f"pay_{uuid.uuid4().hex[:12]}", "email": email, "pdf_blob_key": f"plans/{name}.pdf",
                "created_at": at(when)}

    def listed(email, when):
        return {"email": email, "reason": "chargeback", "created_at": at(when)}

    quiz_ids = _insert(database, "quiz_responses", [quiz(runs, now - timedelta(hours=30)),
                                                    quiz(runs.upper(), now - timedelta(hours=30)),
                                                    quiz(erased, young)])
    _insert(database, "magic_link_tokens", [token(runs, now - timedelta(hours=2)),
                                            token(erased, now + timedelta(minutes=10))])
    plan_ids = _insert(database, "meal_plans", [plan(runs, old, "runs-old"), plan(erased, young, "erased-young"),
                                                plan(erased, old - timedelta(days=1), "erased-old")])
    _insert(database, "email_blacklist", [listed(runs, old), listed(erased, now - timedelta(days=2))])
    create_notes_table(database)
    refer_to(database, quiz_ids[0])  # its delete is refused: a delete_blocked item in the manual queue
    return {"blocked_quiz": quiz_ids[0], "held_plan": plan_ids[1]}


def haystacks(scene: Scene, report_folder: Path, monkeypatch) -> tuple[dict[str, str], int]:
    """Every place searched, as text (bytes decoded leniently), by name."""
    found: dict[str, str] = {}
    for root, name in ((scene.dagster_home, "dagster_home"), (scene.folder / "archive", "archive store"),
                       (report_folder, "report")):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            found[f"{name}: {path.relative_to(root)}"] = path.read_bytes().decode("utf-8", "replace")
    monkeypatch.setenv("DAGSTER_HOME", str(scene.dagster_home))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        for run in runs:
            found[f"run {run.run_id} tags and config"] = json.dumps(
                {"tags": run.tags, "config": run.run_config}, default=str)
            found[f"run {run.run_id} event log"] = "\n".join(
                repr(entry) for entry in instance.all_logs(run.run_id))
    dump = dump_all_tables(scene.database)
    for table, rows in dump.items():
        if table.startswith(("retention_", "gdpr_")):  # the app's own tables hold addresses by design
            found[f"table {table}"] = repr(rows)
    found["commands' output and structured logs"] = "\n".join(scene.outputs)
    found["queue"] = repr(queue_rows(scene.database))
    return found, len(runs)


def occurrences(places: dict[str, str], addresses: list[str]) -> dict[str, int]:
    """Per place, how often any address or its local part occurs (case-insensitively)."""
    needles = sorted({n.lower() for a in addresses for n in (a, a.split("@")[0])}, key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, needles)))
    counts = {place: len(pattern.findall(text.lower())) for place, text in places.items()}
    return {place: count for place, count in counts.items() if count}


@pytest.fixture
def scene(postgres_server, tmp_path):
    scene = Scene(tmp_path, new_database(postgres_server))
    yield scene
    scene.database.dispose()


def test_no_address_anywhere_after_running_everything(scene, tmp_path, monkeypatch):
    runs, erased = canary(), canary()
    ids = seed(scene, runs, erased)
    hold = scene.cli("hold", "add", "--domain", "meal_plans", "--record-id", ids["held_plan"], "--reason", "case 12", "--by", "legal")
    assert hold.returncode == 0, hold.stderr

    everything = scene.cli("run")  # every enabled domain; the foreign key blocks one quiz answer
    assert "quiz_responses" in everything.stdout, everything.stderr
    requested = scene.cli("erasure", "request", "--email", erased)
    assert requested.returncode == 0, requested.stderr
    request_id = re.search(r"erasure request (\d+)", requested.stdout)[1]
    erasure = scene.cli("erasure", "run", request_id)
    assert erasure.returncode == 0, erasure.stderr
    queue = scene.cli("queue", "list")
    reasons = {row["reason"] for row in queue_rows(scene.database)}
    assert {"delete_blocked", "legal_hold_conflict"} <= reasons, (reasons, queue.stdout)
    for item in queue_rows(scene.database):
        scene.cli("queue", "show", str(item["id"]))
    scene.cli("erasure", "status")
    scene.cli("audit", "seal")
    scene.cli("audit", "show", "--record-id", ids["blocked_quiz"])
    month = f"{scene.database.now():%Y-%m}"
    report = scene.cli("report", "--month", month, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr

    places, run_count = haystacks(scene, tmp_path / "report", monkeypatch)
    # The scan must be able to find something: the addresses are in the app's rows it skips.
    assert occurrences({"app rows": repr(dump_all_tables(scene.database))}, [runs, erased])
    leaks = occurrences(places, [runs, erased])
    total = sum(leaks.values())
    record("leak scan: address occurrences", "0", f"{total} in {len(places)} places searched ({run_count} runs)",
           total == 0)
    assert run_count >= 5 and len(places) > 20
    # The places searched hold what they should: compute logs, the engine's lines in the event log
    # and JSON log lines from the commands, so that 0 means nothing leaked, not nothing written.
    assert any("/compute_logs/" in place for place in places)
    assert any("event log" in place and "retention_pipelines" in text for place, text in places.items())
    assert '"logger": "retention_pipelines' in places["commands' output and structured logs"]
    assert total == 0, leaks
