"""Case 13: Dagster's own history purged fast, beside the runs being launched, and kept small.

    python benchmarks/run_all.py --only dagster_history [--size full|quick|smoke]

benchmarks/bench_dagster_history.py at a fraction of today's cadence (full a tenth, quick a
fiftieth, smoke a hundredth of 95 days; every kind of run scaled alike) over a simulated year on PostgreSQL
(fsync on), copies of real runs' event logs:

  purge speed      runs deleted a second by dagster_history_purge_job ÷ by `instance.delete_run`
                   one run at a time, on the same instance in the same run (the oldest runs first);
                   ≥ 10× (a year's backlog, about 100,000 runs, in minutes instead of an hour).
  launches         the longest wait of runs launched (a run and an event every 100 ms) during the
                   purge; ≤ 1 s. Its p99 ÷ with nothing else running is reported beside it.
  kept history     the live rows (after VACUUM FULL) of the instance database of a full year at
                   today's cadence after the purge at the shipped ages (extrapolated from the
                   scaled year: its bytes ÷ the scale); ≤ 1.5 GB.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_dagster_history import TARGET_BYTES, measure, parser  # noqa: E402
from benchmarks.harness import Result, run_alone  # noqa: E402

# days, scale, runs deleted with delete_run; smoke past the 90 days, so that the purge deletes some
SIMULATED = {"full": (365, 0.1, 500), "quick": (365, 0.02, 200), "smoke": (95, 0.01, 5)}
SPEEDUP_TARGET, WAIT_TARGET_MS = 10.0, 1000.0
MB = 1024**2


def run(size: str) -> list[Result]:
    days, scale, baseline = SIMULATED[size]
    args = parser().parse_args(["--days", str(days), "--scale", str(scale), "--baseline-runs", str(baseline)])
    report = measure(args)
    waits = report["launch_wait_ms"]
    purged = {key: report[key] for key in ("runs_per_second", "baseline_delete_run", "year_backlog_runs",
                                           "year_backlog_seconds", "year_backlog_seconds_delete_run", "purge")}
    sizes = {key: value for key, value in report.items() if key.endswith("bytes")}
    return [
        Result("13 history purge speed", "runs/s of the purge job ÷ instance.delete_run one run at a time",
               report["speedup"], "≥", SPEEDUP_TARGET, details=purged),
        Result("13 launches during the purge", "longest wait of a run launched meanwhile",
               waits["during_purge"]["max"], "≤", WAIT_TARGET_MS, unit="ms", details=waits),
        Result("13 launches, p99", "p99 wait of runs launched during the purge ÷ alone",
               waits["during_purge"]["p99"] / waits["alone"]["p99"], "≤", math.nan, details=waits,
               reported_only=True),
        Result("13 kept history", "instance database after the purge, a full year at today's cadence "
               "(live rows)", report["year_size_live_bytes"] / MB, "≤",
               TARGET_BYTES / MB, unit="MB", details={**sizes, "simulated": report["simulated"]}),
    ]


if __name__ == "__main__":
    run_alone(__doc__.splitlines()[0], run, SIMULATED)
