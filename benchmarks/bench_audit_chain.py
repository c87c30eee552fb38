"""Benchmark: writing and verifying the audit log's hash chains (engine/audit/entries.py, verify.py).

    python benchmarks/bench_audit_chain.py [--rows 1000000] [--domains 4] [--json FILE]

On a fresh PostgreSQL started here, --rows audit entries (spread over --domains domains, a uuid
record id each) are written through the log's one writer, 10,000 to a batch, each batch linked
into its domain's chain as it is written. Then:

  verify       every chain walked and every batch's link recomputed, one anchor checked
  write 10k    10,000 new entries (a run's batch) written and linked onto the long chains

Target: verify ≤ 10 s for 1,000,000 rows. Prints a table, and writes the figures as
JSON (--json, default benchmarks/results/bench_audit_chain.json).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from retention_pipelines.engine.audit.anchor import anchor  # noqa: E402
from retention_pipelines.engine.audit.entries import Action, AuditStamp, write_entries  # noqa: E402
from retention_pipelines.engine.audit.verify import verify  # noqa: E402
from retention_pipelines.stores import AppDatabase  # noqa: E402
from retention_pipelines.stores.archive import LocalArchiveStore  # noqa: E402
from retention_pipelines_tests.support.servers import PostgresServer  # noqa: E402

SERVER_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on", "shared_buffers": "512MB",
                   "max_wal_size": "8GB", "checkpoint_timeout": "30min"}
TARGET_VERIFY_SECONDS = 10.0
DEADLINE = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 10_000


def fill(database: AppDatabase, start: int, stop: int, domains: int) -> None:
    """Entries start…stop, a batch of BATCH per transaction, the domains taking turns by batch."""
    for first in range(start, stop + 1, BATCH):
        last = min(first + BATCH - 1, stop)
        stamp = AuditStamp(f"domain_{(first // BATCH) % domains}", Action.DELETED, f"run-{first // BATCH}",
                           "bench+000000000000", archive_uri=f"s3://archive/domain/2026/01/01/{first}.jsonl.gz")
        with database.begin() as connection:
            write_entries(connection, [stamp.row(str(uuid.UUID(int=i)), DEADLINE) for i in range(first, last + 1)])


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--domains", type=int, default=4)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_audit_chain.json")
    args = parser.parse_args()
    server = PostgresServer(SERVER_SETTINGS).start()
    try:
        database = AppDatabase(server.create_app_database("bench_chain"))
        _, fill_seconds = timed(fill, database, 1, args.rows, args.domains)
        print(f"{args.rows:,} audit entries written and linked in {fill_seconds:.0f} s")
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE retention_audit_batches")
            connection.exec_driver_sql("VACUUM ANALYZE retention_audit_records")
        with tempfile.TemporaryDirectory() as folder:
            store = LocalArchiveStore(Path(folder))
            anchor(database, store)
            verified, verify_seconds = timed(verify, database, store)
        assert verified.intact and verified.rows_checked == args.rows and verified.outside_chain == 0, verified
        _, more_seconds = timed(fill, database, args.rows + 1, args.rows + BATCH, args.domains)
        with database.engine.connect() as connection:
            sizes = dict(connection.exec_driver_sql(
                "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                "WHERE relname IN ('retention_audit_batches', 'retention_audit_records')").all())
        database.dispose()
    finally:
        server.stop()
    figures = {
        "rows": args.rows, "domains": args.domains,
        "write_seconds": round(fill_seconds, 2), "write_rows_per_second": round(args.rows / fill_seconds),
        "verify_seconds": round(verify_seconds, 2), "verify_rows_per_second": round(args.rows / verify_seconds),
        "verify_target_seconds": TARGET_VERIFY_SECONDS * args.rows / 1_000_000,
        "verify_passes": verify_seconds <= TARGET_VERIFY_SECONDS * args.rows / 1_000_000,
        "write_10k_seconds": round(more_seconds, 3),
        "audit_batches_mb": round(sizes["retention_audit_batches"] / 2**20, 1),
        "audit_records_mb": round(sizes["retention_audit_records"] / 2**20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    print(f"verify: {'PASS' if figures['verify_passes'] else 'FAIL'} ({figures['verify_seconds']} s for "
          f"{args.rows:,} rows; target ≤ {figures['verify_target_seconds']:g} s)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
