"""What every benchmark case reports, and the table and JSON they are printed as.

A case measures the project against a baseline measured in the same run, on the same machine and
server, so that the machine's speed cancels out: each result is a ratio (or, where the target is
absolute, a figure) with its target and whether it is met.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Durable, as production: every commit (each event Dagster stores is one) is flushed, where the
# tests' servers run without fsync.
SERVER_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on", "max_wal_size": "4GB"}


@contextlib.contextmanager
def engine_logs_discarded():
    """The engine's log lines are not printed between a case's results: without a handler Python
    writes each warning to stderr."""
    logger, discard = logging.getLogger("retention_pipelines"), logging.NullHandler()
    logger.addHandler(discard)
    try:
        yield
    finally:
        logger.removeHandler(discard)


@dataclass
class Result:
    """One target of one case: `value` compared with `target` by `compare` ("≥" or "≤")."""

    case: str  # e.g. "1 delete + audit"
    measure: str  # what value is, e.g. "rows/s ÷ bare DELETE's rows/s"
    value: float
    compare: str  # "≥" or "≤"
    target: float
    unit: str = "×"  # "×" for ratios, "ms", "s", "%"
    details: dict = field(default_factory=dict)  # the raw figures: rows, seconds, baselines …
    reported_only: bool = False  # a figure shown for information (the scattered layout), no target

    @property
    def passed(self) -> bool | None:
        if self.reported_only:
            return None
        if not math.isfinite(self.value):
            return False
        return self.value >= self.target if self.compare == "≥" else self.value <= self.target

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def _figure(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "n/a"
    if unit == "×":
        return f"{value:.2f}×"
    if unit == "%":
        return f"{value:.0f}%"
    return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def table(results: list[Result]) -> str:
    """The results as a Markdown table: case, measure, target, result, pass/fail."""
    lines = ["| case | measure | target | result | |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        target = "(reported)" if r.reported_only else f"{r.compare} {_figure(r.target, r.unit)}"
        verdict = {True: "pass", False: "FAIL", None: ""}[r.passed]
        lines.append(f"| {r.case} | {r.measure} | {target} | {_figure(r.value, r.unit)} | {verdict} |")
    return "\n".join(lines)


def write_json(results: list[Result], path: Path, context: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"context": context, "results": [r.as_dict() for r in results],
               "all_passed": all(r.passed is not False for r in results)}
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")


def run_alone(description: str, run, sizes) -> None:
    """A case run by itself (`python benchmarks/cases/<case>.py [--size …]`): its table and details."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=sorted(sizes), default="full")
    print_results(run(parser.parse_args().size))


def print_results(results: list[Result]) -> None:
    print(table(results))
    for result in results:
        print(result.details)
