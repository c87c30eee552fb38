"""The reliability table (support/figures.py) when pytest-xdist's workers run the tests, two in
`make test`: each worker records the figures of its own tests, and the controller alone prints them
all in one table and writes them to test-artifacts/reliability.json, in the order of the tests, as a
run without workers does. Two tiny test files, each recording a figure, run by pytest with the
plugin in a folder of their own: on two workers and without."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from retention_pipelines_tests.support.figures import ARTIFACT
from retention_pipelines_tests.support.repository import REPOSITORY

# The first test takes a second, so that on two workers the other one ends first and hands over its
# figure first: the table must still list the first test's figure first. Each figure's result is
# the worker that recorded it; the second one misses its target.
TESTS = {
    "test_first.py": """
import os
import time

from retention_pipelines_tests.support.figures import record


def test_first():
    time.sleep(1)
    record("first case", "0", os.environ.get("PYTEST_XDIST_WORKER", "no worker"), met=True)
""",
    "test_second.py": """
import os

from retention_pipelines_tests.support.figures import record


def test_second():
    record("second case", "1", os.environ.get("PYTEST_XDIST_WORKER", "no worker"), met=False)
""",
}
SECTION = "reliability, security and properties"


def run_pytest(folder, *args: str) -> subprocess.CompletedProcess:
    """pytest on `folder` alone (its own root: none of this suite's conftest), with the table's plugin;
    none of the calling pytest's variables (a worker's PYTEST_XDIST_WORKER above all)."""
    for name, text in TESTS.items():
        (folder / name).write_text(text)
    (folder / "pytest.ini").write_text("[pytest]\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "retention_pipelines_tests.support.figures",
                           "-p", "no:cacheprovider", "--basetemp", str(folder / "basetemp"), *args],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=180)


def table_rows(output: str) -> list[list[str]]:
    """The rows of the table printed after its section's title, each as its four cells."""
    lines = output.split(SECTION, 1)[1].splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines
            if line.startswith("| ") and not line.startswith(("| case ", "| ---"))]


@pytest.mark.parametrize("workers", [2, 0], ids=["two workers", "no workers"])
def test_the_table_holds_the_figures_of_every_worker_in_the_order_of_the_tests(tmp_path, workers):
    result = run_pytest(tmp_path, *(["-n", str(workers)] if workers else []))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "2 passed" in output, output[-3000:]
    assert output.count(SECTION) == 1, output[-3000:]

    rows = table_rows(output)
    assert [(case, target, met) for case, target, _, met in rows] == [
        ("first case", "0", "met"), ("second case", "1", "MISSED")], output[-3000:]
    recorded_by = [worker for _, _, worker, _ in rows]
    # On two workers each test ran on its own (xdist hands two tests to two workers one each).
    assert sorted(recorded_by) == (["gw0", "gw1"] if workers else ["no worker", "no worker"]), rows

    written = json.loads((tmp_path / ARTIFACT).read_text())
    assert written == {"figures": [
        {"case": "first case", "target": "0", "result": recorded_by[0], "met": True},
        {"case": "second case", "target": "1", "result": recorded_by[1], "met": False}], "all_met": False}
