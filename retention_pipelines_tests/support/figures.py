"""What the reliability suite measured, case by case, for its summary table.

Each test records its figures with `record(...)` and asserts its target itself, so that a missed
target fails the test; the table (printed at the end of the pytest session, and written to
test-artifacts/reliability.json) is what an auditor reads: case, target, result.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability.json"


@dataclass(frozen=True)
class Figure:
    case: str  # e.g. "kill matrix: invariant violations"
    target: str  # e.g. "0"
    result: str  # e.g. "0 of 50 kills"
    met: bool


FIGURES: list[Figure] = []


def record(case: str, target: str, result: str, met: bool) -> None:
    FIGURES.append(Figure(case, target, result, bool(met)))


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


def write_artifact(figures: list[Figure]) -> None:
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps({"figures": [asdict(f) for f in figures],
                                    "all_met": all(f.met for f in figures)}, indent=1) + "\n")
