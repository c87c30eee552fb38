"""What the reliability suite measured, case by case, for its summary table.

Each test records its figures with `record(...)` and asserts its target itself, so that a missed
target fails the test; the table (printed at the end of the pytest session, and written to
test-artifacts/reliability.json) is what an auditor reads: case, target, result.

This module is also the pytest plugin that prints the table (the root conftest names it in
`pytest_plugins`). Under pytest-xdist the tests, and so `record`, run in the workers: each worker
hands its figures to the controller when it finishes, and the controller alone prints the table
and writes the file, the figures in the order a run without workers records them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

# Under the session's root folder (the repository's, for the suite).
ARTIFACT = Path("test-artifacts") / "reliability.json"
# The key of a worker's figures in what it hands to the controller (xdist's workeroutput).
WORKER_OUTPUT = "reliability_figures"
# Each test's place in the session's collection.
PLACE = pytest.StashKey[int]()


@dataclass(frozen=True)
class Figure:
    case: str  # e.g. "kill matrix: invariant violations"
    target: str  # e.g. "0"
    result: str  # e.g. "0 of 50 kills"
    met: bool


# Each figure with the place of the test that recorded it: a run without workers runs the tests in
# that order, so the controller puts the figures of several workers back in the same order.
FIGURES: list[tuple[int, Figure]] = []
_recording = 0  # the place of the test running now (the plugin sets it)


def record(case: str, target: str, result: str, met: bool) -> None:
    FIGURES.append((_recording, Figure(case, target, result, bool(met))))


def kills() -> int:
    """How many runs the kill matrix kills: RELIABILITY_KILLS (the full suite, `make reliability`:
    50), else 12 (CI, inside `make test`)."""
    return int(os.environ.get("RELIABILITY_KILLS", "12"))


def full() -> bool:
    """The full suite (`make reliability`, RELIABILITY_FULL=1): every case at its issue's size, the
    slow paths too; CI runs a sample of those inside `make test`."""
    return os.environ.get("RELIABILITY_FULL") == "1"


def table(figures: list[Figure]) -> str:
    lines = ["| case | target | result | |", "| --- | --- | --- | --- |"]
    lines += [f"| {f.case} | {f.target} | {f.result} | {'met' if f.met else 'MISSED'} |" for f in figures]
    return "\n".join(lines)


def write_artifact(figures: list[Figure], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"figures": [asdict(f) for f in figures],
                                "all_met": all(f.met for f in figures)}, indent=1) + "\n")


def in_order() -> list[Figure]:
    """The figures recorded in this process or handed over by the workers, by the place of the test
    that recorded them (a stable sort: one test's figures stay in the order it recorded them)."""
    return [figure for _, figure in sorted(FIGURES, key=lambda entry: entry[0])]


# The plugin's hooks.

def pytest_collection_finish(session):
    # Every worker collects the whole session (xdist checks that the collections are the same), so a
    # test has the same place wherever it runs.
    for place, item in enumerate(session.items):
        item.stash[PLACE] = place


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item):
    global _recording
    _recording = item.stash.get(PLACE, 0)


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller prints the table
        workeroutput[WORKER_OUTPUT] = [(place, asdict(figure)) for place, figure in FIGURES]


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's, called on the controller as each worker ends
def pytest_testnodedown(node, error):
    # A worker that crashed hands over nothing (xdist reports the test it crashed in as failed).
    for place, fields in getattr(node, "workeroutput", {}).get(WORKER_OUTPUT, []):
        FIGURES.append((place, Figure(**fields)))


def pytest_terminal_summary(terminalreporter, config):
    """The reliability table: the reliability suite's figures and the property suite's, whichever
    of them ran; printed and written once, by the controller under xdist."""
    if hasattr(config, "workeroutput") or not FIGURES:
        return
    figures = in_order()
    write_artifact(figures, config.rootpath / ARTIFACT)
    terminalreporter.section("reliability, security and properties")
    terminalreporter.write_line(table(figures))
