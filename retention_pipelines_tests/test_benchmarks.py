"""The benchmark command runs end to end and reports every quiz_responses target, and the Dagster history's.

At the smoke size the figures mean nothing (a few thousand rows): this checks that the one command
of the README works and writes each target with a value, its target and its comparison; whether
the targets are met is the full run's business (`make benchmark`), never a test's.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QUIZ_TARGETS = {  # case → (comparison, target)
    "1 delete + audit": ("≥", 0.5),
    "2 archive + delete + audit": ("≥", 0.5),
    "3 vs ORM loop": ("≥", 40.0),
    "4 batch p99": ("≤", 300.0),
    "4 batch max": ("≤", 1000.0),
    "5 concurrent writer throughput": ("≥", 0.70),
    "5 concurrent writer p99": ("≤", 3.0),
    "6 memory": ("≤", 1.2),
    "7 work-proportional": ("≤", 1.5),
}
REPORTED = {"2 without subjects", "scattered: delete + audit", "scattered: archive + delete + audit"}


def run_all_smoke(tmp_path, case: str, timeout: int) -> tuple[subprocess.CompletedProcess, dict]:
    """`run_all.py --size smoke --only case`: its output and its JSON."""
    output = tmp_path / "benchmarks.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--size", "smoke",
                             "--only", case, "--json", str(output)],
                            capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    # 0 or 1 (targets met or not); anything else is a crash.
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    return result, json.loads(output.read_text())


def test_run_all_smoke_reports_every_quiz_target(tmp_path):
    result, payload = run_all_smoke(tmp_path, "quiz", 300)
    assert "| case | measure | target | result |" in result.stdout

    assert payload["context"]["size"] == "smoke" and payload["context"]["cases"] == ["quiz"]
    by_case = {r["case"]: r for r in payload["results"]}
    assert set(by_case) == set(QUIZ_TARGETS) | REPORTED, sorted(by_case)
    for case, (compare, target) in QUIZ_TARGETS.items():
        r = by_case[case]
        assert math.isfinite(r["value"]), (case, r["details"])
        assert (r["compare"], r["target"]) == (compare, target), case
        assert r["reported_only"] is False and r["passed"] in (True, False), case
        assert "error" not in r["details"], (case, r["details"])
    for case in REPORTED:
        r = by_case[case]
        assert math.isfinite(r["value"]) and r["reported_only"] is True and r["passed"] is None, (case, r)
    assert payload["all_passed"] == all(r["passed"] is not False for r in payload["results"])


def test_run_all_smoke_reports_the_dagster_history_targets(tmp_path):
    _, payload = run_all_smoke(tmp_path, "dagster_history", 600)
    by_case = {r["case"]: r for r in payload["results"]}
    assert set(by_case) == {"13 history purge speed", "13 launches during the purge", "13 launches, p99",
                            "13 kept history"}, sorted(by_case)
    for r in by_case.values():
        assert math.isfinite(r["value"]) and "error" not in r["details"], r
    assert by_case["13 history purge speed"]["details"]["purge"]["runs_deleted"] > 0
