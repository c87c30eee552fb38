"""Every benchmark case, in one run: a table of ratios with their targets, and JSON.

    python benchmarks/run_all.py [--size full|quick|smoke] [--json PATH]
                                 [--only quiz,dagster_runs,pdfs,erasure,large_pdfs,erasure_backlog,dagster_history]

Each case is a module of benchmarks/cases/ with `run(size) -> list[Result]` (benchmarks/harness.py);
it starts its own servers and measures the project against the database's (or the store's) own
limits on the same machine in the same run. full is the issue's sizes (≈40 minutes on 2 cores),
quick about a tenth, smoke a few seconds per case (for the test that the command works, no timing
meant). Progress goes to stdout as it happens, then the table; the JSON (default
benchmarks/results/benchmarks.json) holds every figure. Exit status 1 when any target is missed
(or a case could not run), 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (str(ROOT), str(BENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from harness import Result, table, write_json  # noqa: E402

# Each case works on stores of its own, made for the run, with keys made on the spot in a temporary
# RETENTION_HOME: the demo's fallbacks, which only RETENTION_ENV=demo allows.
os.environ["RETENTION_ENV"] = "demo"

# Case → what it covers, in the order they run.
CASES = {
    "quiz": "targets 1–7 on quiz_responses (PostgreSQL)",
    "dagster_runs": "target 8 (Dagster runs)",
    "pdfs": "target 9 (meal plan PDFs on S3)",
    "erasure": "target 10 (an erasure per request, 1× and 10× tables)",
    "large_pdfs": "target 11 (a run's memory with 200 MB PDFs against 1 MB ones)",
    "erasure_backlog": "target 12 (a backlog of requests for erasure through the daemon, the erasure sensor's tick)",
    "dagster_history": "target 13 (Dagster's history purged and kept small)",
}
SIZES = ("full", "quick", "smoke")
DEFAULT_JSON = BENCH / "results" / "benchmarks.json"


def failed(case: str, reason: str) -> Result:
    """A case that could not run: one failed result saying why."""
    return Result(case=case, measure=f"could not run: {reason.splitlines()[0][:200]}", value=math.nan,
                  compare="≥", target=math.nan, details={"error": reason})


def run_case(name: str, size: str) -> list[Result]:
    path = BENCH / "cases" / f"{name}.py"
    if not path.exists():
        return [failed(name, f"benchmarks/cases/{name}.py does not exist yet")]
    try:
        spec = importlib.util.spec_from_file_location(f"benchmark_case_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        results = list(module.run(size))
    except BaseException as exc:  # a case that crashes (or is interrupted) fails alone
        if isinstance(exc, KeyboardInterrupt):
            raise
        return [failed(name, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-4000:]}")]
    if not results:
        return [failed(name, "the case reported no result")]
    return results


def context(size: str, cases: list[str], seconds: dict[str, float]) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    try:
        cpus = len(__import__("os").sched_getaffinity(0))
    except AttributeError:
        cpus = __import__("os").cpu_count()
    return {"size": size, "cases": cases, "case_seconds": seconds, "commit": commit,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": cpus, "platform": platform.platform(), "python": platform.python_version()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="full",
                        help="full: the issue's sizes; quick: about a tenth; smoke: seconds (default full)")
    parser.add_argument("--only", default=",".join(CASES),
                        help=f"comma-separated cases to run (default all: {','.join(CASES)})")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write the results "
                        f"(default {DEFAULT_JSON.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        parser.error(f"unknown case(s) {', '.join(unknown) or '(none given)'}; the cases are {', '.join(CASES)}")

    results: list[Result] = []
    seconds: dict[str, float] = {}
    started = time.monotonic()
    for name in cases:
        print(f"== {name}: {CASES[name]}, size {args.size}", flush=True)
        case_started = time.monotonic()
        found = run_case(name, args.size)
        seconds[name] = round(time.monotonic() - case_started, 1)
        misses = sum(r.passed is False for r in found)
        print(f"== {name}: {len(found)} results, {misses} missed, in {seconds[name]:.0f}s", flush=True)
        results.extend(found)

    print()
    print(table(results))
    write_json(results, args.json, context(args.size, cases, seconds))
    missed = [r.case for r in results if r.passed is False]
    print(f"\n{len(results)} results in {time.monotonic() - started:.0f}s; "
          + (f"{len(missed)} missed: {', '.join(missed)}" if missed else "every target met")
          + f"; JSON: {args.json}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
